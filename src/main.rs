//! The `knock-otp` binary: parse the command line, hand over to the
//! library, turn the one error that comes back into a message and an exit
//! code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = knock_otp::cli::Cli::parse();
    match knock_otp::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("knock-otp: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
