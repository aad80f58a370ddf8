//! Faults, each with the real binary: knockd killed, the door directory
//! full or read-only, door files edited or deleted by hand, knock-otp
//! killed in the middle of writes, SIGTERM with a request in flight, and
//! a key rotated by SIGHUP. Runs only with KNOCK_OTP_E2E=1.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lo::{Lo, LoOptions, WAIT};
use common::*;
use nix::sys::signal::Signal;

/// True when `text` is a door file knockd would accept: every line starts
/// with a space (unused) or `#` (used), and one line is still unused.
fn door_file_is_valid(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    lines.len() == 2
        && lines
            .iter()
            .all(|l| l.starts_with(' ') || l.starts_with('#'))
        && lines
            .iter()
            .any(|l| l.starts_with(' ') && l[1..].split(',').all(|k| k.contains(':')))
}

fn admin_addr(lo: &Lo) -> String {
    listen_field(&lo.otp.proc.out.wait_for_nth("event=admin-start", 1, WAIT))
}

#[test]
fn a_killed_knockd_shows_in_healthz_and_both_recover_when_it_is_back() {
    if !e2e() {
        return;
    }
    let mut lo = Lo::start_with(
        36000,
        LoOptions {
            extra: "[admin]\nlisten = \"127.0.0.1:0\"\n",
            ..Default::default()
        },
    );
    let health = format!("http://{}/healthz", admin_addr(&lo));
    assert_eq!(curl(&health, &[]), (200, "ok\n".into()));

    lo.knockd.proc.stop(Signal::SIGKILL);
    let (status, body) = curl(&health, &[]);
    assert_eq!(status, 503);
    assert!(
        body.contains("door 0") && body.contains("not running"),
        "{body}"
    );
    assert_eq!(lo.fetch("while-down").0, 503);

    lo.restart_knockd();
    lo.cycle(1);
    assert_eq!(curl(&health, &[]), (200, "ok\n".into()));
    let (_, metrics) = curl(&health.replace("healthz", "metrics"), &[]);
    assert!(
        metrics.contains("knock_otp_knockd_up{door=\"0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("knock_otp_unavailable_total{reason=\"door-failed\"} 1"),
        "{metrics}"
    );
}

/// A small tmpfs for the door directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status();
        assert!(ok.unwrap().success(), "cannot mount a tmpfs (needs root)");
        Tmpfs(path.to_path_buf())
    }

    /// Makes the directory read-only for new opens through a read-only
    /// bind mount on top of it. (A plain `remount,ro` is refused while
    /// knockd holds the door file open for writing.)
    fn read_only(&self) {
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(&self.0)
            .arg(&self.0)
            .status();
        assert!(bind.unwrap().success(), "mount --bind failed");
        let ro = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&self.0)
            .status();
        assert!(ro.unwrap().success(), "remount,bind,ro failed");
    }

    fn writable_again(&self) {
        assert!(
            Command::new("umount")
                .arg(&self.0)
                .status()
                .unwrap()
                .success()
        );
    }

    /// Fills the file system until a write fails for lack of space.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_door_directory_gives_503_and_leaves_the_door_file_working() {
    if !e2e() {
        return;
    }
    require_root();
    let base = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&base.path().join("doors"), "64k");
    let lo = Lo::start_with(
        37000,
        LoOptions {
            door_dir: Some(&tmpfs.0),
            ..Default::default()
        },
    );
    let before = fs::read_to_string(lo.door_file()).unwrap();

    let filler = tmpfs.fill();
    let (status, _) = lo.fetch("full");
    assert_eq!(status, 503);
    assert_eq!(
        fs::read_to_string(lo.door_file()).unwrap(),
        before,
        "the old file is intact"
    );
    fs::remove_file(filler).unwrap();
    lo.cycle(1);

    tmpfs.read_only();
    let before = fs::read_to_string(lo.door_file()).unwrap();
    let (status, _) = lo.fetch("read-only");
    assert_eq!(status, 503);
    assert_eq!(
        fs::read_to_string(lo.door_file()).unwrap(),
        before,
        "the old file is intact"
    );
    assert!(door_file_is_valid(&before));
    tmpfs.writable_again();
    lo.cycle(2);
    wait_for_file(&lo.marker(), WAIT);
    drop(lo);
}

