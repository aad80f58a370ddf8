//! One test's world on `lo`: a directory, a real knockd with one
//! one-time door whose start command records the opening, and knock-otp
//! driving it by SIGHUP. Each test passes its own port range, so tests
//! running in parallel on `lo` never knock on each other's doors.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Lo {
    pub dir: tempfile::TempDir,
    /// Where the door file lives (the test directory unless given).
    pub door_dir: PathBuf,
    pub key_file: PathBuf,
    pub hmac_key_file: PathBuf,
    pub knockd: Knockd,
    pub otp: KnockOtp,
}

/// Options beyond the defaults.
#[derive(Default)]
pub struct LoOptions<'a> {
    pub door_dir: Option<&'a Path>,
    /// TOML appended to knock-otp's config: new tables only.
    pub extra: &'a str,
}

impl Lo {
    pub fn start(port_min: u16) -> Lo {
        Lo::start_with(port_min, LoOptions::default())
    }

    pub fn start_with(port_min: u16, options: LoOptions) -> Lo {
        require_knockd_on_lo();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let door_dir = options.door_dir.unwrap_or(d).to_path_buf();
        let key_file = write_key(d, "laptop", "correct horse battery staple");
        let hmac_key_file = write_key(d, "ci", "another key");
        let door_file = door_dir.join("door-0.seq");
        let start_command = format!("/bin/sh -c 'echo %IP% >> {}'", d.join("opened").display());
        let conf = d.join("knockd.conf");
        let door = KnockdDoor {
            conf: &conf,
            door_file: &door_file,
            start_command: &start_command,
            stop_command: None,
            seq_timeout: 10,
        };
        door.write();
        let knockd = Knockd::start(&conf, "lo", &d.join("knockd.pid"), &[]);
        let config = d.join("knock-otp.toml");
        let text = otp_config(d, &key_file, &hmac_key_file, &door_file, port_min) + options.extra;
        fs::write(&config, text).unwrap();
        let otp = KnockOtp::start(&config, &[]);
        Lo {
            dir,
            door_dir,
            key_file,
            hmac_key_file,
            knockd,
            otp,
        }
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("opened")
    }

    pub fn door_file(&self) -> PathBuf {
        self.door_dir.join("door-0.seq")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("knock-otp.toml")
    }

    /// Starts the door's knockd again after a test stopped it.
    pub fn restart_knockd(&mut self) {
        let d = self.dir.path();
        self.knockd = Knockd::start(&d.join("knockd.conf"), "lo", &d.join("knockd.pid"), &[]);
    }

    /// Asks for a sequence as the hmac client with `nonce`; (status, body).
    pub fn fetch(&self, nonce: &str) -> (u16, String) {
        curl(&self.otp.url(&hmac_query(&self.hmac_key_file, nonce)), &[])
    }

    /// One full cycle: fetch, knock, and wait for knock-otp's `n`th use.
    pub fn cycle(&self, n: usize) -> String {
        let (status, body) = self.fetch(&format!("cycle-{n}"));
        assert_eq!(status, 200, "cycle {n}: {body}");
        knock_lo(&body);
        self.otp.proc.out.wait_for_nth("event=used", n, WAIT);
        body
    }
}

fn otp_config(d: &Path, key: &Path, hmac_key: &Path, door: &Path, port_min: u16) -> String {
    format!(
        r#"[http]
listen = "127.0.0.1:0"
[[clients]]
name = "laptop"
key_file = "{key}"
scheme = "legacy-md5"
[[clients]]
name = "ci"
key_file = "{hmac}"
scheme = "hmac-sha256"
[sequence]
port_min = {port_min}
port_max = {port_max}
[limits]
issues_per_minute = 0
[knockd]
reload = "signal"
confirm_timeout_ms = 5000
[[knockd.doors]]
sequence_file = "{door}"
pidfile = "{pid}"
"#,
        key = key.display(),
        hmac = hmac_key.display(),
        door = door.display(),
        pid = d.join("knockd.pid").display(),
        port_max = port_min + 999,
    )
}
