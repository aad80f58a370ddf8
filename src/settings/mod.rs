//! The checked configuration. `Settings::load` reads the raw file and
//! environment, loads the key files and turns every value into a type
//! that cannot be wrong; code past this point never re-checks. Every
//! problem is collected, so `check` can list them all at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::auth::{Client, Scheme, Window};
use crate::client_addr::{AddrPolicy, ClientIpHeader};
use crate::config::RawConfig;
use crate::error::{ConfigProblem, StartupError};
use crate::keys::read_key_file;
use crate::limits::Budget;
use crate::sequence::{MAX_KNOCKS, Proto, SequenceSpec};

mod doors;

pub use doors::{DoorSettings, KnockdLocator, PidSource, ReloadMode};
use doors::{check_doors, check_reload};

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub path: String,
    pub addr_policy: AddrPolicy,
    pub ip_echo_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    pub window: Window,
    pub replay_protection: bool,
    pub clients: Vec<Client>,
    pub sequence: SequenceSpec,
    pub ttl: Duration,
    pub reload: ReloadMode,
    pub confirm_timeout: Duration,
    pub queue_timeout: Duration,
    pub doors: Vec<DoorSettings>,
    /// Rejected requests per client address; `None` when turned off.
    pub reject_budget: Option<Budget>,
    /// Issues per client; `None` when turned off.
    pub issue_budget: Option<Budget>,
    pub admin_listen: Option<SocketAddr>,
}

impl Settings {
    /// Loads and checks `file` (plus environment overrides).
    pub fn load(file: &Path) -> Result<Settings, StartupError> {
        let raw = RawConfig::load(file)?;
        Settings::from_raw(&raw).map_err(|problems| StartupError::Config {
            file: file.to_path_buf(),
            problems,
        })
    }

    /// Checks every value; all problems are returned, not just the first.
    pub fn from_raw(raw: &RawConfig) -> Result<Settings, Vec<ConfigProblem>> {
        let mut p = Problems::default();
        let http = check_http(raw, &mut p);
        let clients = check_clients(raw, &mut p);
        let sequence = check_sequence(raw, &mut p);
        let reload = check_reload(&raw.knockd.reload, &mut p);
        let doors = check_doors(&raw.knockd.doors, reload, &mut p);
        let auth = &raw.auth;
        p.check(
            auth.max_age_secs <= 3600,
            "auth.max_age_secs",
            "is over an hour",
            "use a few seconds (default 3)",
        );
        p.check(
            auth.max_future_secs <= 3600,
            "auth.max_future_secs",
            "is over an hour",
            "use a few seconds (default 5)",
        );
        let seq = &raw.sequence;
        p.check(
            seq.ttl_secs >= 1,
            "sequence.ttl_secs",
            "is 0",
            "give clients at least a few seconds (default 15)",
        );
        let k = &raw.knockd;
        p.check(
            (1..=60_000).contains(&k.confirm_timeout_ms),
            "knockd.confirm_timeout_ms",
            "must be between 1 and 60000",
            "use the default 2000 unless knockd is slow to reload",
        );
        p.check(
            k.queue_timeout_ms <= 600_000,
            "knockd.queue_timeout_ms",
            "is over 10 minutes",
            "use the default 10000",
        );
        let admin_listen = parse_optional_addr(&raw.admin.listen, "admin.listen", &mut p);
        if !p.0.is_empty() {
            return Err(p.0);
        }
        // Every Option below is Some: a None added a problem above.
        Ok(Settings {
            http: http.expect("checked"),
            window: Window {
                max_age_secs: auth.max_age_secs,
                max_future_secs: auth.max_future_secs,
            },
            replay_protection: auth.replay_protection,
            clients,
            sequence: sequence.expect("checked"),
            ttl: Duration::from_secs(seq.ttl_secs),
            reload: reload.expect("checked"),
            confirm_timeout: Duration::from_millis(k.confirm_timeout_ms),
            queue_timeout: Duration::from_millis(k.queue_timeout_ms),
            doors,
            reject_budget: Budget::new(raw.limits.rejects_per_minute, raw.limits.reject_burst),
            issue_budget: Budget::new(raw.limits.issues_per_minute, raw.limits.issue_burst),
            admin_listen: admin_listen.unwrap_or(None),
        })
    }
}

#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn add(
        &mut self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(ConfigProblem::new(key, problem, fix));
    }

    pub(crate) fn check(&mut self, ok: bool, key: &str, problem: &str, fix: &str) {
        if !ok {
            self.add(key, problem, fix);
        }
    }
}

