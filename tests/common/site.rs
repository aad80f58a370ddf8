//! The server side of the many-clients tests, in the namespaces of a
//! `Lan`: sshd with key-only login, an iptables firewall closing port 22,
//! one knockd per door and knock-otp; and the ssh command lines clients
//! run. Processes stop on drop, before their namespaces go.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{KnockOtp, Knockd, KnockdDoor, Proc, require, require_root, write_key};

use super::netns::{Lan, SERVER_IFACE, in_ns};

/// knock-otp's plain-HTTP port on the server address.
pub const HTTP_PORT: u16 = 8080;
/// How long one ssh run may take before `timeout` ends it.
pub const SSH_LIMIT: Duration = Duration::from_secs(60);
/// How long knockd keeps a client's firewall rule: short, as in a real
/// set-up, so that later connects need a knock of their own.
const CMD_TIMEOUT_SECS: u32 = 5;

/// Every program the fixtures run, with its Debian package.
const PROGRAMS: [(&str, &str); 13] = [
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("knockd", "knockd"),
    ("knock", "knockd"),
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("curl", "curl"),
    ("nc", "netcat-openbsd"),
    ("md5sum", "coreutils"),
    ("timeout", "coreutils"),
    ("od", "coreutils"),
    ("bash", "bash"),
];

/// Fails the test (never skips it) unless root and every program is there.
pub fn require_all() {
    require_root();
    for (program, package) in PROGRAMS {
        require(program, package);
    }
}

/// Runs `ip ARGS`, failing the test with ip's message.
/// What a test's site looks like.
pub struct SiteSpec<'a> {
    /// Unique per test: part of the namespace names.
    pub tag: &'a str,
    /// The third octet of the test's subnet.
    pub net: u8,
    /// One client namespace per entry, named c0, c1, … in knock-otp,
    /// with this scheme.
    pub schemes: &'a [&'a str],
    pub doors: usize,
    pub ttl_secs: u64,
    pub queue_timeout_ms: u64,
    pub port_min: u16,
}

impl SiteSpec<'_> {
    /// `clients` legacy-md5 clients (at most 16) and the design's defaults.
    pub fn legacy(tag: &str, net: u8, clients: usize, doors: usize) -> SiteSpec<'_> {
        static LEGACY: [&str; 16] = ["legacy-md5"; 16];
        SiteSpec {
            tag,
            net,
            schemes: &LEGACY[..clients],
            doors,
            ttl_secs: 15,
            queue_timeout_ms: 10_000,
            port_min: 15_000 + u16::from(net) * 400,
        }
    }
}

/// A whole site: the LAN, sshd behind a firewall that drops port 22,
/// one knockd per door opening it for knockers, and knock-otp. Fields
/// drop in order: knock-otp, knockd, sshd, then the namespaces.
pub struct Site {
    pub otp: KnockOtp,
    pub knockds: Vec<Knockd>,
    pub sshd: Proc,
    pub lan: Lan,
    /// Each client's knock-otp key file.
    pub keys: Vec<PathBuf>,
    /// The ssh identity every client logs in with.
    pub identity: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn start(spec: &SiteSpec) -> Site {
        require_all();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lan = Lan::new(spec.tag, spec.net, spec.schemes.len());
        let prefix = lan.server_prefix();

        let identity = d.join("id_ed25519");
        keygen(&identity);
        keygen(&d.join("host_ed25519"));
        fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let sshd = start_sshd(d, &lan);
        firewall(&lan);

        let knockds: Vec<Knockd> = (0..spec.doors)
            .map(|i| {
                let conf = door_conf(d, i);
                Knockd::start(
                    &conf,
                    SERVER_IFACE,
                    &d.join(format!("knockd-{i}.pid")),
                    &prefix,
                )
            })
            .collect();

        let keys: Vec<PathBuf> = (0..spec.schemes.len())
            .map(|i| {
                write_key(
                    d,
                    &format!("c{i}"),
                    &format!("key-of-c{i}-{}", std::process::id()),
                )
            })
            .collect();
        let config = d.join("knock-otp.toml");
        fs::write(&config, otp_config(d, spec, &lan, &keys)).unwrap();
        let otp = KnockOtp::start(&config, &prefix);
        // Every door's knockd has taken knock-otp's fresh decoys.
        otp.proc
            .out
            .wait_for_nth("event=door-ready", spec.doors, Duration::from_secs(20));
        Site {
            otp,
            knockds,
            sshd,
            lan,
            keys,
            identity,
            dir,
        }
    }