#[test]
fn a_door_file_deleted_or_edited_by_hand_is_repaired_at_the_next_issue() {
    if !e2e() {
        return;
    }
    let mut lo = Lo::start(38000);
    fs::remove_file(lo.door_file()).unwrap();
    lo.cycle(1);
    assert!(door_file_is_valid(
        &fs::read_to_string(lo.door_file()).unwrap()
    ));

    // An editor's save: a new file renamed over the old one.
    let edited = lo.door_dir.join("door-0.seq.edit");
    fs::write(&edited, "hello\n").unwrap();
    fs::rename(&edited, lo.door_file()).unwrap();
    lo.cycle(2);
    assert!(door_file_is_valid(
        &fs::read_to_string(lo.door_file()).unwrap()
    ));
    assert!(lo.knockd.proc.alive());
}

#[test]
fn sigkill_in_the_middle_of_writes_never_leaves_a_broken_door_file() {
    if !e2e() {
        return;
    }
    require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write_key(d, "ci", "kill-test");
    let mut config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\
         [[clients]]\nname = \"ci\"\nkey_file = \"{}\"\nscheme = \"hmac-sha256\"\n\
         [sequence]\nttl_secs = 1\n[limits]\nissues_per_minute = 0\nrejects_per_minute = 0\n\
         [knockd]\nreload = \"none\"\n",
        key.display()
    );
    let doors: Vec<PathBuf> = (0..8).map(|n| d.join(format!("door-{n}.seq"))).collect();
    for door in &doors {
        config.push_str(&format!(
            "[[knockd.doors]]\nsequence_file = \"{}\"\n",
            door.display()
        ));
    }
    let config_path = d.join("config.toml");
    fs::write(&config_path, config).unwrap();

    for round in 0..15u64 {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"]).arg(&config_path);
        let mut otp = Proc::spawn("knock-otp", cmd);
        if round % 3 != 0 {
            // Most rounds die while issuing; every third while starting.
            let line = otp.out.wait_for_nth("event=start", 1, WAIT);
            let addr = listen_field(&line);
            let requests: Vec<_> = (0..8)
                .map(|n| {
                    let query = hmac_query(&key, &format!("r{round}n{n}"));
                    let url = format!("http://{addr}/generate.php?{query}");
                    Command::new("curl")
                        .args(["-s", "-o", "/dev/null", &url])
                        .spawn()
                        .unwrap()
                })
                .collect();
            otp.out.wait_for_nth("event=issue", 1, WAIT);
            otp.stop(Signal::SIGKILL);
            for mut r in requests {
                let _ = r.wait();
            }
        } else {
            std::thread::sleep(Duration::from_millis(round % 7));
            otp.stop(Signal::SIGKILL);
        }
        for door in &doors {
            if let Ok(text) = fs::read_to_string(door) {
                assert!(
                    door_file_is_valid(&text),
                    "round {round}: {} is broken: {text:?}",
                    door.display()
                );
            }
        }
    }
    // A clean start removes what the killed ones left behind.
    let otp = KnockOtp::start(&config_path, &[]);
    drop(otp);
    let leftovers: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        doors
            .iter()
            .all(|p| door_file_is_valid(&fs::read_to_string(p).unwrap()))
    );
}

/// A one-door service without knockd (`reload = "none"`); the test plays
/// knockd by writing `#` over the first byte of the door file.
fn one_door(d: &Path, key: &Path, extra: &str) -> PathBuf {
    let config = d.join("config.toml");
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[[clients]]\nname = \"laptop\"\nkey_file = \"{}\"\n\
         [sequence]\nttl_secs = 600\n[knockd]\nreload = \"none\"\n[[knockd.doors]]\nsequence_file \
             = \"{}\"\n{extra}",
        key.display(),
        d.join("door-0.seq").display()
    );
    fs::write(&config, text).unwrap();
    config
}

fn mark_used(door: &Path) {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(door)
        .unwrap()
        .write_all(b"#")
        .unwrap();
}

fn legacy_url(otp: &KnockOtp, key: &Path, time: u64) -> String {
    otp.url(&format!(
        "time={time}&code={}",
        code(key, "127.0.0.1", time, "legacy-md5", None)
    ))
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_cleanly() {
    if !e2e() {
        return;
    }
    require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write_key(d, "laptop", "term-test");
    let mut otp = KnockOtp::start_with_env(&one_door(d, &key, ""), &[], &[("RUST_LOG", "debug")]);
    let now = unix_now();
    assert_eq!(curl(&legacy_url(&otp, &key, now), &[]).0, 200);

    // The second request waits for the only door.
    let url = legacy_url(&otp, &key, now + 1);
    let waiting = std::thread::spawn(move || curl(&url, &[]));
    otp.proc.out.wait_for_nth("event=queued", 1, WAIT);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(otp.proc.pid()), Signal::SIGTERM).unwrap();
    mark_used(&d.join("door-0.seq"));
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = otp.proc.child.wait().unwrap();
    assert!(exit.success(), "{exit}");
}

