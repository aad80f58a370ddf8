//! Network namespaces for the many-clients tests: a server namespace
//! reached through a bridge (in a "switch" namespace) by client
//! namespaces, each with its own address. Every namespace, and every
//! process still in it, is removed on drop, also when a test fails.

use std::process::Command;

/// The server's interface; knockd listens on it (design, fact 7).
pub const SERVER_IFACE: &str = "srv0";

pub(super) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command run inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// The server namespace and the client namespaces, joined by a bridge in
/// a switch namespace, on 10.77.NET.0/24: the server is .1, client i is
/// .(10+i). Nothing lives in the root namespace.
pub struct Lan {
    /// Every namespace made so far, for clean-up.
    made: Vec<String>,
    pub server: String,
    pub clients: Vec<String>,
    net: u8,
}

impl Lan {
    /// `tag` and the process id make the names unique per test and run.
    pub fn new(tag: &str, net: u8, clients: usize) -> Lan {
        let base = format!("ko{}-{tag}", std::process::id());
        let mut lan = Lan {
            made: Vec::new(),
            server: format!("{base}-srv"),
            clients: (0..clients).map(|i| format!("{base}-c{i}")).collect(),
            net,
        };
        let switch = format!("{base}-sw");
        for ns in [&switch, &lan.server].into_iter().chain(&lan.clients) {
            ip(&["netns", "add", ns]);
            lan.made.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);

        let server_cidr = format!("{}/24", lan.server_ip());
        lan.plug(&switch, &lan.server, SERVER_IFACE, "p-srv", &server_cidr);
        for (i, ns) in lan.clients.iter().enumerate() {
            let cidr = format!("{}/24", lan.client_ip(i));
            lan.plug(&switch, ns, "eth0", &format!("p-c{i}"), &cidr);
        }
        lan
    }

    /// A veth pair made directly inside `ns` and the switch, the switch end
    /// on the bridge, the `ns` end holding `cidr`.
    fn plug(&self, switch: &str, ns: &str, iface: &str, port: &str, cidr: &str) {
        ip(&[
            "link", "add", iface, "netns", ns, "type", "veth", "peer", "name", port, "netns",
            switch,
        ]);
        ip(&["-n", switch, "link", "set", port, "master", "br0", "up"]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", iface]);
        ip(&["-n", ns, "link", "set", iface, "up"]);
    }

    pub fn server_ip(&self) -> String {
        format!("10.77.{}.1", self.net)
    }

    pub fn client_ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.net, 10 + i)
    }

    /// `ip netns exec SERVER`, as the harness's `prefix` argument.
    pub fn server_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.server]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // knockd's stop_command children sleep cmd_timeout, sshd's
            // sessions and ssh clients may still run: none may outlive us.
            for _ in 0..5 {
                let out = Command::new("ip").args(["netns", "pids", ns]).output();
                let pids: Vec<i32> = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
