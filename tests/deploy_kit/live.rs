//! The real knock-otp behind the real nginx over TLS, reached with `curl -k`
//! as the legacy client does: the address echo, the legacy one-liner, spoofed
//! address headers and a wrong code, each checked against knock-otp's log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{KnockOtp, e2e, require, unix_now, write_key};
use crate::nginx::Nginx;
use crate::{md5_hex, output, temp_dir, text, write};

/// The legacy client's key in these tests.
const KEY: &str = "legacy-s3cret";

/// How long to wait for a line knock-otp logs for a request already answered.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// A knock-otp config in `dir`: any free port, one legacy-md5 client
/// "laptop" with `KEY`, one door file, no knockd, and `limits` (TOML lines)
/// as its `[limits]`.
pub fn write_config(dir: &Path, limits: &str) -> PathBuf {
    let key_file = write_key(dir, "laptop", KEY);
    let config = dir.join("config.toml");
    write(
        &config,
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[clients]]\nname = \"laptop\"\nkey_file = \"{key}\"\nscheme = \"legacy-md5\"\n\n\
             [knockd]\nreload = \"none\"\n\n\
             [[knockd.doors]]\nsequence_file = \"{door}\"\n\n\
             [limits]\n{limits}\n",
            key = key_file.display(),
            door = dir.join("door-0.seq").display(),
        ),
    );
    config
}

/// knock-otp with one legacy-md5 client and one door (`reload = "none"`),
/// and nginx in front of it with the kit's snippets.
pub struct Stack {
    pub otp: KnockOtp,
    pub nginx: Nginx,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub fn start() -> Stack {
        let dir = temp_dir();
        let config = write_config(dir.path(), "issues_per_minute = 0");
        let otp = KnockOtp::start(&config, &[]);
        let nginx = Nginx::start(&otp.addr);
        Stack {
            otp,
            nginx,
            _dir: dir,
        }
    }

    /// The knock path with a legacy code computed for `ip` at `time`.
    pub fn legacy_path(ip: &str, time: u64) -> String {
        let code = md5_hex(&format!("{ip}{KEY}{time}"));
        format!("/generate.php?time={time}&code={code}")
    }

    /// Waits until knock-otp has logged `n` lines containing `needle`.
    pub fn wait_for_log(&self, needle: &str, n: usize) -> String {
        self.otp.proc.out.wait_for_nth(needle, n, LOG_WAIT)
    }
}

/// True when `body` is what the legacy script printed: five knocks, each
/// ` PORT:PROTO` with a port in 15000–25000 and `tcp` or `udp`.
fn is_legacy_sequence(body: &str) -> bool {
    let knocks: Vec<&str> = body.split(' ').collect();
    knocks.len() == 6
        && knocks[0].is_empty()
        && knocks[1..].iter().all(|k| {
            k.split_once(':').is_some_and(|(port, proto)| {
                port.parse::<u16>()
                    .is_ok_and(|p| (15000..=25000).contains(&p))
                    && ["tcp", "udp"].contains(&proto)
            })
        })
}

#[test]
fn the_address_echo_through_nginx_answers_the_client_address() {
    if !e2e() {
        return;
    }
    let stack = Stack::start();
    let reply = stack.nginx.get("/knock-otp/ip", &[]);
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(reply.body, "127.0.0.1\n");
}

/// The legacy client's line, run by bash as ssh's ProxyCommand would, up to
/// the curl whose output `knock` gets. One addition: curl writes the status
/// to stderr, so stdout stays exactly what `knock` would be given. `KEY` and
/// `PORT` come from the environment.
const LEGACY_LINE: &str = concat!(
    r#"T=$(date +%s); C=$(printf '%s' "127.0.0.1$KEY$T" | md5sum | cut -d' ' -f1); "#,
    r#"curl -ksS "https://127.0.0.1:$PORT/generate.php?time=$T&code=$C" "#,
    r#"-w '%{stderr}%{http_code}'"#,
);

#[test]
fn the_legacy_client_line_gets_five_knocks_through_nginx_over_tls() {
    if !e2e() {
        return;
    }
    require("bash", "bash");
    require("md5sum", "coreutils");
    require("curl", "curl");
    let stack = Stack::start();
    let out = output(
        Command::new("bash")
            .args(["-c", LEGACY_LINE])
            .env("KEY", KEY)
            .env("PORT", stack.nginx.port.to_string()),
    );
    let (body, status) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(status, "200", "body: {body:?}");
    assert!(is_legacy_sequence(&body), "not five knocks: {body:?}");
    stack.wait_for_log("event=issue client=laptop addr=127.0.0.1 ", 1);
}

#[test]
fn spoofed_address_headers_do_not_change_the_client_address() {
    if !e2e() {
        return;
    }
    let stack = Stack::start();
    let spoof = ["X-Real-IP: 198.51.100.1", "X-Forwarded-For: 198.51.100.1"];
    let now = unix_now();

    // A code for the spoofed address is refused, and logged for the real one.
    let reply = stack
        .nginx
        .get(&Stack::legacy_path("198.51.100.1", now), &spoof);
    assert_eq!(reply.status, 418, "{}", reply.body);
    stack.wait_for_log("event=reject addr=127.0.0.1 reason=bad-code", 1);

    // A code for the real address works whatever the client claims.
    let reply = stack
        .nginx
        .get(&Stack::legacy_path("127.0.0.1", now), &spoof);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(is_legacy_sequence(&reply.body), "{:?}", reply.body);
    stack.wait_for_log("event=issue client=laptop addr=127.0.0.1 ", 1);

    let logged = stack.otp.proc.out.snapshot();
    assert!(
        !logged.iter().any(|l| l.contains("198.51.100.1")),
        "the spoofed address reached knock-otp:\n{}",
        logged.join("\n")
    );
}

#[test]
fn a_wrong_code_through_nginx_gets_knock_otp_teapot() {
    if !e2e() {
        return;
    }
    let stack = Stack::start();
    let time = unix_now();
    let code = md5_hex(&format!("127.0.0.1not-the-key{time}"));
    let reply = stack
        .nginx
        .get(&format!("/generate.php?time={time}&code={code}"), &[]);
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, knock_otp::teapot::BODY);
    assert!(
        reply.head.contains("cache-control: no-store"),
        "{}",
        reply.head
    );
    stack.wait_for_log("event=reject addr=127.0.0.1 reason=bad-code", 1);
}
