//! Load benchmark over HTTP, the figures behind BENCHMARKS.md:
//!
//! 1. the teapot path flooded by wrk (budgets off: every request parsed,
//!    checked against every client and logged);
//! 2. the issue path with `reload = "none"`, knockd's use played by a
//!    thread that writes `#` as soon as a door file is replaced;
//! 3. the issue path with a real knockd on `lo` (root only): one client
//!    fetching and knocking in a loop, answer latency measured;
//! 4. a teapot flood from one address while a rightful client (another
//!    address, through the trusted-proxy header) keeps getting sequences;
//!
//! with resident memory idle and at its peak. Run as root:
//!
//! ```sh
//! cargo bench --bench load
//! ```
//!
//! Nothing here asserts a threshold: it prints the figures.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knock_otp::auth::{Scheme, expected_code};

const KEY: &str = "bench-key";
const FLOOD_SECS: &str = "10";

fn main() {
    let wrk = which("wrk").expect("wrk is missing: apt-get install wrk");
    println!("# knock-otp load benchmark");
    println!("machine: {}", machine());
    let dir = tempfile::tempdir().unwrap();

    let teapot = teapot_flood(dir.path(), &wrk);
    let issue = issue_without_knockd(dir.path(), &wrk);
    let knockd = if nix::unistd::geteuid().is_root() && which("knockd").is_some() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let on_disk = issue_with_knockd(dir.path(), &dir.path().join("knockd-door"));
        Some((on_disk, issue_with_knockd(dir.path(), shm.path())))
    } else {
        println!("(skipping the real-knockd run: needs root and knockd)");
        None
    };
    let flood = flood_and_rightful_client(dir.path(), &wrk);

    println!();
    println!("| scenario | requests/s | p50 | p99 | max | RSS idle → peak |");
    println!("|---|---|---|---|---|---|");
    teapot.row("teapot path, wrk -t2 -c64, budgets off");
    issue.row("issue path, reload = none, 16 doors, wrk -t2 -c16");
    if let Some((disk, tmpfs)) = knockd {
        disk.row("issue path, real knockd on lo, fetch+knock loop, door file on disk");
        tmpfs.row("the same, door file on tmpfs (/dev/shm)");
    }
    flood.0.row("teapot flood from one address (budgets on)");
    flood.1.row("rightful client during that flood");
}

/// What one scenario measured; latencies in milliseconds.
struct Figures {
    rate: Option<f64>,
    p50: f64,
    p99: f64,
    max: f64,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
}

impl Figures {
    /// Latencies (p50, p99, max) with the server's idle and peak memory.
    fn measured(
        rate: Option<f64>,
        (p50, p99, max): (f64, f64, f64),
        idle: u64,
        server: &Server,
    ) -> Self {
        let rss_peak_kib = server.rss_kib("VmHWM:");
        Figures {
            rate,
            p50,
            p99,
            max,
            rss_idle_kib: idle,
            rss_peak_kib,
        }
    }

    fn row(&self, name: &str) {
        let rate = self.rate.map_or("-".into(), |r| format!("{r:.0}"));
        let rss = if self.rss_peak_kib == 0 {
            "-".into()
        } else {
            format!(
                "{:.1} → {:.1} MiB",
                self.rss_idle_kib as f64 / 1024.0,
                self.rss_peak_kib as f64 / 1024.0
            )
        };
        println!(
            "| {name} | {rate} | {:.2} ms | {:.2} ms | {:.2} ms | {rss} |",
            self.p50, self.p99, self.max
        );
    }
}

/// A knock-otp started from a config, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, name: &str, body: &str) -> Server {
        let addr = free_addr();
        let key = dir.join(format!("{name}.key"));
        write_private(&key, KEY);
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[http]\nlisten = \"{addr}\"\n[[clients]]\nname = \"laptop\"\nkey_file = \"{}\"\n\
             [[clients]]\nname = \"ci\"\nkey_file = \"{}\"\nscheme = \"hmac-sha256\"\n{body}",
            key.display(),
            key.display()
        );
        fs::write(&config, text).unwrap();
        let log = fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_knock-otp"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "knock-otp did not start; see {name}.log"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr }
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A fresh directory with `n` door entries for the config: (dir, TOML).
fn doors(dir: &Path, n: usize) -> (PathBuf, String) {
    let dir = dir.join(format!("doors-{n}-{}", now()));
    fs::create_dir_all(&dir).unwrap();
    let toml = (0..n)
        .map(|i| {
            let file = dir.join(format!("door-{i}.seq"));
            format!("[[knockd.doors]]\nsequence_file = \"{}\"\n", file.display())
        })
        .collect();
    (dir, toml)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// Runs wrk and returns (requests/s, p50, p99, max) in ms.
fn wrk(wrk: &Path, url: &str, threads: u32, conns: u32, headers: &[&str]) -> (f64, f64, f64, f64) {
    let mut cmd = Command::new(wrk);
    cmd.args([
        "--latency",
        "-d",
        FLOOD_SECS,
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(prefix)
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            })
            .unwrap_or_default()
    };
    let rate = find("Requests/sec:").parse().unwrap_or(0.0);
    let max = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("0ms");
    (
        rate,
        duration_ms(&find("50%")),
        duration_ms(&find("99%")),
        duration_ms(max),
    )
}

