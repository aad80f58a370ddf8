//! The knockd side: finding a door's knockd process and making it re-read
//! its door file, by SIGHUP or by the operator's command. A pid is
//! signalled only after `/proc/PID/comm` says `knockd`, since a service
//! holding CAP_KILL must never signal some other process.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::settings::{KnockdLocator, PidSource};

/// How long `systemctl show` may take to name a unit's main pid.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum ReloadError {
    /// No knockd process where the door says it lives.
    NotRunning(String),
    /// The pid belongs to something else.
    WrongProcess {
        pid: i32,
        comm: String,
    },
    SignalFailed {
        pid: i32,
        errno: nix::Error,
    },
    CommandFailed(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NotRunning(why) => write!(f, "knockd is not running ({why})"),
            ReloadError::WrongProcess { pid, comm } => {
                write!(f, "pid {pid} is {comm:?}, not knockd; the pidfile is stale")
            }
            ReloadError::SignalFailed { pid, errno } => write!(
                f,
                "cannot signal knockd pid {pid}: {errno}; run knock-otp as root or with CAP_KILL"
            ),
            ReloadError::CommandFailed(why) => write!(f, "reload command failed: {why}"),
        }
    }
}

/// Finds the door's knockd pid, checked to be knockd's.
pub async fn find_pid(source: &PidSource) -> Result<i32, ReloadError> {
    let pid = match source {
        PidSource::Pidfile(path) => read_pidfile(path)?,
        PidSource::SystemdUnit(unit) => systemd_main_pid(unit).await?,
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|_| ReloadError::NotRunning(format!("no process {pid}")))?;
    let comm = comm.trim_end().to_owned();
    if comm != "knockd" {
        return Err(ReloadError::WrongProcess { pid, comm });
    }
    Ok(pid)
}

fn read_pidfile(path: &Path) -> Result<i32, ReloadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReloadError::NotRunning(format!("pidfile {}: {e}", path.display())))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(ReloadError::NotRunning(format!(
            "pidfile {} holds no pid",
            path.display()
        ))),
    }
}

async fn systemd_main_pid(unit: &str) -> Result<i32, ReloadError> {
    let args = ["show", "-p", "MainPID", "--value", unit];
    let out = run_with_timeout("systemctl", &args, SYSTEMCTL_TIMEOUT).await?;
    match out.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(ReloadError::NotRunning(format!(
            "systemd unit {unit} has no main pid"
        ))),
    }
}

/// Makes the door's knockd re-read its configuration and door file.
/// Returning means the request went out, not that knockd has acted:
/// the caller waits for the re-open (see `watcher`). Returns knockd's pid
/// when the door says where to find it.
pub async fn reload(
    locator: &KnockdLocator,
    timeout: Duration,
) -> Result<Option<i32>, ReloadError> {
    // knockd re-reads its doors inside the signal handler, freeing what the
    // interrupted code may still be using: a SIGHUP while it finishes a
    // knock (marking the line used, rebuilding its filter) crashed it in
    // tests. So it is reloaded only while it sleeps in poll().
    let pid = match locator.pid_source() {
        Some(src) => {
            let pid = find_pid(src).await?;
            wait_until_idle(pid, timeout).await?;
            Some(pid)
        }
        None => None,
    };
    match (locator, pid) {
        (KnockdLocator::Command(argv, _), _) => run_with_timeout(&argv[0], &argv[1..], timeout)
            .await
            .map(|_| pid),
        (KnockdLocator::Signal(_), Some(pid)) => {
            kill(Pid::from_raw(pid), Signal::SIGHUP)
                .map_err(|errno| ReloadError::SignalFailed { pid, errno })?;
            Ok(Some(pid))
        }
        _ => Ok(None),
    }
}

/// Waits until the single-threaded knockd sleeps in poll() with no SIGHUP
/// pending. Used twice around a reload: before the signal (see `reload`)
/// and after it, because knockd re-opens the door file early in its
/// handler but installs the new packet filter only at the end, and a
/// knock arriving in between is dropped by the old filter (design, fact
/// 5): the re-open alone does not mean the sequence is armed. There is no
/// event for either; /proc/PID/status is readable by any user and knockd
/// is usually idle at the first look.
pub async fn wait_until_idle(pid: i32, timeout: Duration) -> Result<(), ReloadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| ReloadError::NotRunning(format!("process {pid} is gone")))?;
        if handler_done(&status) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ReloadError::NotRunning(format!(
                "knockd pid {pid} stayed busy for {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// True when a /proc/PID/status text shows no SIGHUP pending (for the
/// thread or the process) and a process that is not running.
fn handler_done(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let hup_pending = |name: &str| {
        field(name)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_none_or(|mask| mask & 1 != 0)
    };
    let running = field("State:").is_none_or(|s| s.starts_with('R'));
    !running && !hup_pending("SigPnd:") && !hup_pending("ShdPnd:")
}

/// Runs a program without a shell; its stdout on success.
async fn run_with_timeout<S: AsRef<std::ffi::OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<String, ReloadError> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(ReloadError::CommandFailed(format!(
                "{program} took longer than {timeout:?}"
            )));
        }
        Ok(Err(e)) => {
            return Err(ReloadError::CommandFailed(format!(
                "cannot run {program}: {e}"
            )));
        }
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(ReloadError::CommandFailed(format!(
            "{program} exited with {}: {first}",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pidfile_naming_another_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("knockd.pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        let err = find_pid(&PidSource::Pidfile(pidfile)).await.unwrap_err();
        assert!(matches!(err, ReloadError::WrongProcess { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_missing_pidfile_means_knockd_is_not_running() {
        let err = find_pid(&PidSource::Pidfile("/nonexistent/knockd.pid".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, ReloadError::NotRunning(_)), "{err}");
    }

    #[test]
    fn a_reload_is_done_when_sighup_is_no_longer_pending_and_knockd_sleeps() {
        let status = |state: &str, sig: &str, shd: &str| {
            format!("Name:\tknockd\nState:\t{state}\nSigPnd:\t{sig}\nShdPnd:\t{shd}\n")
        };
        let zero = "0000000000000000";
        assert!(handler_done(&status("S (sleeping)", zero, zero)));
        assert!(!handler_done(&status("R (running)", zero, zero)));
        assert!(!handler_done(&status(
            "S (sleeping)",
            zero,
            "0000000000000001"
        )));
        assert!(!handler_done(&status(
            "S (sleeping)",
            "0000000000000001",
            zero
        )));
        assert!(handler_done(&status(
            "S (sleeping)",
            zero,
            "0000000000004000"
        )));
        assert!(!handler_done("garbage"));
    }

    #[tokio::test]
    async fn a_sleeping_process_counts_as_idle_and_a_missing_one_as_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // `sleep` may not have reached its nanosleep yet: give it the full timeout.
        assert!(wait_until_idle(pid, Duration::from_secs(10)).await.is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(wait_until_idle(pid, Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test]
    async fn a_failing_reload_command_is_reported_with_its_output() {
        let argv = vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()];
        let cmd = KnockdLocator::Command(argv, None);
        let err = reload(&cmd, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_reload_command_times_out() {
        let cmd = KnockdLocator::Command(vec!["sleep".into(), "30".into()], None);
        let err = reload(&cmd, Duration::from_millis(100)).await.unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
