//! `knock-otp demo`.
use crate::cli::DemoArgs;
use crate::error::StartupError;

pub fn run(_args: &DemoArgs) -> Result<(), StartupError> {
    Ok(())
}