fn duration_ms(text: &str) -> f64 {
    let (num, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn teapot_flood(dir: &Path, wrk_bin: &Path) -> Figures {
    let body = format!(
        "[limits]\nrejects_per_minute = 0\n[knockd]\nreload = \"none\"\n{}",
        doors(dir, 1).1
    );
    let server = Server::start(dir, "teapot", &body);
    let idle = server.rss_kib("VmRSS:");
    let url = format!(
        "http://{}/generate.php?time={}&code=00000000000000000000000000000000",
        server.addr,
        now()
    );
    let (rate, p50, p99, max) = wrk(wrk_bin, &url, 2, 64, &[]);
    Figures::measured(Some(rate), (p50, p99, max), idle, &server)
}

/// Plays knockd for every door file in `dir`: as soon as a new file is
/// renamed into place, writes `#` over its first byte, which is what
/// knockd does when the sequence is knocked.
fn fake_knockd(dir: PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init().unwrap();
    inotify.watches().add(&dir, WatchMask::MOVED_TO).unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            let Ok(events) = inotify.read_events(&mut buf) else {
                thread::sleep(Duration::from_millis(1));
                continue;
            };
            for event in events {
                let Some(name) = event.name.map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                if !name.ends_with(".seq") || name.starts_with('.') {
                    continue;
                }
                if let Ok(mut f) = fs::OpenOptions::new().write(true).open(dir.join(&name)) {
                    let _ = f.write_all(b"#");
                }
            }
        }
    })
}

fn issue_without_knockd(dir: &Path, wrk_bin: &Path) -> Figures {
    let (door_dir, door_block) = doors(dir, 16);
    let body = format!(
        "[auth]\nmax_age_secs = 3600\nreplay_protection = false\n[limits]\nissues_per_minute = 0\n\
            [knockd]\nreload = \"none\"\n{door_block}"
    );
    let server = Server::start(dir, "issue", &body);
    let idle = server.rss_kib("VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let player = fake_knockd(door_dir, stop.clone());
    let t = now().to_string();
    let code = expected_code(Scheme::LegacyMd5, KEY.as_bytes(), "127.0.0.1", &t, None);
    let url = format!("http://{}/generate.php?time={t}&code={code}", server.addr);
    let (rate, p50, p99, max) = wrk(wrk_bin, &url, 2, 16, &[]);
    stop.store(true, Ordering::Relaxed);
    player.join().unwrap();
    Figures::measured(Some(rate), (p50, p99, max), idle, &server)
}

/// A minimal HTTP/1.1 GET; (status, body, elapsed).
fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, Duration) {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new(), started.elapsed());
    };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}Connection: close\r\n\r\n");
    let _ = stream.write_all(req.as_bytes());
    let mut resp = String::new();
    let _ = stream.read_to_string(&mut resp);
    let elapsed = started.elapsed();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, elapsed)
}

fn hmac_path(ip: &str, nonce: &str) -> String {
    let t = now().to_string();
    let code = expected_code(Scheme::HmacSha256, KEY.as_bytes(), ip, &t, Some(nonce));
    format!("/generate.php?time={t}&code={code}&nonce={nonce}")
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), *ms.last().unwrap())
}

