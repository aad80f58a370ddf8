//! Log set-up: one line per event, `key=value` after the level, so that
//! operators can grep and fail2ban can match (`fail2ban/filter.d`).
//! `RUST_LOG` chooses the level; the default is `info`.

use std::io::Write;

/// Installs the logger once; later calls (tests, demo) are harmless.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info,actix_server=warn,actix_web=warn");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
        })
        .try_init();
}
