//! Checks the deployment kit (knockd, systemd, nginx, sudoers, fail2ban and
//! ssh files, and the client helper) with the real tools that will read them.
//! Runs only with `KNOCK_OTP_E2E=1`; then a missing tool is a failure.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// True when the end-to-end tests are enabled; otherwise says why a test is
/// skipped.
fn enabled(test: &str) -> bool {
    let on = std::env::var("KNOCK_OTP_E2E").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped {test}: set KNOCK_OTP_E2E=1 to run the deployment kit checks");
    }
    on
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kit(relative: &str) -> PathBuf {
    repo().join(relative)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

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

/// Finds `tool` in PATH or the sbin directories, or fails naming the package.
fn require(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
    for dir in dirs.filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{tool}` is not installed; install the Debian package `{package}`");
}

fn require_root(why: &str) {
    let uid = read(Path::new("/proc/self/status"))
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|r| r.split_whitespace().next().map(str::to_owned))
        })
        .flatten();
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "this check must run as root: {why}"
    );
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Runs a command to completion and returns its output, whatever its status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("no local address").port()
}

fn md5_hex(input: &str) -> String {
    require("md5sum", "coreutils");
    piped_hex(Command::new("md5sum"), input)
}

fn hmac_sha256_hex(key: &str, message: &str) -> String {
    require("openssl", "openssl");
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

/// A child process that is killed and reaped when the test ends, even on a
/// failed assertion.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects a child's output lines on a channel, so a test can wait for one
/// with a deadline.
fn line_channel(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// A minimal HTTP server standing in for knock-otp (or for nginx's upstream)

/// The answer the stub gives to each path; unknown paths get 404.
type Routes = HashMap<&'static str, (u16, String)>;

struct StubServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl StubServer {
    fn start(routes: Routes) -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the stub server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &routes, &seen),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StubServer {
            port,
            requests,
            stop,
        }
    }

    /// The request heads received so far, lowercase.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut stream: TcpStream, routes: &Routes, seen: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = text(&head).to_lowercase();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    seen.lock().unwrap().push(head);
    let path = target.split('?').next().unwrap_or("/");
    let (status, body) = routes
        .get(path)
        .cloned()
        .unwrap_or((404, "not found".into()));
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// The query parameters of the first request for `path`.
fn query_of(requests: &[String], path: &str) -> HashMap<String, String> {
    let target = requests
        .iter()
        .filter_map(|r| r.split_whitespace().nth(1))
        .find(|t| t.starts_with(path))
        .unwrap_or_else(|| panic!("no request for {path} among {requests:?}"));
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// sudoers

#[test]
fn sudoers_drop_in_passes_visudo() {
    if !enabled("sudoers_drop_in_passes_visudo") {
        return;
    }
    let visudo = require("visudo", "sudo");
    let file = kit("sudoers.d/knock-otp");
    run_ok(Command::new(&visudo).arg("-csf").arg(&file));

    // The commented parallel-doors rule must be valid once uncommented.
    let dir = temp_dir();
    let variant = dir.path().join("knock-otp");
    write(
        &variant,
        &read(&file).replace("#knock-otp ALL", "knock-otp ALL"),
    );
    run_ok(Command::new(&visudo).arg("-csf").arg(&variant));
}

// ---------------------------------------------------------------------------
// Shell scripts

/// Files under client/, scripts/ and .ci/ that are shell scripts: a `.sh`
/// name or a sh/bash/dash shebang.
fn shell_scripts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = ["client", "scripts", ".ci"]
        .iter()
        .map(|d| kit(d))
        .collect();
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
    if !enabled("shell_scripts_pass_shellcheck") {
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
                .current_dir(repo()),
        );
    }
}

// ---------------------------------------------------------------------------
// systemd

/// The units as an administrator installs them, in a scratch unit directory,
/// with knock-otp's binary replaced by a stub (verify checks ExecStart
/// paths) and Debian's knockd.service beside our drop-in.
fn unit_dir() -> tempfile::TempDir {
    let dir = temp_dir();
    let stub = dir.path().join("bin/knock-otp");
    write_executable(&stub, "#!/bin/sh\nexit 0\n");
    let stub = stub.to_string_lossy().into_owned();
    let copy = |from: &str, to: &str| {
        let unit = read(&kit(from)).replace("/usr/local/bin/knock-otp", &stub);
        write(&dir.path().join(to), &unit);
    };
    copy("deploy/systemd/knock-otp.service", "knock-otp.service");
    copy(
        "deploy/systemd/sudo/knock-otp.service",
        "sudo/knock-otp.service",
    );
    copy("deploy/systemd/knockd@.service", "knockd@.service");
    copy(
        "deploy/systemd/knockd.service.d/knock-otp.conf",
        "knockd.service.d/knock-otp.conf",
    );
    let debian = Path::new("/lib/systemd/system/knockd.service");
    assert!(
        debian.is_file(),
        "{} is missing; install the Debian package `knockd`",
        debian.display()
    );
    write(&dir.path().join("knockd.service"), &read(debian));
    dir
}

/// Runs `systemd-analyze verify` on one unit; any complaint is a failure.
fn verify_unit(analyze: &Path, dir: &Path, unit: &str) -> String {
    let out = output(
        Command::new(analyze)
            .arg("verify")
            .arg(format!("./{unit}"))
            .current_dir(dir),
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify {unit} failed:\n{said}"
    );
    said
}

/// Makes sure `systemd-analyze verify` works here at all, and reads drop-ins
/// next to a unit, so that a clean result below means something.
fn verify_works_here(analyze: &Path) {
    let dir = temp_dir();
    write(
        &dir.path().join("probe.service"),
        "[Service]\nExecStart=/bin/true\n",
    );
    write(
        &dir.path().join("probe.service.d/x.conf"),
        "[Service]\nNoSuchKnockOtpKey=1\n",
    );
    let out = output(
        Command::new(analyze)
            .args(["verify", "./probe.service"])
            .current_dir(dir.path()),
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.contains("NoSuchKnockOtpKey"),
        "systemd-analyze verify does not work on this machine (a trivial unit with a \
         bad drop-in key gave {}; output:\n{said}); the units were not checked",
        out.status
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !enabled("systemd_units_pass_systemd_analyze_verify") {
        return;
    }
    let analyze = require("systemd-analyze", "systemd");
    verify_works_here(&analyze);
    let dir = unit_dir();
    for unit in [
        "knock-otp.service",
        "sudo/knock-otp.service",
        "knockd@.service",
        "knockd@0.service",
        "knockd.service",
    ] {
        let said = verify_unit(&analyze, dir.path(), unit);
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify {unit} complained:\n{said}"
        );
    }
}

#[test]
fn signal_variant_unit_is_hardened_by_systemd_analyze_security() {
    if !enabled("signal_variant_unit_is_hardened_by_systemd_analyze_security") {
        return;
    }
    let analyze = require("systemd-analyze", "systemd");
    let dir = unit_dir();
    let out = run_ok(
        Command::new(&analyze)
            .args([
                "security",
                "--offline=yes",
                "--no-pager",
                "./knock-otp.service",
            ])
            .current_dir(dir.path()),
    );
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for knock-otp.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(
        exposure <= 2.5,
        "exposure {exposure} is above 2.5:\n{report}"
    );
}

/// Options that systemd.exec(5) says imply NoNewPrivileges=yes, and others
/// under which sudo cannot become root.
const BREAKS_SUDO: &[&str] = &[
    "NoNewPrivileges",
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "PrivateUsers",
];

#[test]
fn sudo_variant_unit_sets_nothing_that_stops_sudo() {
    if !enabled("sudo_variant_unit_sets_nothing_that_stops_sudo") {
        return;
    }
    let unit = read(&kit("deploy/systemd/sudo/knock-otp.service"));
    for line in unit.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let harmless = value.is_empty() || ["no", "false", "0", "off"].contains(&value);
        assert!(
            !BREAKS_SUDO.contains(&key) || harmless,
            "the sudo variant sets `{line}`, under which sudo cannot gain root"
        );
    }
    assert!(
        unit.contains("NoNewPrivileges=no"),
        "the sudo variant should say NoNewPrivileges=no"
    );
}

#[test]
fn sysusers_file_creates_the_user_and_group() {
    if !enabled("sysusers_file_creates_the_user_and_group") {
        return;
    }
    let sysusers = require("systemd-sysusers", "systemd");
    let root = temp_dir();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    run_ok(
        Command::new(&sysusers)
            .arg(format!("--root={}", root.path().display()))
            .arg(kit("deploy/systemd/knock-otp.sysusers")),
    );
    let passwd = read(&root.path().join("etc/passwd"));
    let group = read(&root.path().join("etc/group"));
    assert!(
        passwd.lines().any(|l| l.starts_with("knock-otp:")),
        "no user in:\n{passwd}"
    );
    assert!(
        group.lines().any(|l| l.starts_with("knock-otp:")),
        "no group in:\n{group}"
    );
}

// ---------------------------------------------------------------------------
// knockd

/// Starts knockd on `lo` with `config` in debug mode, waits until it listens
/// and returns what it printed about its configuration.
fn knockd_parse(config: &Path) -> String {
    let knockd = require("knockd", "knockd");
    require_root("knockd opens the interface lo with pcap");
    let mut child = Reaped(
        Command::new(&knockd)
            .arg("-c")
            .arg(config)
            .args(["-i", "lo", "-D", "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start knockd"),
    );
    let out = line_channel(child.0.stdout.take().unwrap());
    let err = line_channel(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = out.recv_timeout(Duration::from_millis(50)) {
            said.push_str(&line);
            said.push('\n');
            if line.starts_with("listening on lo") {
                return said;
            }
        }
        if child.0.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    let errors: Vec<String> = err.try_iter().collect();
    panic!(
        "knockd did not accept {}:\n{said}{}",
        config.display(),
        errors.join("\n")
    );
}

/// A door file as knock-otp writes it: two lines, each starting with a space.
const DOOR_FILE: &str = " 15001:tcp,20333:udp,16000:tcp\n 17001:tcp,21333:udp,18000:udp\n";

fn check_knockd_door(example: &str, door: &str) {
    let dir = temp_dir();
    let state = dir.path().join("state");
    write(&state.join(format!("{door}.seq")), DOOR_FILE);
    fs::set_permissions(
        state.join(format!("{door}.seq")),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // The door file path is the only change: the rest is tested as shipped.
    let config = read(&kit(example))
        .replace("door-0", door)
        .replace("/var/lib/knock-otp/", &format!("{}/", state.display()));
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
    if !enabled("knockd_accepts_the_single_door_example") {
        return;
    }
    check_knockd_door("knockd.conf.example", "door-0");
}

#[test]
fn knockd_accepts_the_per_door_example_renumbered_as_documented() {
    if !enabled("knockd_accepts_the_per_door_example_renumbered_as_documented") {
        return;
    }
    check_knockd_door("deploy/knockd/door.conf.example", "door-3");
}

// ---------------------------------------------------------------------------
// nginx

/// A throwaway nginx.conf around the two snippets: TLS server on `port`,
/// every path nginx writes inside `dir`, upstream moved to `upstream`.
fn nginx_conf(dir: &Path, port: u16, upstream: u16) -> PathBuf {
    require("openssl", "openssl");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-days", "1", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
    let snippet = read(&kit("nginx/knock-otp.conf")).replace(
        "http://127.0.0.1:8080",
        &format!("http://127.0.0.1:{upstream}"),
    );
    write(&dir.join("knock-otp.conf"), &snippet);
    let d = dir.display();
    let zone = kit("nginx/knock-otp-zone.conf");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {zone};\n  server {{\n    listen 127.0.0.1:{port} ssl;\n\
         ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
         location ~ \\.php$ {{ return 403; }}\n    include {d}/knock-otp.conf;\n  }}\n}}\n",
        zone = zone.display()
    );
    let path = dir.join("nginx.conf");
    write(&path, &conf);
    path
}

fn nginx_command(nginx: &Path, dir: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(conf);
    cmd
}

#[test]
fn nginx_accepts_the_snippets_inside_a_tls_server() {
    if !enabled("nginx_accepts_the_snippets_inside_a_tls_server") {
        return;
    }
    let nginx = require("nginx", "nginx");
    let dir = temp_dir();
    let conf = nginx_conf(dir.path(), free_port(), 8080);
    run_ok(nginx_command(&nginx, dir.path(), &conf).arg("-t"));
}

/// One HTTPS GET through nginx with curl: (status, headers and body).
fn curl_get(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new(require("curl", "curl"));
    cmd.args(["-ksS", "-i", "--max-time", "10", "-w", "\n%{http_code}"]);
    for header in headers {
        cmd.arg("-H").arg(header);
    }
    let out = run_ok(cmd.arg(format!("https://127.0.0.1:{port}{path}")));
    let all = text(&out.stdout);
    let (reply, status) = all.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), reply.to_lowercase())
}

fn wait_for_port(port: u16, nginx: &mut Reaped, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = nginx.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx did not listen on {port} ({exited:?}):\n{log}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nginx_passes_only_the_real_client_address_and_limits_the_rate() {
    if !enabled("nginx_passes_only_the_real_client_address_and_limits_the_rate") {
        return;
    }
    let nginx = require("nginx", "nginx");
    let upstream = StubServer::start(Routes::from([
        ("/generate.php", (418, "teapot".to_owned())),
        ("/knock-otp/ip", (200, "127.0.0.1\n".to_owned())),
    ]));
    let dir = temp_dir();
    let port = free_port();
    let conf = nginx_conf(dir.path(), port, upstream.port);
    let mut server = Reaped(
        nginx_command(&nginx, dir.path(), &conf)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start nginx"),
    );
    wait_for_port(port, &mut server, dir.path());

    let spoof = [
        "X-Real-IP: 192.0.2.66",
        "X-Forwarded-For: 192.0.2.66",
        "Forwarded: for=192.0.2.66",
    ];
    let (status, reply) = curl_get(port, "/generate.php?time=1&code=x", &spoof);
    assert_eq!(
        status, 418,
        "the teapot must come through unchanged:\n{reply}"
    );
    assert!(
        reply.contains("cache-control: no-store"),
        "no Cache-Control: no-store:\n{reply}"
    );
    let (status, _) = curl_get(port, "/knock-otp/ip", &spoof);
    assert_eq!(status, 200);
    for head in upstream.requests() {
        assert!(
            head.contains("x-real-ip: 127.0.0.1\r\n"),
            "X-Real-IP not from nginx:\n{head}"
        );
        assert!(
            !head.contains("192.0.2.66"),
            "a client-supplied address got through:\n{head}"
        );
    }

    // Other paths stay with the rest of the server block.
    let before = upstream.requests().len();
    let (status, _) = curl_get(port, "/other.php", &[]);
    assert_eq!(status, 403);
    assert_eq!(
        upstream.requests().len(),
        before,
        "/other.php reached knock-otp"
    );

    // burst=10 nodelay: a quick run of requests soon gets 429.
    let statuses: Vec<u16> = (0..15)
        .map(|_| curl_get(port, "/generate.php", &[]).0)
        .collect();
    assert!(
        statuses.contains(&429),
        "no request was rate-limited: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------
// fail2ban

const REJECT_LINES: &[(&str, &str)] = &[
    (
        "2026-12-03T14:00:00.123Z WARN  event=reject addr=203.0.113.7 reason=bad-code",
        "203.0.113.7",
    ),
    (
        "2026-12-03T14:00:01.123Z WARN  event=reject addr=198.51.100.4 reason=replay client=laptop",
        "198.51.100.4",
    ),
    (
        "2026-12-03T14:00:02.123Z WARN  event=reject addr=2001:db8::1 reason=time-too-old",
        "2001:db8::1",
    ),
    (
        "2026-12-03T14:00:03.123Z WARN  event=reject addr=2001:db8:0:1::17 reason=over-budget client=ci",
        "2001:db8:0:1::17",
    ),
    // As the journal backend hands it over: host and unit prefix.
    (
        "web1 knock-otp[812]: 2026-12-03T14:00:04.123Z WARN  event=reject addr=192.0.2.9 reason=bad-nonce",
        "192.0.2.9",
    ),
];

const OTHER_LINES: &[&str] = &[
    "2026-12-03T14:00:05.123Z INFO  event=issue client=laptop addr=1.2.3.4 door=0 knocks=5 reload_ms=1.3",
    "web1 knock-otp[812]: 2026-12-03T14:00:06.123Z INFO  event=issue client=laptop addr=2001:db8::2 door=1 knocks=5 reload_ms=0.9",
    "2026-12-03T14:00:07.123Z INFO  event=start listen=127.0.0.1:8080 doors=1 reload=signal",
];

/// Runs fail2ban-regex on `lines`; returns (matched count, its report).
fn fail2ban_regex(lines: &[&str]) -> (usize, String) {
    let tool = require("fail2ban-regex", "fail2ban");
    let dir = temp_dir();
    let log = dir.path().join("knock-otp.log");
    write(&log, &(lines.join("\n") + "\n"));
    let filter = kit("fail2ban/filter.d/knock-otp.conf");
    let out = run_ok(Command::new(tool).arg("-v").arg(&log).arg(filter));
    let report = text(&out.stdout);
    // "Lines: 5 lines, 0 ignored, 5 matched, 0 missed"
    let matched = report
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with(" matched")))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no match count in fail2ban-regex output:\n{report}"));
    (matched, report)
}

#[test]
fn fail2ban_filter_catches_every_rejection_with_its_address() {
    if !enabled("fail2ban_filter_catches_every_rejection_with_its_address") {
        return;
    }
    let lines: Vec<&str> = REJECT_LINES.iter().map(|(l, _)| *l).collect();
    let (matched, report) = fail2ban_regex(&lines);
    assert_eq!(
        matched,
        lines.len(),
        "not every rejection matched:\n{report}"
    );
    for (_, addr) in REJECT_LINES {
        assert!(
            report.contains(&format!("|      {addr}  ")),
            "{addr} was not captured:\n{report}"
        );
    }
}

#[test]
fn fail2ban_filter_ignores_issue_and_start_lines() {
    if !enabled("fail2ban_filter_ignores_issue_and_start_lines") {
        return;
    }
    let (matched, report) = fail2ban_regex(OTHER_LINES);
    assert_eq!(matched, 0, "a line that is no rejection matched:\n{report}");
}

#[test]
fn fail2ban_accepts_the_jail() {
    if !enabled("fail2ban_accepts_the_jail") {
        return;
    }
    let client = require("fail2ban-client", "fail2ban");
    let dir = temp_dir();
    let conf = dir.path().join("fail2ban");
    // The stock configuration, without Debian's own jails (their log files
    // may not exist here), plus the kit's filter and jail.
    run_ok(Command::new("cp").arg("-r").arg("/etc/fail2ban").arg(&conf));
    fs::remove_dir_all(conf.join("jail.d")).unwrap();
    write(
        &conf.join("jail.d/knock-otp.conf"),
        &read(&kit("fail2ban/jail.d/knock-otp.conf")),
    );
    write(
        &conf.join("filter.d/knock-otp.conf"),
        &read(&kit("fail2ban/filter.d/knock-otp.conf")),
    );
    run_ok(Command::new(&client).arg("-c").arg(&conf).arg("-t"));
    let dump = text(&run_ok(Command::new(&client).arg("-c").arg(&conf).arg("-d")).stdout);
    for expected in [
        "['add', 'knock-otp', 'systemd']",
        "_SYSTEMD_UNIT=knock-otp.service",
        "http,https",
    ] {
        assert!(
            dump.contains(expected),
            "the jail lacks `{expected}`:\n{dump}"
        );
    }
}

// ---------------------------------------------------------------------------
// ssh and the client side

#[test]
fn ssh_parses_the_example_config() {
    if !enabled("ssh_parses_the_example_config") {
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

/// Stub programs that record their arguments in `dir/NAME.args`.
fn recording_stub(dir: &Path, name: &str, then: &str) {
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{}/{name}.args'\n{then}\n",
        dir.display()
    );
    write_executable(&dir.join(name), &script);
}

fn recorded(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(format!("{name}.args")))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

#[test]
fn legacy_one_liner_runs_unchanged_from_the_ssh_config() {
    if !enabled("legacy_one_liner_runs_unchanged_from_the_ssh_config") {
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
        .unwrap_or_else(|| {
            panic!("unexpected curl call: {curl}");
        });
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

/// Runs client/knock-otp-ssh against a stub knock-otp with stub knock and
/// nc; returns its output and the directory holding what the stubs recorded.
fn run_helper(server: &StubServer, args: &[&str], path: &str) -> (Output, tempfile::TempDir) {
    let dir = temp_dir();
    let stubs = dir.path().join("bin");
    recording_stub(&stubs, "knock", "");
    recording_stub(&stubs, "nc", "");
    let key = dir.path().join("key");
    write(&key, "s3cret\n");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
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

fn helper_server(status: u16, body: &str) -> StubServer {
    require("curl", "curl");
    StubServer::start(Routes::from([
        ("/generate.php", (status, body.to_owned())),
        ("/knock-otp/ip", (200, "127.0.0.1\n".to_owned())),
    ]))
}

const STUBS_FIRST: &str = "STUBS:/usr/bin:/bin";

#[test]
fn client_helper_knocks_the_sequence_and_connects_with_a_legacy_code() {
    if !enabled("client_helper_knocks_the_sequence_and_connects_with_a_legacy_code") {
        return;
    }
    let server = helper_server(200, " 15001:tcp 20333:udp 16000:tcp");
    let (out, dir) = run_helper(&server, &["-d", "50"], STUBS_FIRST);
    assert!(
        out.status.success(),
        "helper failed:\n{}",
        text(&out.stderr)
    );

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
    if !enabled("client_helper_sends_an_hmac_code_with_a_fresh_nonce") {
        return;
    }
    let server = helper_server(200, " 15001:tcp");
    let (out, _dir) = run_helper(
        &server,
        &["-s", "hmac-sha256", "-a", "127.0.0.1"],
        STUBS_FIRST,
    );
    assert!(
        out.status.success(),
        "helper failed:\n{}",
        text(&out.stderr)
    );

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
    if !enabled("client_helper_explains_a_refused_code_and_a_busy_server") {
        return;
    }
    for (status, message) in [
        (
            418,
            "knock-otp: server refused the code (418): check the key, the scheme, the clock and the address",
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
    if !enabled("client_helper_names_the_package_of_a_missing_tool") {
        return;
    }
    let server = helper_server(200, " 15001:tcp");
    // A PATH with everything the helper needs except knock.
    let tools = temp_dir();
    for tool in [
        "curl", "od", "md5sum", "cut", "sed", "tr", "date", "cat", "grep", "sleep",
    ] {
        let real = require(tool, "coreutils");
        std::os::unix::fs::symlink(real, tools.path().join(tool)).unwrap();
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