    pub fn server_ip(&self) -> String {
        self.lan.server_ip()
    }

    /// A command run in client `i`'s namespace.
    pub fn client(&self, i: usize, program: &str) -> Command {
        in_ns(&self.lan.clients[i], program)
    }

    /// Addresses knockd opened the firewall for, one line per opening.
    pub fn opened(&self) -> Vec<String> {
        fs::read_to_string(self.opened_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn opened_file(&self) -> PathBuf {
        self.dir.path().join("opened")
    }

    /// The legacy client line of the design, as a ProxyCommand (ssh expands
    /// %h and %p; %% is a literal %), with plain HTTP on port 8080.
    pub fn legacy_proxy(&self, i: usize) -> String {
        format!(
            // One line: it becomes an ssh ProxyCommand, the legacy shape.
            concat!(
                r#"bash -c 'T=$(date +%%s); "#,
                r#"C=$(printf "%%s" "{ip}$(cat {key})$T" | md5sum | cut -d" " -f1); "#,
                r#"knock %h -d 100 $(curl -sS "http://%h:{port}/generate.php?time=$T&code=$C"); "#,
                r#"sleep 0.5; nc %h %p'"#,
            ),
            port = HTTP_PORT,
            ip = self.lan.client_ip(i),
            key = self.keys[i].display(),
        )
    }

    /// The client helper as a ProxyCommand; it learns the client's address
    /// from knock-otp's echo path.
    pub fn helper_proxy(&self, i: usize, scheme: &str) -> String {
        format!(
            "{helper} -k {key} -s {scheme} -u http://%h:{HTTP_PORT}/generate.php %h %p",
            helper = helper().display(),
            key = self.keys[i].display(),
        )
    }

    /// The real ssh from client `i` through `proxy`, running `echo ok`.
    pub fn ssh(&self, i: usize, proxy: &str, limit: Duration) -> Command {
        let mut cmd = self.client(i, "timeout");
        cmd.arg(limit.as_secs().to_string())
            .args(["ssh", "-F", "/dev/null", "-i"])
            .arg(&self.identity)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            // With a ProxyCommand this bounds the wait for sshd's banner,
            // which includes knock-otp's queue.
            .arg("-o")
            .arg(format!("ConnectTimeout={}", limit.as_secs() / 2))
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg(format!("root@{}", self.server_ip()))
            .args(["echo", "ok"]);
        cmd
    }

    /// True when `nc -z -w 2` from client `i` reaches sshd.
    pub fn port_22_open_for(&self, i: usize) -> bool {
        self.client(i, "nc")
            .args(["-z", "-w", "2", &self.server_ip(), "22"])
            .status()
            .unwrap()
            .success()
    }

    /// knock-otp's log lines with `event=NAME`, as key=value maps.
    pub fn events(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let needle = format!("event={name} ");
        self.otp
            .proc
            .out
            .snapshot()
            .iter()
            .filter(|l| l.contains(&needle))
            .map(|l| fields(l))
            .collect()
    }

    /// knock-otp's issue, used and withdrawn lines, in log order.
    pub fn door_events(&self) -> Vec<BTreeMap<String, String>> {
        self.otp
            .proc
            .out
            .snapshot()
            .iter()
            .map(|l| fields(l))
            .filter(|f| {
                f.get("event")
                    .is_some_and(|e| ["issue", "used", "withdrawn"].contains(&e.as_str()))
            })
            .collect()
    }
}

/// The `key=value` words of a log line.
pub fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The client helper from this repository.
pub fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("client/knock-otp-ssh")
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "knock-otp-test",
            "-f",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// sshd in the server namespace, key-only, waited for on its own log line.
fn start_sshd(d: &Path, lan: &Lan) -> Proc {
    // sshd refuses to start without its privilege-separation directory.
    fs::create_dir_all("/run/sshd").unwrap();
    let conf = d.join("sshd_config");
    fs::write(
        &conf,
        format!(
            "ListenAddress {ip}\nPort 22\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
             MaxStartups 100\nLogLevel INFO\n",
            ip = lan.server_ip(),
            d = d.display(),
        ),
    )
    .unwrap();
    let sshd = require("sshd", "openssh-server");
    let mut cmd = in_ns(&lan.server, &sshd.display().to_string());
    cmd.args(["-D", "-e", "-f"]).arg(&conf);
    let proc = Proc::spawn("sshd", cmd);
    proc.out
        .wait_for_nth("Server listening on", 1, Duration::from_secs(20));
    proc
}

/// Port 22 is dropped unless a connection is already established or a
/// knockd rule accepts its source; everything else passes.
fn firewall(lan: &Lan) {
    for rule in [
        "-A INPUT -p tcp --dport 22 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -j DROP",
    ] {
        let out = in_ns(&lan.server, "iptables")
            .args(rule.split(' '))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables {rule}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Door `i`'s knockd config: its own one-time file, opening port 22 for
/// the knocker (and noting the address in `opened`) until cmd_timeout.
fn door_conf(d: &Path, i: usize) -> PathBuf {
    let iptables = require("iptables", "iptables");
    let rule = "INPUT -s %IP% -p tcp --dport 22 -j ACCEPT";
    let start = format!(
        "{ipt} -I {rule} && echo %IP% >> {opened}",
        ipt = iptables.display(),
        opened = d.join("opened").display()
    );
    let stop = format!("{} -D {rule}", iptables.display());
    let conf = d.join(format!("knockd-{i}.conf"));
    KnockdDoor {
        conf: &conf,
        door_file: &d.join(format!("door-{i}.seq")),
        start_command: &start,
        stop_command: Some(&stop),
        seq_timeout: 10,
    }
    .write();
    // The harness keeps a rule an hour; here it closes soon, so a client's
    // earlier knock never lets a later connect in.
    let text = fs::read_to_string(&conf).unwrap().replace(
        "cmd_timeout = 3600",
        &format!("cmd_timeout = {CMD_TIMEOUT_SECS}"),
    );
    fs::write(&conf, text).unwrap();
    conf
}

fn otp_config(d: &Path, spec: &SiteSpec, lan: &Lan, keys: &[PathBuf]) -> String {
    let mut text = format!(
        "[http]\nlisten = \"{ip}:{HTTP_PORT}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        ip = lan.server_ip()
    );
    for (i, (key, scheme)) in keys.iter().zip(spec.schemes).enumerate() {
        text.push_str(&format!(
            "[[clients]]\nname = \"c{i}\"\nkey_file = \"{}\"\nscheme = \"{scheme}\"\n",
            key.display()
        ));
    }
    text.push_str(&format!(
        "[sequence]\nttl_secs = {ttl}\nport_min = {min}\nport_max = {max}\n\
         [knockd]\nreload = \"signal\"\nconfirm_timeout_ms = 5000\nqueue_timeout_ms = {queue}\n",
        ttl = spec.ttl_secs,
        min = spec.port_min,
        max = spec.port_min + 399,
        queue = spec.queue_timeout_ms,
    ));
    for i in 0..spec.doors {
        text.push_str(&format!(
            "[[knockd.doors]]\nsequence_file = \"{}\"\npidfile = \"{}\"\n",
            d.join(format!("door-{i}.seq")).display(),
            d.join(format!("knockd-{i}.pid")).display()
        ));
    }
    text
}