fn check_http(raw: &RawConfig, p: &mut Problems) -> Option<HttpSettings> {
    let h = &raw.http;
    let listen = match h.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "http.listen",
                format!("{:?} is not an address:port", h.listen),
                "write e.g. \"127.0.0.1:8080\"",
            );
            None
        }
    };
    p.check(
        h.path.starts_with('/'),
        "http.path",
        "must start with /",
        "keep the legacy \"/generate.php\"",
    );
    let mut trusted = Vec::new();
    for (i, t) in h.trusted_proxies.iter().enumerate() {
        match parse_net(t) {
            Some(net) => trusted.push(net),
            None => p.add(
                format!("http.trusted_proxies[{i}]"),
                format!("{t:?} is not an address or CIDR network"),
                "write e.g. \"127.0.0.1/32\"",
            ),
        }
    }
    let header = match h.client_ip_header.to_ascii_lowercase().as_str() {
        "x-real-ip" => Some(ClientIpHeader::XRealIp),
        "x-forwarded-for" => Some(ClientIpHeader::XForwardedFor),
        other => {
            p.add(
                "http.client_ip_header",
                format!("{other:?} is not supported"),
                "use \"x-real-ip\" or \"x-forwarded-for\"",
            );
            None
        }
    };
    let echo = (!h.ip_echo_path.is_empty()).then(|| h.ip_echo_path.clone());
    if let Some(e) = &echo {
        p.check(
            e.starts_with('/'),
            "http.ip_echo_path",
            "must start with / (or be \"\" to turn it off)",
            "keep \"/knock-otp/ip\"",
        );
        p.check(
            *e != h.path,
            "http.ip_echo_path",
            "is the same as http.path",
            "give the echo its own path",
        );
    }
    Some(HttpSettings {
        listen: listen?,
        path: h.path.clone(),
        addr_policy: AddrPolicy {
            trusted_proxies: trusted,
            header: header?,
        },
        ip_echo_path: echo,
    })
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn check_clients(raw: &RawConfig, p: &mut Problems) -> Vec<Client> {
    if raw.clients.is_empty() {
        p.add(
            "clients",
            "no client is configured",
            "add a [[clients]] entry with name, key_file and scheme",
        );
    }
    let mut names = HashSet::new();
    let mut clients = Vec::new();
    for (i, c) in raw.clients.iter().enumerate() {
        let key = |field: &str| format!("clients[{i}].{field}");
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            p.add(
                key("name"),
                format!("{:?} is not a usable name", c.name),
                "use 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        } else if !names.insert(c.name.clone()) {
            p.add(
                key("name"),
                format!("{:?} is used twice", c.name),
                "give every client its own name",
            );
        }
        let scheme = c
            .scheme
            .parse::<Scheme>()
            .map_err(|e| p.add(key("scheme"), e, "set scheme to legacy-md5 or hmac-sha256"))
            .ok();
        if c.key_file.is_empty() {
            p.add(
                key("key_file"),
                "is missing",
                "point key_file at a file holding the client's key (mode 600)",
            );
            continue;
        }
        let path = PathBuf::from(&c.key_file);
        let secret = read_key_file(&path)
            .map_err(|e| {
                p.add(
                    key("key_file"),
                    format!("{}: {e}", path.display()),
                    e.fix(&path),
                )
            })
            .ok();
        if let (Some(scheme), Some(key), true) = (scheme, secret, name_ok) {
            clients.push(Client {
                name: c.name.clone(),
                scheme,
                key,
            });
        }
    }
    clients
}

fn check_sequence(raw: &RawConfig, p: &mut Problems) -> Option<SequenceSpec> {
    let s = &raw.sequence;
    let before = p.0.len();
    p.check(
        (1..=MAX_KNOCKS as u64).contains(&s.length),
        "sequence.length",
        "must be between 1 and 32 (knockd's limit)",
        "use 5, the legacy count",
    );
    p.check(
        (1..=65535).contains(&s.port_min),
        "sequence.port_min",
        "must be a port between 1 and 65535",
        "use e.g. 15000",
    );
    p.check(
        (1..=65535).contains(&s.port_max),
        "sequence.port_max",
        "must be a port between 1 and 65535",
        "use e.g. 25000",
    );
    p.check(
        s.port_min <= s.port_max,
        "sequence.port_min",
        "is above sequence.port_max",
        "swap them or widen the range",
    );
    let mut protocols = Vec::new();
    for (i, name) in s.protocols.iter().enumerate() {
        match name.to_ascii_lowercase().parse::<Proto>() {
            Ok(proto) if !protocols.contains(&proto) => protocols.push(proto),
            Ok(_) => p.add(
                format!("sequence.protocols[{i}]"),
                format!("{name:?} is listed twice"),
                "list each protocol once",
            ),
            Err(()) => p.add(
                format!("sequence.protocols[{i}]"),
                format!("{name:?} is not tcp or udp"),
                "use [\"tcp\", \"udp\"]",
            ),
        }
    }
    if s.protocols.is_empty() {
        p.add(
            "sequence.protocols",
            "is empty",
            "use [\"tcp\", \"udp\"] or one of them",
        );
    }
    for (i, port) in s.exclude_ports.iter().enumerate() {
        p.check(
            (1..=65535).contains(port),
            &format!("sequence.exclude_ports[{i}]"),
            "is not a port",
            "list ports between 1 and 65535",
        );
    }
    if p.0.len() > before {
        return None;
    }
    let excluded: HashSet<u64> = s.exclude_ports.iter().copied().collect();
    let ports: Vec<u16> = (s.port_min..=s.port_max)
        .filter(|x| !excluded.contains(x))
        .map(|x| x as u16)
        .collect();
    let available = ports.len();
    let spec = SequenceSpec::new(s.length as usize, ports, protocols);
    if spec.is_none() {
        p.add(
            "sequence.port_min",
            format!(
                "the range minus exclude_ports leaves {available} ports, fewer than length {}",
                s.length
            ),
            "widen port_min..port_max or exclude fewer ports",
        );
    }
    spec
}

fn parse_optional_addr(text: &str, key: &str, p: &mut Problems) -> Option<Option<SocketAddr>> {
    if text.is_empty() {
        return Some(None);
    }
    match text.parse() {
        Ok(a) => Some(Some(a)),
        Err(_) => {
            p.add(
                key,
                format!("{text:?} is not an address:port"),
                "write e.g. \"127.0.0.1:9180\", or \"\" to turn it off",
            );
            None
        }
    }
}
