//! The `[knockd]` side of the checked configuration: how knockd is
//! reloaded, and each door with its file and the knockd that reads it.
//! Two doors never share a file or a knockd (design, fact 8).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Problems;
use crate::config::RawDoor;

/// How knockd is told to re-read its door file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    Signal,
    Command,
    None,
}

/// Where a door's knockd pid is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PidSource {
    Pidfile(PathBuf),
    SystemdUnit(String),
}

/// How a door's knockd is made to re-read its door file, and where its
/// pid is found (without a pid, knock-otp can only watch the re-open).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KnockdLocator {
    /// SIGHUP to the pid.
    Signal(PidSource),
    /// The operator's command; the pid, when given, for the idle checks.
    Command(Vec<String>, Option<PidSource>),
    /// `reload = "none"`: tests and the demo.
    Unmanaged,
}

impl KnockdLocator {
    pub fn pid_source(&self) -> Option<&PidSource> {
        match self {
            KnockdLocator::Signal(src) | KnockdLocator::Command(_, Some(src)) => Some(src),
            _ => None,
        }
    }

    /// What makes two doors the same knockd: the pid source, else the command.
    fn identity(&self) -> Option<String> {
        match (self.pid_source(), self) {
            (Some(src), _) => Some(format!("{src:?}")),
            (None, KnockdLocator::Command(argv, None)) => Some(format!("{argv:?}")),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DoorSettings {
    pub index: usize,
    pub sequence_file: PathBuf,
    pub knockd: KnockdLocator,
}

/// Paths no door file may live under: a web server would hand it out, as
/// it did with generate.php's sequence file.
const WEB_ROOTS: [&str; 3] = ["/var/www", "/srv/www", "/usr/share/nginx"];

pub(super) fn check_reload(text: &str, p: &mut Problems) -> Option<ReloadMode> {
    match text {
        "signal" => Some(ReloadMode::Signal),
        "command" => Some(ReloadMode::Command),
        "none" => Some(ReloadMode::None),
        other => {
            p.add(
                "knockd.reload",
                format!("{other:?} is not a reload mode"),
                "use \"signal\", \"command\" or \"none\"",
            );
            None
        }
    }
}

pub(super) fn check_doors(
    raw: &[RawDoor],
    reload: Option<ReloadMode>,
    p: &mut Problems,
) -> Vec<DoorSettings> {
    if raw.is_empty() {
        p.add(
            "knockd.doors",
            "no door is configured",
            "add [[knockd.doors]] with sequence_file = \"/run/knock-otp/door-0.seq\" and the \
                knockd's pidfile or systemd_unit",
        );
    }
    let mut files = HashSet::new();
    let mut knockds = HashSet::new();
    let mut doors = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = |field: &str| format!("knockd.doors[{i}].{field}");
        let file = PathBuf::from(&d.sequence_file);
        if !file.is_absolute() || file.file_name().is_none() {
            p.add(
                key("sequence_file"),
                format!("{:?} is not an absolute file path", d.sequence_file),
                "use e.g. /run/knock-otp/door-0.seq",
            );
            continue;
        }
        if WEB_ROOTS.iter().any(|root| file.starts_with(root)) {
            p.add(
                key("sequence_file"),
                format!("{} is under a web root", file.display()),
                "keep door files out of reach of the web server, e.g. in /run/knock-otp",
            );
        }
        let dir = file.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            p.add(
                key("sequence_file"),
                format!("directory {} does not exist", dir.display()),
                format!("create it: install -d -m 750 {}", dir.display()),
            );
        }
        if !files.insert(file.clone()) {
            p.add(
                key("sequence_file"),
                format!("{} is shared with another door", file.display()),
                "give every door its own file and its own knockd",
            );
        }
        let knockd = match locate_knockd(d, reload, &key, p) {
            Some(k) => k,
            None => continue,
        };
        if knockd.identity().is_some_and(|id| !knockds.insert(id)) {
            p.add(
                key("pidfile"),
                "names the same knockd as another door",
                "one knockd process serves one door (design, fact 8): \
                 run knockd@N.service per door",
            );
        }
        doors.push(DoorSettings {
            index: i,
            sequence_file: file,
            knockd,
        });
    }
    doors
}

fn locate_knockd(
    d: &RawDoor,
    reload: Option<ReloadMode>,
    key: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<KnockdLocator> {
    let pid_source = match (d.pidfile.is_empty(), d.systemd_unit.is_empty()) {
        (false, true) => Some(PidSource::Pidfile(PathBuf::from(&d.pidfile))),
        (true, false) => Some(PidSource::SystemdUnit(d.systemd_unit.clone())),
        (true, true) => None,
        (false, false) => {
            p.add(
                key("pidfile"),
                "both pidfile and systemd_unit are set",
                "keep one of them",
            );
            return None;
        }
    };
    match reload? {
        ReloadMode::None => Some(KnockdLocator::Unmanaged),
        ReloadMode::Command if d.reload_command.first().is_none_or(String::is_empty) => {
            p.add(
                key("reload_command"),
                "is empty while knockd.reload = \"command\"",
                "set e.g. [\"sudo\", \"-n\", \"/usr/bin/systemctl\", \"reload\", \
                    \"knockd.service\"]",
            );
            None
        }
        ReloadMode::Command => Some(KnockdLocator::Command(d.reload_command.clone(), pid_source)),
        ReloadMode::Signal => match pid_source {
            Some(src) => Some(KnockdLocator::Signal(src)),
            None => {
                p.add(
                    key("pidfile"),
                    "neither pidfile nor systemd_unit is set while knockd.reload = \"signal\"",
                    "set systemd_unit = \"knockd.service\" or the knockd pidfile",
                );
                None
            }
        },
    }
}
