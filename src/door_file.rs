//! The door file knockd reads its one-time sequences from. knock-otp
//! writes it whole, atomically, as two lines: the issued sequence (or a
//! decoy) and a decoy that is never disclosed, so that knockd always has
//! a valid line left and never disables the door (design, facts 1-3, 9).

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::sequence::Sequence;

/// The file's contents: each line starts with the space knockd turns into
/// `#` once the line is used.
pub fn contents(first: &Sequence, second: &Sequence) -> String {
    format!("{}\n{}\n", first.door_line(), second.door_line())
}

/// 0600 when knock-otp runs as root (knockd, root too, can open it);
/// otherwise 0660 so knockd reaches it through the group it is given,
/// since Debian's knockd runs without CAP_DAC_OVERRIDE (design, fact 6).
pub fn mode_for_this_process() -> u32 {
    if nix::unistd::geteuid().is_root() {
        0o600
    } else {
        0o660
    }
}

/// Replaces `path` with `contents`: a temporary file in the same directory
/// gets its mode before any byte is written, is synced, renamed over the
/// old file and the directory is synced. A failure at any step leaves the
/// old file untouched.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("door file path has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // The umask may have narrowed the mode; set it exactly, still empty.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.write_all(contents.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// True when knockd would find a usable line: not empty, not a comment,
/// a `port[:proto],…` list of 1 to 32 knocks.
pub fn has_valid_line(text: &str) -> bool {
    text.lines().any(is_valid_line)
}

pub fn is_valid_line(line: &str) -> bool {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return false;
    }
    let knocks: Vec<&str> = line.split(',').collect();
    knocks.len() <= crate::sequence::MAX_KNOCKS
        && knocks.iter().all(|k| {
            let (port, proto) = k.trim().split_once(':').unwrap_or((k.trim(), "tcp"));
            port.parse::<u16>().is_ok_and(|p| p > 0) && matches!(proto, "tcp" | "udp")
        })
}

/// Removes temporary files a killed knock-otp left next to `path`
/// (`.NAME.*.tmp`); returns how many went.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".tmp")
        })
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Reads a door file's metadata for `check`: its mode must give others nothing.
pub fn others_have_access(path: &Path) -> io::Result<bool> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o007 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::{Proto, SequenceSpec};

    fn seq() -> Sequence {
        SequenceSpec::new(3, (20000..20010).collect(), vec![Proto::Tcp])
            .unwrap()
            .draw()
            .unwrap()
    }

    #[test]
    fn a_door_file_has_two_valid_lines_each_with_a_leading_space() {
        let text = contents(&seq(), &seq());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.starts_with(' ') && is_valid_line(l)));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_used_line_is_no_longer_valid_but_the_decoy_is() {
        let text = contents(&seq(), &seq()).replacen(' ', "#", 1);
        assert!(!is_valid_line(text.lines().next().unwrap()));
        assert!(has_valid_line(&text));
    }

    #[test]
    fn the_write_replaces_the_file_with_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("door-0.seq");
        fs::write(&path, "old\n").unwrap();
        write_atomic(&path, " 1:tcp\n 2:udp\n", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), " 1:tcp\n 2:udp\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("door-0.seq");
        assert!(write_atomic(&path, " 1:tcp\n", 0o600).is_err());
    }

    #[test]
    fn stale_temporary_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("door-0.seq");
        fs::write(dir.path().join(".door-0.seq.abc123.tmp"), "x").unwrap();
        fs::write(dir.path().join(".door-1.seq.abc123.tmp"), "x").unwrap();
        fs::write(&path, " 1:tcp\n").unwrap();
        assert_eq!(remove_stale_temps(&path), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn invalid_lines_are_recognised() {
        for line in ["", "#1:tcp", "1:icmp", "0:tcp", "70000", "a,b"] {
            assert!(!is_valid_line(line), "{line:?}");
        }
        let long: Vec<String> = (1..=33).map(|p| p.to_string()).collect();
        assert!(!is_valid_line(&long.join(",")));
    }
}
