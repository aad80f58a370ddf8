//! knockd.conf.example and deploy/knockd/door.conf.example as knockd itself
//! parses them, with a door file as knock-otp writes it: knockd on `lo` in
//! debug mode must list the door, its sequence file and its commands.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Proc, e2e, require, require_root};
use crate::{kit, read, temp_dir, write};

/// Starts knockd on `lo` with `config` in debug mode, waits until it listens
/// and returns what it printed about its configuration.
fn knockd_parse(config: &Path) -> String {
    let mut cmd = Command::new(require("knockd", "knockd"));
    require_root();
    cmd.arg("-c").arg(config).args(["-i", "lo", "-D", "-v"]);
    let knockd = Proc::spawn("knockd", cmd);
    // A config knockd refuses makes this wait time out; what knockd said
    // is then reprinted with the failure.
    knockd
        .out
        .wait_for_nth("listening on lo", 1, Duration::from_secs(10));
    knockd.out.snapshot().join("\n")
}

/// A door file as knock-otp writes it: two lines, each starting with a space.
const DOOR_FILE: &str = " 15001:tcp,20333:udp,16000:tcp\n 17001:tcp,21333:udp,18000:udp\n";

fn check_knockd_door(example: &str, door: &str) {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let door_file = state.join(format!("{door}.seq"));
    write(&door_file, DOOR_FILE);
    fs::set_permissions(&door_file, fs::Permissions::from_mode(0o600)).unwrap();
    // The door file path is the only change: the rest is tested as shipped.
    let config = read(&kit(example))
        .replace("door-0", door)
        .replace("/run/knock-otp/", &format!("{}/", state.display()));
    let config_path = dir.path().join("knockd.conf");
    write(&config_path, &config);

    let said = knockd_parse(&config_path);
    for expected in [
        format!("new section: 'knock-otp-{door}'"),
        "new sequence for door".to_owned(),
        "15001:tcp,20333:udp,16000:tcp".to_owned(),
        "tcp flag: SYN".to_owned(),
        "start_command_6: /usr/sbin/ip6tables -I INPUT 1 -s %IP%".to_owned(),
        "stop_command_6: /usr/sbin/ip6tables -D INPUT -s %IP%".to_owned(),
        "cmd_timeout: 10".to_owned(),
        "seq_timeout: 10".to_owned(),
    ] {
        assert!(
            said.contains(&expected),
            "knockd did not report `{expected}`:\n{said}"
        );
    }
}

#[test]
fn knockd_accepts_the_single_door_example() {
    if !e2e() {
        return;
    }
    check_knockd_door("knockd.conf.example", "door-0");
}

#[test]
fn knockd_accepts_the_per_door_example_renumbered_as_documented() {
    if !e2e() {
        return;
    }
    check_knockd_door("deploy/knockd/door.conf.example", "door-3");
}
