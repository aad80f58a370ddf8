//! Errors that stop knock-otp from starting. Each names the file and the
//! key at fault and says how to fix it; per-request failures never become
//! one of these (see `service::IssueError`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing wrong with the configuration, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The configuration key, e.g. `sequence.port_min` or `clients[0].key_file`.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.key, self.problem, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration (or a file it names) is not usable.
    #[error("{}", problem_lines(file, problems))]
    Config {
        file: PathBuf,
        problems: Vec<ConfigProblem>,
    },
    /// An I/O step at start-up failed; `action` says which.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The HTTP or admin listener could not be opened.
    #[error("cannot listen on {addr}: {source}; pick a free address in {key}")]
    Bind {
        addr: String,
        key: &'static str,
        source: io::Error,
    },
    /// Anything else, already phrased for the operator.
    #[error("{0}")]
    Other(String),
}

impl StartupError {
    pub fn config(file: impl Into<PathBuf>, problem: ConfigProblem) -> Self {
        StartupError::Config {
            file: file.into(),
            problems: vec![problem],
        }
    }

    /// 2 for a configuration the operator must change, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config { .. } => 2,
            _ => 1,
        }
    }
}

fn problem_lines(file: &std::path::Path, problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect();
    lines.join("\nknock-otp: ")
}
