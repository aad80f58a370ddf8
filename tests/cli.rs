//! The command line as an operator meets it: `check` names the file, the
//! key and the fix for each problem; `code` prints what clients send;
//! `--help` exists for every subcommand.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{bin, write_key};

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// A valid configuration in `dir`, with `extra` appended (TOML merges
/// tables, so later sections add keys; a repeated key is an error).
fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let key = write_key(dir, "laptop", "secret");
    let door_dir = dir.join("doors");
    fs::create_dir_all(&door_dir).unwrap();
    let text = body
        .replace("{key}", &key.display().to_string())
        .replace("{door}", &door_dir.join("door-0.seq").display().to_string())
        .replace("{dir}", &dir.display().to_string());
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"
[[clients]]
name = "laptop"
key_file = "{key}"
[knockd]
reload = "none"
[[knockd.doors]]
sequence_file = "{door}"
"#;

#[test]
fn check_accepts_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "check",
        "--config",
        config(dir.path(), GOOD).to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("test is successful"));
}

#[test]
fn check_names_the_key_and_the_fix_for_each_problem() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "no clients",
            "[knockd]\nreload = \"none\"\n[[knockd.doors]]\nsequence_file = \"{door}\"\n",
            "clients: no client is configured",
        ),
        (
            "no doors",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n",
            "knockd.doors: no door",
        ),
        (
            "inverted range",
            &format!("{GOOD}[sequence]\nport_min = 2000\nport_max = 1000\n"),
            "sequence.port_min: is above sequence.port_max",
        ),
        (
            "length 0",
            &format!("{GOOD}[sequence]\nlength = 0\n"),
            "sequence.length: must be between 1 and 32",
        ),
        (
            "length 33",
            &format!("{GOOD}[sequence]\nlength = 33\n"),
            "sequence.length",
        ),
        (
            "range too small",
            &format!("{GOOD}[sequence]\nport_min = 100\nport_max = 102\n"),
            "fewer than length 5",
        ),
        (
            "port over 65535",
            &format!("{GOOD}[sequence]\nport_max = 70000\n"),
            "sequence.port_max: must be a port",
        ),
        (
            "unknown protocol",
            &format!("{GOOD}[sequence]\nprotocols = [\"icmp\"]\n"),
            "sequence.protocols[0]",
        ),
        (
            "duplicate client",
            &format!("{GOOD}[[clients]]\nname = \"laptop\"\nkey_file = \"{{key}}\"\n"),
            "clients[1].name: \"laptop\" is used twice",
        ),
        (
            "unknown scheme",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\nscheme = \"sha1\"\n\
             [knockd]\nreload = \"none\"\n[[knockd.doors]]\nsequence_file = \"{door}\"\n",
            "clients[0].scheme",
        ),
        (
            "missing key file",
            "[[clients]]\nname = \"a\"\nkey_file = \"{dir}/nope\"\n[knockd]\nreload = \"none\"\n\
                [[knockd.doors]]\nsequence_file = \"{door}\"\n",
            "clients[0].key_file",
        ),
        (
            "door directory missing",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n[knockd]\nreload = \"none\"\n\
                [[knockd.doors]]\nsequence_file = \"{dir}/none/door.seq\"\n",
            "install -d",
        ),
        (
            "door under a web root",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n[knockd]\nreload = \"none\"\n\
                [[knockd.doors]]\nsequence_file = \"/var/www/html/seq.txt\"\n",
            "under a web root",
        ),
        (
            "shared door file",
            &format!("{GOOD}[[knockd.doors]]\nsequence_file = \"{{door}}\"\n"),
            "shared with another door",
        ),
        (
            "signal without pidfile",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n\
             [[knockd.doors]]\nsequence_file = \"{door}\"\n",
            "neither pidfile nor systemd_unit",
        ),
        (
            "two doors, one knockd",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n\
             [[knockd.doors]]\nsequence_file = \"{dir}/doors/a.seq\"\n\
             pidfile = \"/run/knockd.pid\"\n\
             [[knockd.doors]]\nsequence_file = \"{dir}/doors/b.seq\"\n\
             pidfile = \"/run/knockd.pid\"\n",
            "same knockd as another door",
        ),
        (
            "two command doors, one knockd",
            "[[clients]]\nname = \"a\"\nkey_file = \"{key}\"\n[knockd]\nreload = \"command\"\n\
             [[knockd.doors]]\nsequence_file = \"{dir}/doors/a.seq\"\npidfile = \"/run/k.pid\"\n\
                 reload_command = [\"true\"]\n\
             [[knockd.doors]]\nsequence_file = \"{dir}/doors/b.seq\"\npidfile = \"/run/k.pid\"\n\
                 reload_command = [\"true\"]\n",
            "same knockd as another door",
        ),
        (
            "bad reload mode",
            &GOOD.replace("reload = \"none\"", "reload = \"restart\""),
            "knockd.reload",
        ),
        (
            "bad listen",
            &format!("[http]\nlisten = \"localhost\"\n{GOOD}"),
            "http.listen",
        ),
        (
            "bad proxy",
            &format!("[http]\ntrusted_proxies = [\"nginx\"]\n{GOOD}"),
            "http.trusted_proxies[0]",
        ),
        (
            "bad header",
            &format!("[http]\nclient_ip_header = \"forwarded\"\n{GOOD}"),
            "http.client_ip_header",
        ),
        (
            "typo in a key",
            &format!("{GOOD}[sequence]\nlenght = 5\n"),
            "lenght",
        ),
    ];
    for (what, body, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), body);
        let out = run(&["check", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: check passed");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{what}: the file is named: {stderr}"
        );
        // serve refuses to start on the same problem.
        let out = run(&["serve", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{what}: serve started");
    }
}

#[test]
fn a_key_file_open_to_others_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), GOOD);
    let key = dir.path().join("laptop.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_knockd() {
    let dir = tempfile::tempdir().unwrap();
    let body = GOOD.replace("reload = \"none\"", "reload = \"signal\"")
        + "pidfile = \"{dir}/knockd.pid\"\n";
    let out = run(&[
        "check",
        "--config",
        config(dir.path(), &body).to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("knockd is not running"), "{stderr}");
}

#[test]
fn environment_overrides_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), GOOD);
    let out = Command::new(bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env("KNOCK_OTP__SEQUENCE__LENGTH", "40")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sequence.length"));
}