/// `door_dir` is where the door file lives: on disk every write pays two
/// fsyncs; on tmpfs they cost nothing.
fn issue_with_knockd(dir: &Path, door_dir: &Path) -> Figures {
    fs::create_dir_all(door_dir).unwrap();
    let door = door_dir.join("door-0.seq");
    fs::write(&door, " 1:tcp\n 2:tcp\n").unwrap();
    let conf = dir.join("knockd.conf");
    fs::write(
        &conf,
        format!(
            "[options]\n  LogFile = /dev/null\n[door]\n  one_time_sequences = {}\n  \
            seq_timeout = 5\n  tcpflags = syn\n  start_command = /bin/true\n",
            door.display()
        ),
    )
    .unwrap();
    let mut knockd = Command::new("knockd")
        .args(["-v", "-i", "lo", "-c"])
        .arg(&conf)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A SIGHUP before knockd listens would kill it: wait for its line.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(knockd.stdout.take().unwrap()));
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening on")),
        "knockd did not start"
    );
    thread::spawn(move || lines.for_each(drop));
    let pidfile = dir.join("knockd.pid");
    fs::write(&pidfile, knockd.id().to_string()).unwrap();
    let body = format!(
        "[sequence]\nport_min = 40000\nport_max = 41000\n[limits]\nissues_per_minute = 0\n\
            [knockd]\nreload = \"signal\"\n\
         [[knockd.doors]]\nsequence_file = \"{}\"\npidfile = \"{}\"\n",
        door.display(),
        pidfile.display()
    );
    let server = Server::start(dir, "knockd", &body);
    let idle = server.rss_kib("VmRSS:");
    let mut latencies = Vec::new();
    for n in 0..300 {
        let (status, seq, elapsed) =
            http_get(server.addr, &hmac_path("127.0.0.1", &format!("k{n}")), &[]);
        assert_eq!(status, 200, "issue {n}: {seq}");
        latencies.push(elapsed.as_secs_f64() * 1000.0);
        knock(&seq);
        wait_for_use(&door);
    }
    let _ = knockd.kill();
    let _ = knockd.wait();
    Figures::measured(None, percentiles(latencies), idle, &server)
}

/// Sends the knocks of a legacy answer to 127.0.0.1 without a delay.
fn knock(seq: &str) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for k in seq.split_whitespace() {
        let (port, proto) = k.split_once(':').unwrap();
        let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if proto == "udp" {
            udp.send_to(b"k", target).unwrap();
        } else {
            let _ = TcpStream::connect_timeout(&target, Duration::from_millis(200));
        }
    }
}

/// Waits for knockd's `#` on the door file (IN_MODIFY), without opening it.
fn wait_for_use(door: &Path) {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init().unwrap();
    inotify
        .watches()
        .add(door.parent().unwrap(), WatchMask::MODIFY)
        .unwrap();
    let name = door.file_name().unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let events = inotify.read_events_blocking(&mut buf).unwrap();
        if events.into_iter().any(|e| e.name == Some(name)) {
            return;
        }
    }
}

fn flood_and_rightful_client(dir: &Path, wrk_bin: &Path) -> (Figures, Figures) {
    let (door_dir, door_block) = doors(dir, 4);
    let body =
        format!("[limits]\nissues_per_minute = 0\n[knockd]\nreload = \"none\"\n{door_block}");
    let server = Server::start(dir, "flood", &body);
    let idle = server.rss_kib("VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let player = fake_knockd(door_dir, stop.clone());
    let addr = server.addr;
    let done = Arc::new(AtomicBool::new(false));
    let rightful = {
        let done = done.clone();
        thread::spawn(move || {
            let mut ms = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let path = hmac_path("203.0.113.5", &format!("r{n}"));
                let (status, body, elapsed) = http_get(addr, &path, &["X-Real-IP: 203.0.113.5"]);
                assert_eq!(status, 200, "rightful request {n}: {body}");
                ms.push(elapsed.as_secs_f64() * 1000.0);
                thread::sleep(Duration::from_millis(100));
            }
            ms
        })
    };
    let url = format!(
        "http://{addr}/generate.php?time={}&code=ffffffffffffffffffffffffffffffff",
        now()
    );
    let (rate, p50, p99, max) = wrk(wrk_bin, &url, 2, 64, &["X-Real-IP: 198.51.100.66"]);
    done.store(true, Ordering::Relaxed);
    let ms = rightful.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    player.join().unwrap();
    let flood = Figures::measured(Some(rate), (p50, p99, max), idle, &server);
    let (p50, p99, max) = percentiles(ms);
    // The rightful client's row shows no memory: it is the same process.
    let client = Figures {
        rate: None,
        p50,
        p99,
        max,
        rss_idle_kib: 0,
        rss_peak_kib: 0,
    };
    (flood, client)
}
