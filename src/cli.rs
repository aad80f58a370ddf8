//! Command-line interface: the subcommands and their options. The doc
//! comments below are the `--help` text an operator reads.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::auth::Scheme;

/// Hands out one-time port-knock sequences for stock knockd, in place of
/// the legacy generate.php.
#[derive(Debug, Parser)]
#[command(name = "knock-otp", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: answer knock requests and drive knockd.
    Serve(ConfigArgs),
    /// Validate the configuration, key files, door files and knockd, then
    /// exit non-zero with one line per problem (like `nginx -t`).
    Check(ConfigArgs),
    /// Print the code a client would send, for scripts and tests.
    Code(CodeArgs),
    /// Run the whole loop on this machine with an ephemeral key, on
    /// loopback, and print the commands that use it.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The TOML configuration file; every key can be overridden from the
    /// environment as KNOCK_OTP__SECTION__KEY.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CodeArgs {
    /// File holding the client's key (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// The client address the server sees (as nginx writes $remote_addr).
    #[arg(long, value_name = "ADDRESS")]
    pub ip: IpAddr,
    /// Unix time in seconds; defaults to now.
    #[arg(long, value_name = "SECONDS")]
    pub time: Option<u64>,
    /// legacy-md5 (generate.php's md5) or hmac-sha256.
    #[arg(long, default_value = "legacy-md5", value_parser = parse_scheme)]
    pub scheme: Scheme,
    /// Optional nonce for hmac-sha256: 1-64 characters of [A-Za-z0-9_-].
    #[arg(long)]
    pub nonce: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Do not start knockd even when running as root with knockd installed.
    #[arg(long)]
    pub no_knockd: bool,
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse()
}