#[test]
fn sighup_rotates_a_key_keeps_issued_sequences_and_refuses_a_bad_config() {
    if !e2e() {
        return;
    }
    require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write_key(d, "laptop", "old key");
    let config = one_door(d, &key, "");
    let otp = KnockOtp::start(&config, &[]);
    let hup = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(otp.proc.pid()), Signal::SIGHUP).unwrap()
    };
    let now = unix_now();
    let old_url = legacy_url(&otp, &key, now);
    assert_eq!(curl(&old_url, &[]).0, 200, "issued before the rotation");

    write_key(d, "laptop", "new key");
    hup();
    otp.proc.out.wait_for_nth("event=config-reloaded", 1, WAIT);
    // The sequence issued before the reload is still followed.
    mark_used(&d.join("door-0.seq"));
    otp.proc.out.wait_for_nth("event=used", 1, WAIT);
    let old_code_url = otp.url(&format!("time={}&code={}", now + 1, old_code(now + 1)));
    assert_eq!(
        curl(&old_code_url, &[]).0,
        418,
        "the old key no longer works"
    );
    let new_url = legacy_url(&otp, &key, now + 1);
    assert_eq!(curl(&new_url, &[]).0, 200, "the new key works");
    mark_used(&d.join("door-0.seq"));
    otp.proc.out.wait_for_nth("event=used", 2, WAIT);

    fs::write(&config, "[[[ not toml").unwrap();
    hup();
    otp.proc
        .out
        .wait_for_nth("event=config-reload-failed", 1, WAIT);
    assert_eq!(
        curl(&legacy_url(&otp, &key, now + 2), &[]).0,
        200,
        "the running config stays"
    );

    let log = otp.proc.out.snapshot().join("\n");
    assert!(
        !log.contains("old key") && !log.contains("new key"),
        "a key is in the log"
    );
    assert!(!log.contains(&old_code(now)), "a code is in the log");
}

/// The legacy code for the key before the rotation.
fn old_code(time: u64) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(format!("127.0.0.1old key{time}").as_bytes()))
}

#[test]
fn a_door_whose_knockd_is_gone_is_skipped_logged_once_and_others_keep_working() {
    if !e2e() {
        return;
    }
    require_knockd_on_lo();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = write_key(d, "ci", "two doors");
    let mut config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\
         [[clients]]\nname = \"ci\"\nkey_file = \"{}\"\nscheme = \"hmac-sha256\"\n\
         [sequence]\nport_min = 39000\nport_max = 39999\n[limits]\nissues_per_minute = 0\n\
         [knockd]\nreload = \"signal\"\n",
        key.display()
    );
    let mut knockds = Vec::new();
    for n in 0..2 {
        let (conf, door) = (
            d.join(format!("knockd-{n}.conf")),
            d.join(format!("door-{n}.seq")),
        );
        let pidfile = d.join(format!("knockd-{n}.pid"));
        let start = format!(
            "/bin/sh -c 'echo %IP% >> {}'",
            d.join(format!("opened-{n}")).display()
        );
        let spec = KnockdDoor {
            conf: &conf,
            door_file: &door,
            start_command: &start,
            stop_command: None,
            seq_timeout: 10,
        };
        spec.write();
        knockds.push(Knockd::start(&conf, "lo", &pidfile, &[]));
        config.push_str(&format!(
            "[[knockd.doors]]\nsequence_file = \"{}\"\npidfile = \"{}\"\n",
            door.display(),
            pidfile.display()
        ));
    }
    let config_path = d.join("config.toml");
    fs::write(&config_path, config).unwrap();
    let otp = KnockOtp::start(&config_path, &[]);

    knockds[1].proc.stop(Signal::SIGKILL);
    for n in 1..=6 {
        let (status, body) = curl(&otp.url(&hmac_query(&key, &format!("skip{n}"))), &[]);
        assert_eq!(status, 200, "request {n}: {body}");
        knock_lo(&body);
        let used = otp.proc.out.wait_for_nth("event=used", n, WAIT);
        assert!(used.contains("door=0"), "{used}");
    }
    assert_eq!(
        otp.proc.out.count("event=door-down door=1"),
        1,
        "logged once, not per request"
    );
    assert!(knockds[0].proc.alive());
}