#[test]
fn code_prints_the_legacy_md5_and_refuses_a_nonce_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "k", "b");
    let out = run(&[
        "code",
        "--key-file",
        key.to_str().unwrap(),
        "--ip",
        "127.0.0.1",
        "--time",
        "1",
    ]);
    // md5("127.0.0.1" + "b" + "1")
    let expected = format!("{:x}", md5_of(b"127.0.0.1b1"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    let out = run(&[
        "code",
        "--key-file",
        key.to_str().unwrap(),
        "--ip",
        "127.0.0.1",
        "--nonce",
        "n",
    ]);
    assert!(!out.status.success());
}

fn md5_of(data: &[u8]) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(data).into())
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "check", "code", "demo"] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub}"
        );
    }
}

#[test]
fn the_example_configuration_parses_and_only_lacks_this_machines_files() {
    use knock_otp::config::RawConfig;
    use knock_otp::settings::Settings;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/knock-otp.example.toml");
    let raw = RawConfig::load(&example).unwrap_or_else(|e| panic!("{e}"));
    let defaults = RawConfig::default();
    assert_eq!(
        format!("{:?}", raw.sequence),
        format!("{:?}", defaults.sequence),
        "the example shows the defaults"
    );
    assert_eq!(format!("{:?}", raw.auth), format!("{:?}", defaults.auth));
    assert_eq!(
        format!("{:?}", raw.limits),
        format!("{:?}", defaults.limits)
    );
    assert_eq!(format!("{:?}", raw.http), format!("{:?}", defaults.http));
    if let Err(problems) = Settings::from_raw(&raw) {
        for p in problems {
            assert!(
                p.key.starts_with("clients[0].key_file")
                    || p.key.starts_with("knockd.doors[0].sequence_file"),
                "unexpected problem in the example: {p}"
            );
        }
    }
}
