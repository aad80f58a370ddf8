//! The configuration as written: TOML plus `KNOCK_OTP__…` environment
//! overrides, landed in plain structs with the design's defaults.
//! `settings` turns these into checked types; nothing else reads them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ConfigProblem, StartupError};

/// Prefix of the environment overrides: `KNOCK_OTP__HTTP__LISTEN`.
pub const ENV_PREFIX: &str = "KNOCK_OTP";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub http: RawHttp,
    pub auth: RawAuth,
    pub clients: Vec<RawClient>,
    pub sequence: RawSequence,
    pub knockd: RawKnockd,
    pub limits: RawLimits,
    pub admin: RawAdmin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
    pub path: String,
    pub trusted_proxies: Vec<String>,
    pub client_ip_header: String,
    pub ip_echo_path: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "127.0.0.1:8080".into(),
            path: "/generate.php".into(),
            trusted_proxies: vec!["127.0.0.1/32".into(), "::1/128".into()],
            client_ip_header: "x-real-ip".into(),
            ip_echo_path: "/knock-otp/ip".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    pub max_age_secs: u64,
    pub max_future_secs: u64,
    pub replay_protection: bool,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            max_age_secs: 3,
            max_future_secs: 5,
            replay_protection: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    pub key_file: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

fn default_scheme() -> String {
    "legacy-md5".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSequence {
    pub length: u64,
    pub port_min: u64,
    pub port_max: u64,
    pub protocols: Vec<String>,
    pub exclude_ports: Vec<u64>,
    pub ttl_secs: u64,
}

impl Default for RawSequence {
    fn default() -> Self {
        RawSequence {
            length: 5,
            port_min: 15000,
            port_max: 25000,
            protocols: vec!["tcp".into(), "udp".into()],
            exclude_ports: Vec::new(),
            ttl_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawKnockd {
    pub reload: String,
    pub confirm_timeout_ms: u64,
    pub queue_timeout_ms: u64,
    pub doors: Vec<RawDoor>,
}

impl Default for RawKnockd {
    fn default() -> Self {
        RawKnockd {
            reload: "signal".into(),
            confirm_timeout_ms: 2000,
            queue_timeout_ms: 10000,
            doors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDoor {
    pub sequence_file: String,
    pub pidfile: String,
    pub systemd_unit: String,
    pub reload_command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    pub rejects_per_minute: u32,
    pub reject_burst: u32,
    pub issues_per_minute: u32,
    pub issue_burst: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            rejects_per_minute: 30,
            reject_burst: 20,
            issues_per_minute: 60,
            issue_burst: 20,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
}

impl RawConfig {
    /// Reads `file`, then the environment overrides on top of it.
    pub fn load(file: &Path) -> Result<RawConfig, StartupError> {
        if let Err(source) = std::fs::metadata(file) {
            return Err(StartupError::Io {
                action: "cannot read the configuration file",
                path: file.to_path_buf(),
                source,
            });
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("http.trusted_proxies")
            .with_list_parse_key("sequence.protocols")
            .with_list_parse_key("sequence.exclude_ports");
        let built = config::Config::builder()
            .add_source(config::File::from(file).format(config::FileFormat::Toml))
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize::<RawConfig>());
        built.map_err(|err| {
            StartupError::config(
                file,
                ConfigProblem::new(
                    "(file)",
                    err.to_string(),
                    "fix the value named above; the keys are listed in README.md",
                ),
            )
        })
    }
}
