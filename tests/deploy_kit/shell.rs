//! The shell scripts of the kit: shellcheck on every one, and the client
//! helper `client/knock-otp-ssh` run against a stub knock-otp with stub
//! `knock` and `nc`, for both schemes and its error messages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{e2e, require, write_key};
use crate::stub_server::{Routes, StubServer, query_of};
use crate::{
    hmac_sha256_hex, kit, md5_hex, output, recorded, recording_stub, run_ok, temp_dir, text,
};

/// Files under client/, scripts/ and .ci/ that are shell scripts: a `.sh`
/// name or a sh/bash/dash shebang.
fn shell_scripts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = ["client", "scripts", ".ci"].map(kit).into();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_shell_script(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn is_shell_script(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let head = fs::read(path).unwrap_or_default();
    let head = text(&head[..head.len().min(200)]);
    let Some(shebang) = head.lines().next().and_then(|l| l.strip_prefix("#!")) else {
        return false;
    };
    // "#!/bin/sh", "#!/bin/bash -eu", "#!/usr/bin/env bash"
    let mut words = shebang.split_whitespace();
    let mut interpreter = words.next().unwrap_or("");
    if interpreter.ends_with("/env") {
        interpreter = words.find(|w| !w.starts_with('-')).unwrap_or("");
    }
    let name = interpreter.rsplit('/').next().unwrap_or("");
    ["sh", "bash", "dash"].contains(&name)
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !e2e() {
        return;
    }
    let shellcheck = require("shellcheck", "shellcheck");
    let scripts = shell_scripts();
    assert!(
        scripts.iter().any(|p| p.ends_with("client/knock-otp-ssh")),
        "client/knock-otp-ssh was not recognised as a shell script: {scripts:?}"
    );
    for script in &scripts {
        run_ok(
            Command::new(&shellcheck)
                .arg("-x")
                .arg(script)
                .current_dir(kit(".")),
        );
    }
}

/// Runs client/knock-otp-ssh against `server` with stub knock and nc and
/// `path` as PATH (`STUBS` stands for the stubs' directory); returns its
/// output and the directory holding what the stubs recorded.
fn run_helper(server: &StubServer, args: &[&str], path: &str) -> (Output, tempfile::TempDir) {
    let dir = temp_dir();
    let stubs = dir.path().join("bin");
    recording_stub(&stubs, "knock", "");
    recording_stub(&stubs, "nc", "");
    let key = write_key(dir.path(), "client", "s3cret");
    let url = format!("http://127.0.0.1:{}/generate.php", server.port);
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(kit("client/knock-otp-ssh"))
        .arg("-k")
        .arg(&key)
        .args(["-u", &url]);
    cmd.args(args).args(["127.0.0.1", "22"]);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("KNOCK_OTP_")) {
        cmd.env_remove(name);
    }
    cmd.env("KNOCK_OTP_WAIT", "0")
        .env("PATH", path.replace("STUBS", &stubs.to_string_lossy()));
    (output(&mut cmd), dir)
}

/// A stub knock-otp answering the knock path with `status` and `body`.
fn helper_server(status: u16, body: &str) -> StubServer {
    require("curl", "curl");
    StubServer::start(Routes::from([
        ("/generate.php", (status, body.to_owned())),
        ("/knock-otp/ip", (200, "127.0.0.1\n".to_owned())),
    ]))
}

const STUBS_FIRST: &str = "STUBS:/usr/bin:/bin";

fn assert_helper_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "helper failed:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn client_helper_knocks_the_sequence_and_connects_with_a_legacy_code() {
    if !e2e() {
        return;
    }
    let server = helper_server(200, " 15001:tcp 20333:udp 16000:tcp");
    let (out, dir) = run_helper(&server, &["-d", "50"], STUBS_FIRST);
    assert_helper_succeeded(&out);

    let query = query_of(&server.requests(), "/generate.php");
    let time = &query["time"];
    assert_eq!(query["code"], md5_hex(&format!("127.0.0.1s3cret{time}")));
    assert!(
        !query.contains_key("nonce"),
        "a legacy code carries no nonce"
    );
    let stubs = dir.path().join("bin");
    assert_eq!(
        recorded(&stubs, "knock").as_deref(),
        Some("-d 50 127.0.0.1 15001:tcp 20333:udp 16000:tcp")
    );
    assert_eq!(recorded(&stubs, "nc").as_deref(), Some("-4 127.0.0.1 22"));
    assert!(
        out.stdout.is_empty(),
        "the helper wrote to the SSH channel: {:?}",
        text(&out.stdout)
    );
}

#[test]
fn client_helper_sends_an_hmac_code_with_a_fresh_nonce() {
    if !e2e() {
        return;
    }
    let server = helper_server(200, " 15001:tcp");
    let (out, _dir) = run_helper(
        &server,
        &["-s", "hmac-sha256", "-a", "127.0.0.1"],
        STUBS_FIRST,
    );
    assert_helper_succeeded(&out);

    let query = query_of(&server.requests(), "/generate.php");
    let nonce = &query["nonce"];
    assert!(
        (1..=64).contains(&nonce.len())
            && nonce
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "bad nonce {nonce:?}"
    );
    let message = format!("127.0.0.1|{}|{nonce}", query["time"]);
    assert_eq!(query["code"], hmac_sha256_hex("s3cret", &message));
    let asked_ip = server
        .requests()
        .iter()
        .any(|r| r.contains("/knock-otp/ip"));
    assert!(
        !asked_ip,
        "-a was given, yet the helper asked for its address"
    );
}

#[test]
fn client_helper_explains_a_refused_code_and_a_busy_server() {
    if !e2e() {
        return;
    }
    for (status, message) in [
        (
            418,
            "knock-otp: server refused the code (418): check the key, the scheme, the clock and \
                the address",
        ),
        (503, "knockd on the server is busy or unavailable (503)"),
    ] {
        let server = helper_server(status, "<html>no</html>");
        let (out, dir) = run_helper(&server, &[], STUBS_FIRST);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "status {status}: {stderr}");
        assert!(
            stderr.contains(message),
            "status {status}: unexpected message:\n{stderr}"
        );
        assert!(
            recorded(&dir.path().join("bin"), "knock").is_none(),
            "knocked after {status}"
        );
    }
}

#[test]
fn client_helper_names_the_package_of_a_missing_tool() {
    if !e2e() {
        return;
    }
    let server = helper_server(200, " 15001:tcp");
    // A PATH with everything the helper needs except knock.
    let tools = temp_dir();
    for (tool, package) in [
        ("curl", "curl"),
        ("od", "coreutils"),
        ("md5sum", "coreutils"),
        ("cut", "coreutils"),
        ("sed", "sed"),
        ("tr", "coreutils"),
        ("date", "coreutils"),
        ("cat", "coreutils"),
        ("grep", "grep"),
        ("sleep", "coreutils"),
    ] {
        std::os::unix::fs::symlink(require(tool, package), tools.path().join(tool)).unwrap();
    }
    let path = tools.path().to_string_lossy().into_owned();
    let (out, _dir) = run_helper(&server, &[], &path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("'knock' not found") && stderr.contains("knockd"),
        "unclear message:\n{stderr}"
    );
}
