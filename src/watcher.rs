//! Watching door files with inotify. knockd re-opens a door file by path
//! when it reloads (IN_OPEN) and writes `#` over a used line (IN_MODIFY);
//! both are counted per door so callers can wait for "the next one".
//! The directory is watched, not the file, because every write of
//! knock-otp renames a new inode into place.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::watch;

/// Counters of what knockd did to one door file.
#[derive(Debug)]
pub struct DoorEvents {
    /// Bumped whenever anyone opens the file: knockd's reload or start.
    pub opened: watch::Sender<u64>,
    /// Bumped whenever the file is written in place: knockd marking a use.
    pub modified: watch::Sender<u64>,
}

impl Default for DoorEvents {
    fn default() -> Self {
        DoorEvents {
            opened: watch::Sender::new(0),
            modified: watch::Sender::new(0),
        }
    }
}

impl DoorEvents {
    /// A receiver that reports only events after this call.
    pub fn next_open(&self) -> watch::Receiver<u64> {
        let mut rx = self.opened.subscribe();
        rx.mark_unchanged();
        rx
    }

    pub fn next_modify(&self) -> watch::Receiver<u64> {
        let mut rx = self.modified.subscribe();
        rx.mark_unchanged();
        rx
    }

    pub fn opens_so_far(&self) -> u64 {
        *self.opened.borrow()
    }
}

/// Starts one inotify reader per directory holding door files. Must be
/// called inside a tokio runtime; the readers live as long as it does.
pub fn spawn(files: Vec<(PathBuf, std::sync::Arc<DoorEvents>)>) -> io::Result<()> {
    let mut by_dir: HashMap<PathBuf, HashMap<OsString, std::sync::Arc<DoorEvents>>> =
        HashMap::new();
    for (path, events) in files {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        by_dir.entry(dir).or_default().insert(name, events);
    }
    for (dir, names) in by_dir {
        let inotify = Inotify::init()?;
        inotify
            .watches()
            .add(
                &dir,
                WatchMask::OPEN | WatchMask::MODIFY | WatchMask::ONLYDIR,
            )
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot watch {}: {e}", dir.display()))
            })?;
        let mut stream = inotify.into_event_stream([0u8; 4096])?;
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        log::error!("event=watch-failed dir={} error={e:?}", dir.display());
                        return;
                    }
                };
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    log::warn!(
                        "event=watch-overflow dir={} note=\"door events may be missed\"",
                        dir.display()
                    );
                    continue;
                }
                let Some(door) = event.name.and_then(|n| names.get(&n)) else {
                    continue;
                };
                if event.mask.contains(EventMask::OPEN) {
                    door.opened.send_modify(|n| *n += 1);
                }
                if event.mask.contains(EventMask::MODIFY) {
                    door.modified.send_modify(|n| *n += 1);
                }
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn opens_and_writes_of_the_door_file_are_counted_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let door = dir.path().join("door-0.seq");
        std::fs::write(&door, " 1:tcp\n").unwrap();
        let events = Arc::new(DoorEvents::default());
        spawn(vec![(door.clone(), events.clone())]).unwrap();

        let mut opened = events.next_open();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        let _ = std::fs::File::open(&door).unwrap();
        tokio::time::timeout(Duration::from_secs(5), opened.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*events.opened.borrow(), 1);

        let mut modified = events.next_modify();
        std::fs::OpenOptions::new().write(true).open(&door).unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&door)
            .unwrap()
            .write_all(b"#")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), modified.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*events.modified.borrow(), 1);
    }
}
