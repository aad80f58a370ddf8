//! knock-otp hands out one-time port-knock sequences for stock knockd.
//!
//! The modules follow the path of a request: `http` receives it, `query`
//! and `client_addr` read it, `auth` verifies the code, `doors` picks a
//! knockd door, `sequence` draws the knocks, `door_file` writes them where
//! knockd reads, `knockd` makes knockd re-read and `watcher` sees it do so.

pub mod admin;
pub mod auth;
pub mod check;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod demo;
pub mod door_file;
pub mod doors;
pub mod error;
pub mod http;
pub mod keys;
pub mod knockd;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod query;
pub mod replay;
pub mod sequence;
pub mod service;
pub mod settings;
pub mod teapot;
pub mod watcher;

use std::process::ExitCode;

use cli::{Cli, Command};
pub use error::StartupError;

/// Runs one subcommand to its end.
pub fn run(cli: Cli) -> Result<ExitCode, StartupError> {
    match cli.command {
        Command::Serve(args) => {
            logging::init();
            let settings = settings::Settings::load(&args.config)?;
            http::serve(settings, Some(args.config), |_| ())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => Ok(check::run(&args.config)),
        Command::Code(args) => {
            println!("{}", auth::code_for_cli(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            logging::init();
            demo::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
