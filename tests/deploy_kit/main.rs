//! Checks the deployment kit (knockd, systemd, nginx, sudoers, fail2ban and
//! ssh files, and the client helper) with the real tools that will read them,
//! and runs the real knock-otp behind the real nginx. Runs only with
//! `KNOCK_OTP_E2E=1`; then a missing tool is a failure.

#[path = "../common/mod.rs"]
mod common;

mod fail2ban;
mod knockd;
mod live;
mod nginx;
mod shell;
mod ssh_config;
mod stub_server;
mod sudoers;
mod systemd;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A file of the kit, by its path in the repository.
fn kit(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Writes `text` to `path`, creating the directories above it.
fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn write_executable(path: &Path, text: &str) {
    write(path, text);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("knock-otp-kit-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command to completion and returns its output, whatever its status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs a command and fails the test, with its output, unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
        describe(cmd),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A port free a moment ago (the listener is closed before it is used).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("no local address").port()
}

/// md5 as the legacy client computes it, with coreutils' md5sum.
fn md5_hex(input: &str) -> String {
    common::require("md5sum", "coreutils");
    piped_hex(Command::new("md5sum"), input)
}

fn hmac_sha256_hex(key: &str, message: &str) -> String {
    common::require("openssl", "openssl");
    let mut cmd = Command::new("openssl");
    cmd.args(["dgst", "-sha256", "-r", "-hmac", key]);
    piped_hex(cmd, message)
}

/// Feeds `input` to a digest tool and returns the first word it prints.
fn piped_hex(mut cmd: Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&cmd)));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A stub program `dir/NAME` that records its arguments in `dir/NAME.args`
/// and then runs the shell code `then`.
fn recording_stub(dir: &Path, name: &str, then: &str) {
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{}/{name}.args'\n{then}\n",
        dir.display()
    );
    write_executable(&dir.join(name), &script);
}

/// The arguments a stub from `recording_stub` was called with, if it was.
fn recorded(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(format!("{name}.args")))
        .ok()
        .map(|s| s.trim_end().to_owned())
}
