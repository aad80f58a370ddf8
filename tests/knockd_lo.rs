//! Real knockd on `lo` with the real `knock` client and curl: the legacy
//! client line opens the door, knockd marks the line used, a hundred
//! cycles leave knockd alive, and a stopped knockd turns answers into 503
//! until it is back. Runs only with KNOCK_OTP_E2E=1, as root.

mod common;

use std::fs;
use std::process::Command;

use common::lo::{Lo, WAIT};
use common::*;

/// The legacy client line, run by bash as ssh's ProxyCommand would, minus
/// the final `nc`: the code made with md5sum, the sequence fetched with
/// curl and passed straight to knock.
fn legacy_knock(lo: &Lo) -> std::process::Output {
    let script = format!(
        r#"KEY=$(cat {key}); T=$(date +%s)
C=$(printf '%s' "127.0.0.1$KEY$T" | md5sum | cut -d' ' -f1)
knock 127.0.0.1 -d 100 $(curl -sS "http://{addr}/generate.php?time=$T&code=$C")"#,
        key = lo.key_file.display(),
        addr = lo.otp.addr
    );
    Command::new("bash").arg("-c").arg(script).output().unwrap()
}

#[test]
fn the_legacy_client_line_opens_the_door_and_knockd_marks_the_line_used() {
    if !e2e() {
        return;
    }
    let lo = Lo::start(30000);
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
    let mut lo = Lo::start(32000);
    let mut bodies = Vec::new();
    for n in 1..=100 {
        bodies.push(lo.cycle(n));
    }
    assert!(lo.knockd.proc.alive(), "knockd died during the cycles");
    assert_eq!(lo.otp.proc.out.count("event=issue"), 100);
    // And the legacy line still opens the door afterwards.
    let out = legacy_knock(&lo);
    assert!(out.status.success());
    wait_for_file(&lo.marker(), WAIT);
    assert!(lo.knockd.proc.alive());

    // No key and no issued sequence ever reached the log.
    let log = lo.otp.proc.out.snapshot().join("\n");
    for secret in ["correct horse battery staple", "another key"] {
        assert!(!log.contains(secret), "a key is in the log");
    }
    for body in &bodies {
        let first_knock = body.split_whitespace().next().unwrap();
        assert!(
            !log.contains(body.trim()) && !log.contains(first_knock),
            "a sequence is in the log"
        );
    }
}

#[test]
fn a_stopped_knockd_turns_answers_into_503_and_a_restarted_one_works_again() {
    if !e2e() {
        return;
    }
    let mut lo = Lo::start(34000);
    lo.knockd.proc.stop(nix::sys::signal::Signal::SIGTERM);
    let (status, body) = lo.fetch("down");
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(':'), "no sequence in a 503: {body}");
    lo.otp.proc.out.wait_for_nth("event=door-down", 1, WAIT);

    lo.restart_knockd();
    lo.cycle(1);
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
        let php = String::from_utf8(php.stdout).unwrap();
        assert_eq!(
            code(&key_file, ip, time, "legacy-md5", None),
            php,
            "{ip} {key}"
        );
        for nonce in [None, Some("n-1")] {
            let mut msg = format!("{ip}|{time}");
            if let Some(n) = nonce {
                msg.push_str(&format!("|{n}"));
            }
            let script = "printf '%s' \"$1\" | openssl dgst -sha256 -hmac \"$2\" | sed 's/^.*= //'";
            let openssl = Command::new("sh")
                .args(["-c", script, "sh", &msg, key])
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

#[test]
fn a_queued_request_taking_the_door_right_after_a_knock_keeps_knockd_alive() {
    if !e2e() {
        return;
    }
    // Each answer waits in the queue while the previous sequence is being
    // knocked, so knock-otp reloads knockd right after it marks a line used.
    // A SIGHUP while knockd is still finishing that knock crashed it in a
    // direct reproduction; here the door file's fsync usually covers that
    // window, and knock-otp also waits for knockd to be idle first.
    let mut lo = Lo::start(35000);
    let url_for = |n: usize| lo.otp.url(&hmac_query(&lo.hmac_key_file, &format!("q{n}")));
    let fetch = |url: String| std::thread::spawn(move || curl(&url, &[]));
    let mut pending = fetch(url_for(0));
    for n in 1..=40 {
        let (status, body) = pending.join().unwrap();
        assert_eq!(status, 200, "request {n}: {body}");
        pending = fetch(url_for(n));
        knock_lo(&body);
        lo.otp.proc.out.wait_for_nth("event=used", n, WAIT);
    }
    let (status, body) = pending.join().unwrap();
    assert_eq!(status, 200, "{body}");
    knock_lo(&body);
    lo.otp.proc.out.wait_for_nth("event=used", 41, WAIT);
    assert!(lo.knockd.proc.alive(), "knockd died");
}

#[test]
fn a_reload_command_drives_knockd_like_the_signal_does() {
    if !e2e() {
        return;
    }
    require_knockd_on_lo();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write_key(d, "ci", "command key");
    let (conf, door, pidfile) = (
        d.join("knockd.conf"),
        d.join("door-0.seq"),
        d.join("knockd.pid"),
    );
    let start = format!("/bin/sh -c 'echo %IP% >> {}'", d.join("opened").display());
    KnockdDoor {
        conf: &conf,
        door_file: &door,
        start_command: &start,
        stop_command: None,
        seq_timeout: 10,
    }
    .write();
    let knockd = Knockd::start(&conf, "lo", &pidfile, &[]);
    // The command as an operator's sudo line would run it, here without sudo;
    // the pidfile lets knock-otp wait for knockd to finish its reload.
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\
         [[clients]]\nname = \"ci\"\nkey_file = \"{key}\"\nscheme = \"hmac-sha256\"\n\
         [sequence]\nport_min = 29000\nport_max = 29999\n[limits]\nissues_per_minute = 0\n\
         [knockd]\nreload = \"command\"\n\
         [[knockd.doors]]\nsequence_file = \"{door}\"\npidfile = \"{pid}\"\n\
         reload_command = [\"/bin/sh\", \"-c\", \"kill -HUP $(cat {pid})\"]\n",
        key = key.display(),
        door = door.display(),
        pid = pidfile.display()
    );
    let config_path = d.join("config.toml");
    fs::write(&config_path, config).unwrap();
    let otp = KnockOtp::start(&config_path, &[]);
    for n in 1..=10 {
        let (status, body) = curl(&otp.url(&hmac_query(&key, &format!("cmd{n}"))), &[]);
        assert_eq!(status, 200, "{body}");
        knock_lo(&body);
        otp.proc.out.wait_for_nth("event=used", n, WAIT);
    }
    wait_for_file(&d.join("opened"), WAIT);
    drop(knockd);
}
