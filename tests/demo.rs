//! `knock-otp demo` does what the README promises: the commands it prints
//! fetch a sequence, knock it on a real knockd and show the door open, and
//! Ctrl-C removes everything it made. Runs only with KNOCK_OTP_E2E=1, as
//! root with knockd installed.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn the_printed_commands_open_the_demo_door_and_ctrl_c_cleans_up() {
    if !e2e() {
        return;
    }
    require_knockd_on_lo();
    let mut cmd = Command::new(bin());
    cmd.args(["demo", "--listen", "127.0.0.1:0"]);
    let mut demo = Proc::spawn("demo", cmd);
    demo.out
        .wait_for_nth("Stop with Ctrl-C", 1, Duration::from_secs(20));
    let printed = demo.out.snapshot();

    // The indented lines are the commands, in the order to type them; the
    // last one shows the openings, which knockd records from a child
    // process a moment after the knock, so the test waits for the file.
    let commands: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    let openings: PathBuf = commands
        .iter()
        .find_map(|c| c.strip_prefix("cat "))
        .expect("the demo prints where the openings are recorded")
        .into();
    let script: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| !c.starts_with("key file:") && !c.starts_with("cat "))
        .collect();
    let out = Command::new("bash")
        .args(["-ec", &script.join("\n")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_file(&openings, Duration::from_secs(20));
    let text = std::fs::read_to_string(&openings).unwrap();
    assert!(text.contains("127.0.0.1 opened the door"), "{text}");

    let dir = openings.parent().unwrap().to_path_buf();
    let status = demo.stop(Signal::SIGINT);
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "the demo directory is removed");
}
