//! client/ssh_config.example as ssh reads it: every Host block parses, and
//! the legacy one-liner runs unchanged from it (ssh's own `%` expansion
//! included), with stub curl, knock and nc.

use std::collections::HashMap;
use std::process::Command;

use crate::common::{e2e, require};
use crate::{kit, md5_hex, output, recorded, recording_stub, run_ok, temp_dir, text, write};

#[test]
fn ssh_parses_the_example_config() {
    if !e2e() {
        return;
    }
    let ssh = require("ssh", "openssh-client");
    let config = kit("client/ssh_config.example");
    for (host, expected) in [
        ("server.example.org", "proxycommand knock-otp-ssh %h %p"),
        (
            "other.example.org",
            "proxycommand knock-otp-ssh -s hmac-sha256",
        ),
        (
            "legacy.example.org",
            "proxycommand bash -c 'T=$(date +%%s);",
        ),
    ] {
        let out = run_ok(
            Command::new(&ssh)
                .arg("-G")
                .arg("-F")
                .arg(&config)
                .arg(host),
        );
        let said = text(&out.stdout);
        assert!(
            said.contains(expected),
            "ssh -G {host} lacks `{expected}`:\n{said}"
        );
    }
}

#[test]
fn legacy_one_liner_runs_unchanged_from_the_ssh_config() {
    if !e2e() {
        return;
    }
    let ssh = require("ssh", "openssh-client");
    require("bash", "bash");
    require("md5sum", "coreutils");
    let home = temp_dir();
    let stubs = home.path().join("bin");
    recording_stub(&stubs, "curl", "printf ' 15001:tcp 20333:udp'");
    recording_stub(&stubs, "knock", "");
    recording_stub(&stubs, "nc", "");
    write(&home.path().join(".ssh/knock.addr"), "198.51.100.7\n");
    write(&home.path().join(".ssh/knock.key"), "s3cret\n");

    // ssh runs the ProxyCommand itself, after its own % expansion; nc does
    // nothing, so ssh then gives up, which is expected.
    output(
        Command::new(&ssh)
            .arg("-F")
            .arg(kit("client/ssh_config.example"))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "legacy.example.org",
                "true",
            ])
            .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
            .env("HOME", home.path())
            .env("SHELL", "/bin/sh"),
    );

    let curl = recorded(&stubs, "curl").expect("the one-liner never ran curl");
    let url = curl
        .strip_prefix("-ksS https://legacy.example.org/generate.php?")
        .unwrap_or_else(|| panic!("unexpected curl call: {curl}"));
    let params: HashMap<_, _> = url.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let time = params["time"];
    assert!(time.parse::<u64>().is_ok(), "time is not a number: {curl}");
    assert_eq!(
        params["code"],
        md5_hex(&format!("198.51.100.7s3cret{time}"))
    );
    assert_eq!(
        recorded(&stubs, "knock").as_deref(),
        Some("legacy.example.org -d 100 15001:tcp 20333:udp")
    );
    assert_eq!(
        recorded(&stubs, "nc").as_deref(),
        Some("legacy.example.org 22")
    );
}
