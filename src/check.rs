//! `knock-otp check`: everything `serve` would refuse, plus what would
//! only fail at the first request (door files not writable, knockd not
//! found), reported one line per problem, like `nginx -t`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::door_file;
use crate::error::StartupError;
use crate::knockd;
use crate::settings::{DoorSettings, KnockdLocator, Settings};

/// Runs every check and prints the verdict; exit 0 only when all pass.
pub fn run(config: &Path) -> ExitCode {
    let problems = match Settings::load(config) {
        Ok(settings) => runtime_problems(&settings),
        Err(StartupError::Config { file, problems }) => problems
            .iter()
            .map(|p| format!("{}: {p}", file.display()))
            .collect(),
        Err(other) => vec![other.to_string()],
    };
    if problems.is_empty() {
        println!(
            "knock-otp: configuration file {} test is successful",
            config.display()
        );
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("knock-otp: {p}");
        }
        eprintln!(
            "knock-otp: configuration file {} test failed",
            config.display()
        );
        ExitCode::FAILURE
    }
}

/// Problems a valid configuration can still meet on this machine.
pub fn runtime_problems(settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![format!("cannot start a runtime for the knockd checks: {e}")],
    };
    for door in &settings.doors {
        problems.extend(door_file_problem(door));
        problems.extend(runtime.block_on(knockd_problem(door)));
    }
    problems
}

fn door_file_problem(door: &DoorSettings) -> Option<String> {
    let key = format!("knockd.doors[{}].sequence_file", door.index);
    let path = &door.sequence_file;
    let dir = path.parent().unwrap_or(Path::new("/"));
    if let Err(e) = tempfile::tempfile_in(dir) {
        return Some(format!(
            "{key}: cannot create files in {}: {e}; make the directory writable by the user \
                knock-otp runs as",
            dir.display()
        ));
    }
    match door_file::others_have_access(path) {
        Ok(true) => Some(format!(
            "{key}: {} is open to others; run chmod o= {} (knock-otp rewrites it with the right \
                mode at start)",
            path.display(),
            path.display()
        )),
        _ => None,
    }
}

async fn knockd_problem(door: &DoorSettings) -> Option<String> {
    let key = format!("knockd.doors[{}]", door.index);
    if let KnockdLocator::Command(argv, _) = &door.knockd
        && find_program(&argv[0]).is_none()
    {
        return Some(format!(
            "{key}.reload_command: {:?} is not an executable program; give its full path",
            argv[0]
        ));
    }
    let src = door.knockd.pid_source()?;
    knockd::find_pid(src)
        .await
        .err()
        .map(|e| format!("{key}: {e}; start the door's knockd (systemctl start knockd)"))
}

/// Resolves a program name as `execvp` would.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}
