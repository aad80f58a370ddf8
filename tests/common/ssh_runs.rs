//! Running ssh from client namespaces: one at a time or all at the same
//! instant, with what each printed and how long it took.

use std::process::{Command, ExitStatus, Output};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// What one ssh run printed, and how long it took from its start.
pub struct SshRun {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl SshRun {
    fn from_output(label: String, out: Output, elapsed: Duration) -> SshRun {
        SshRun {
            label,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// The remote `echo ok` came back.
    pub fn got_in(&self) -> bool {
        self.status.success() && self.stdout == "ok\n"
    }

    /// A `name=NUMBER` word the ProxyCommand printed to stderr.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.stderr
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    }
}

impl std::fmt::Display for SshRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} after {:?}, stdout {:?}, stderr {:?}",
            self.label, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Starts every command at the same instant (a barrier), waits for all
/// to exit, and returns what each printed, in the order given.
pub fn run_all_at_once(cmds: Vec<(String, Command)>) -> Vec<SshRun> {
    let barrier = Arc::new(Barrier::new(cmds.len()));
    let threads: Vec<_> = cmds
        .into_iter()
        .map(|(label, mut cmd)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let out = cmd.output().unwrap();
                SshRun::from_output(label, out, started.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Runs one command to its end.
pub fn run_one(label: &str, mut cmd: Command) -> SshRun {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    SshRun::from_output(label.to_owned(), out, started.elapsed())
}

/// Fails with every run's output unless every run got in.
pub fn assert_all_got_in(runs: &[SshRun]) {
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.got_in())
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} ssh runs did not get in:\n{}",
        failed.len(),
        runs.len(),
        failed.join("\n")
    );
}
