//! Real knockd on `lo` with the real `knock` client and curl: the legacy
//! client line opens the door, knockd marks the line used, a hundred
//! cycles leave knockd alive, and a stopped knockd turns answers into 503
//! until it is back. Runs only with KNOCK_OTP_E2E=1, as root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// One test's world: a directory, a knockd on lo, knock-otp driving it.
/// Each test gets its own port range so parallel tests on lo never knock
/// on each other's doors.
struct Lo {
    dir: tempfile::TempDir,
    key_file: PathBuf,
    hmac_key_file: PathBuf,
    knockd: Knockd,
    otp: KnockOtp,
}

impl Lo {
    fn marker(&self) -> PathBuf {
        self.dir.path().join("opened")
    }

    fn door_file(&self) -> PathBuf {
        self.dir.path().join("door-0.seq")
    }
}

fn start(port_min: u16) -> Lo {
    require_root();
    require("knockd", "knockd");
    require("knock", "knockd");
    require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_file = write_key(d, "laptop", "correct horse battery staple");
    let hmac_key_file = write_key(d, "ci", "another key");
    let door_file = d.join("door-0.seq");
    let marker = d.join("opened");
    let start_command = format!("/bin/sh -c 'echo %IP% >> {}'", marker.display());
    let conf = d.join("knockd.conf");
    KnockdDoor {
        conf: &conf,
        door_file: &door_file,
        start_command: &start_command,
        stop_command: None,
        seq_timeout: 10,
    }
    .write();
    let knockd = Knockd::start(&conf, "lo", &d.join("knockd.pid"), &[]);
    let config = d.join("knock-otp.toml");
    fs::write(
        &config,
        otp_config(d, &key_file, &hmac_key_file, &door_file, port_min),
    )
    .unwrap();
    let otp = KnockOtp::start(&config, &[]);
    Lo {
        dir,
        key_file,
        hmac_key_file,
        knockd,
        otp,
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

/// The legacy client line, run by bash as ssh's ProxyCommand would, minus
/// the final `nc`: the code made with md5sum, the sequence fetched with
/// curl and passed straight to knock.
fn legacy_knock(lo: &Lo) -> std::process::Output {
    let script = format!(
        r#"KEY=$(cat {key}); T=$(date +%s); C=$(printf '%s' "127.0.0.1$KEY$T" | md5sum | cut -d' ' -f1)
knock 127.0.0.1 -d 100 $(curl -sS "http://{addr}/generate.php?time=$T&code=$C")"#,
        key = lo.key_file.display(),
        addr = lo.otp.addr
    );
    Command::new("bash").arg("-c").arg(script).output().unwrap()
}

/// One hmac cycle with a fresh nonce: fetch, knock, wait for knock-otp to
/// see the use.
fn hmac_cycle(lo: &Lo, n: usize) {
    let nonce = format!("cycle-{n}");
    let code = code(
        &lo.hmac_key_file,
        "127.0.0.1",
        unix_now(),
        "hmac-sha256",
        Some(&nonce),
    );
    let (status, body) = curl(
        &lo.otp
            .url(&format!("time={}&code={code}&nonce={nonce}", unix_now())),
        &[],
    );
    assert_eq!(status, 200, "cycle {n}: {body}");
    let mut knock = Command::new("knock");
    knock
        .args(["127.0.0.1", "-d", "10"])
        .args(body.split_whitespace());
    assert!(knock.status().unwrap().success());
    lo.otp.proc.out.wait_for_nth("event=used", n, WAIT);
}

#[test]
fn the_legacy_client_line_opens_the_door_and_knockd_marks_the_line_used() {
    if !e2e() {
        return;
    }
    let lo = start(30000);
    let out = legacy_knock(&lo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lo.otp.proc.out.wait_for_nth("event=used", 1, WAIT);
    wait_for_file(&lo.marker(), WAIT);
    assert_eq!(fs::read_to_string(lo.marker()).unwrap(), "127.0.0.1\n");
    let door = fs::read_to_string(lo.door_file()).unwrap();
    let lines: Vec<&str> = door.lines().collect();
    assert!(
        lines[0].starts_with('#'),
        "the used line is marked: {door:?}"
    );
    assert!(
        lines[1].starts_with(' '),
        "the decoy is still valid: {door:?}"
    );
}

#[test]
fn a_hundred_issue_and_knock_cycles_leave_knockd_alive_and_the_door_working() {
    if !e2e() {
        return;
    }
    let mut lo = start(32000);
    for n in 1..=100 {
        hmac_cycle(&lo, n);
    }
    assert!(lo.knockd.proc.alive(), "knockd died during the cycles");
    assert_eq!(lo.otp.proc.out.count("event=issue"), 100);
    // And the legacy line still opens the door afterwards.
    let out = legacy_knock(&lo);
    assert!(out.status.success());
    wait_for_file(&lo.marker(), WAIT);
    assert!(lo.knockd.proc.alive());
}

#[test]
fn a_stopped_knockd_turns_answers_into_503_and_a_restarted_one_works_again() {
    if !e2e() {
        return;
    }
    let mut lo = start(34000);
    lo.knockd.proc.stop(nix::sys::signal::Signal::SIGTERM);
    let code1 = code(
        &lo.hmac_key_file,
        "127.0.0.1",
        unix_now(),
        "hmac-sha256",
        Some("down"),
    );
    let (status, body) = curl(
        &lo.otp
            .url(&format!("time={}&code={code1}&nonce=down", unix_now())),
        &[],
    );
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(':'), "no sequence in a 503: {body}");
    lo.otp.proc.out.wait_for_nth("event=door-down", 1, WAIT);

    let d = lo.dir.path().to_path_buf();
    lo.knockd = Knockd::start(&d.join("knockd.conf"), "lo", &d.join("knockd.pid"), &[]);
    hmac_cycle(&lo, 1);
    wait_for_file(&lo.marker(), WAIT);
}

#[test]
fn codes_match_php_md5_and_openssl_hmac() {
    if !e2e() {
        return;
    }
    require("php", "php-cli");
    require("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("127.0.0.1", "s3cret", 1_700_000_000u64),
        ("2001:db8::1", "k€y with spaces", 1),
        ("10.1.2.3", "x", 4_102_444_800),
    ];
    for (ip, key, time) in cases {
        let key_file = write_key(dir.path(), "k", key);
        let php = Command::new("php")
            .args([
                "-r",
                "echo md5($argv[1] . $argv[2] . $argv[3]);",
                ip,
                key,
                &time.to_string(),
            ])
            .output()
            .unwrap();
        assert_eq!(
            code(&key_file, ip, time, "legacy-md5", None),
            String::from_utf8(php.stdout).unwrap(),
            "{ip} {key}"
        );
        for nonce in [None, Some("n-1")] {
            let mut msg = format!("{ip}|{time}");
            if let Some(n) = nonce {
                msg.push_str(&format!("|{n}"));
            }
            let openssl = Command::new("sh")
                .args([
                    "-c",
                    "printf '%s' \"$1\" | openssl dgst -sha256 -hmac \"$2\" | sed 's/^.*= //'",
                    "sh",
                    &msg,
                    key,
                ])
                .output()
                .unwrap();
            let expected = String::from_utf8(openssl.stdout).unwrap().trim().to_owned();
            assert_eq!(
                code(&key_file, ip, time, "hmac-sha256", nonce),
                expected,
                "{msg}"
            );
        }
    }
}
