//! Shared fixtures for the integration tests: a directory per test, the
//! real `knock-otp` binary and real `knockd` processes started and awaited
//! on their own output, reprinted when a test fails, always reaped.

#![allow(dead_code)]

pub mod lo;
pub mod netns;
pub mod site;
pub mod ssh_runs;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The one switch for tests that run real knockd, nginx, sshd, iptables.
pub const E2E_VAR: &str = "KNOCK_OTP_E2E";

/// True when the real-component tests must run. When false they return
/// early and say so; when true a missing program is a failure.
pub fn e2e() -> bool {
    let on = std::env::var(E2E_VAR).is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set {E2E_VAR}=1 (the README test command does) to run real components");
    }
    on
}

/// Fails the test unless `program` is on PATH; `package` is its Debian name.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is missing: apt-get install {package}"))
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, knockd)"
    );
}

/// Root, knockd, knock and curl: what every test with a knockd on `lo` needs.
pub fn require_knockd_on_lo() {
    require_root();
    require("knockd", "knockd");
    require("knock", "knockd");
    require("curl", "curl");
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_knock-otp")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes a key file with mode 0600 and returns its path.
pub fn write_key(dir: &Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(format!("{name}.key"));
    fs::write(&path, format!("{key}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `knock-otp code …`, the way scripts get a code.
pub fn code(key_file: &Path, ip: &str, time: u64, scheme: &str, nonce: Option<&str>) -> String {
    let mut cmd = Command::new(bin());
    cmd.args([
        "code",
        "--ip",
        ip,
        "--scheme",
        scheme,
        "--time",
        &time.to_string(),
        "--key-file",
    ])
    .arg(key_file);
    if let Some(n) = nonce {
        cmd.args(["--nonce", n]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "knock-otp code failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The query of an hmac-sha256 client at 127.0.0.1 with `nonce`, timed now.
pub fn hmac_query(key_file: &Path, nonce: &str) -> String {
    let now = unix_now();
    let code = code(key_file, "127.0.0.1", now, "hmac-sha256", Some(nonce));
    format!("time={now}&code={code}&nonce={nonce}")
}

/// Knocks a legacy answer (` P:proto …`) on 127.0.0.1, 10 ms apart.
pub fn knock_lo(body: &str) {
    let mut knock = Command::new("knock");
    knock
        .args(["127.0.0.1", "-d", "10"])
        .args(body.split_whitespace());
    assert!(knock.status().unwrap().success());
}

/// The address in a log line's `listen=` field.
pub fn listen_field(line: &str) -> String {
    line.split(' ')
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap()
        .to_owned()
}

/// Lines a child process printed, shared with the reader thread, so a
/// test can wait for a line instead of sleeping.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn collect(&self, stream: impl Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().push(line);
                lines.0.1.notify_all();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lock().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.snapshot()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `n` lines contain `needle`; returns the last of them.
    pub fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            let hits: Vec<&String> = guard.iter().filter(|l| l.contains(needle)).collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = guard.join("\n");
                drop(guard);
                panic!("no line number {n} with {needle:?} within {timeout:?}; got:\n{seen}");
            }
            guard = self
                .0
                .1
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A child process killed and reaped on drop; its output is reprinted
/// with a prefix when the test is failing.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub out: Lines,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = Lines::default();
        out.collect(child.stdout.take().unwrap());
        out.collect(child.stderr.take().unwrap());
        Proc {
            name: name.into(),
            child,
            out,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `sig` and waits for the exit; returns the exit status.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            for line in self.out.snapshot() {
                eprintln!("[{}] {line}", self.name);
            }
        }
    }
}

/// A running `knock-otp serve`.
pub struct KnockOtp {
    pub proc: Proc,
    pub addr: String,
}

impl KnockOtp {
    /// Starts `knock-otp serve --config FILE`, optionally through a prefix
    /// (`ip netns exec NS`), and waits for its start line.
    pub fn start(config: &Path, prefix: &[&str]) -> KnockOtp {
        KnockOtp::start_with_env(config, prefix, &[])
    }

    /// As `start`, with extra environment (e.g. `RUST_LOG=debug`).
    pub fn start_with_env(config: &Path, prefix: &[&str], env: &[(&str, &str)]) -> KnockOtp {
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.extend([
            bin().to_string(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ]);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let proc = Proc::spawn("knock-otp", cmd);
        let line = proc
            .out
            .wait_for_nth("event=start", 1, Duration::from_secs(20));
        KnockOtp {
            addr: listen_field(&line),
            proc,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("http://{}/generate.php?{query}", self.addr)
    }
}

/// A knockd with one one-time door, in the foreground, its pid written to
/// a pidfile as knock-otp's `pidfile` expects.
pub struct Knockd {
    pub proc: Proc,
    pub pidfile: PathBuf,
}

pub struct KnockdDoor<'a> {
    pub conf: &'a Path,
    pub door_file: &'a Path,
    pub start_command: &'a str,
    pub stop_command: Option<&'a str>,
    pub seq_timeout: u32,
}

impl KnockdDoor<'_> {
    pub fn write(&self) {
        let mut text = format!(
            "[options]\n  LogFile = /dev/null\n[door]\n  one_time_sequences = {}\n  seq_timeout = \
                {}\n  tcpflags = syn\n  start_command = {}\n",
            self.door_file.display(),
            self.seq_timeout,
            self.start_command
        );
        if let Some(stop) = self.stop_command {
            text.push_str(&format!("  cmd_timeout = 3600\n  stop_command = {stop}\n"));
        }
        fs::write(self.conf, text).unwrap();
        if !self.door_file.exists() {
            // knockd refuses to start on a one-time file without a valid line.
            fs::write(self.door_file, " 1:tcp\n 2:tcp\n").unwrap();
        }
    }
}

impl Knockd {
    /// Starts knockd on `iface` and waits until it listens (a SIGHUP before
    /// that would kill it).
    pub fn start(conf: &Path, iface: &str, pidfile: &Path, prefix: &[&str]) -> Knockd {
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.extend(["knockd", "-v", "-i", iface, "-c"].map(String::from));
        argv.push(conf.display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let proc = Proc::spawn("knockd", cmd);
        proc.out
            .wait_for_nth("listening on", 1, Duration::from_secs(10));
        fs::write(pidfile, format!("{}\n", proc.pid())).unwrap();
        Knockd {
            proc,
            pidfile: pidfile.to_path_buf(),
        }
    }
}

/// Waits for `path` to exist with some content (a shell's `>>` creates
/// the file before it writes), woken by inotify on its directory.
pub fn wait_for_file(path: &Path, timeout: Duration) {
    use inotify::{Inotify, WatchMask};
    let dir = path.parent().unwrap();
    let mut inotify = Inotify::init().unwrap();
    inotify
        .watches()
        .add(
            dir,
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE,
        )
        .unwrap();
    let deadline = Instant::now() + timeout;
    let fd = {
        use std::os::fd::AsFd;
        inotify.as_fd().try_clone_to_owned().unwrap()
    };
    let mut buf = [0u8; 4096];
    while fs::metadata(path).map_or(true, |m| m.len() == 0) {
        use std::os::fd::AsFd;
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} did not appear within {timeout:?}",
            path.display()
        );
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut fds, ms);
        let _ = inotify.read_events(&mut buf);
    }
}

/// A simple blocking HTTP GET over loopback with curl; (status, body).
pub fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}
