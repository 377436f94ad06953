//! The capture directory (`<agent.state_dir>/pcap`): creates capture files (0600, in a 0700
//! directory), appends to them and holds the directory under its size cap by removing the
//! oldest finished captures first. Used by the capture writer thread only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One capture file the directory holds.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    size: u64,
    /// Set while the capture is being written.
    file: Option<File>,
}

/// What an append did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    Written,
    /// Over the cap, with no finished capture left to remove.
    OverCap,
}

#[derive(Debug)]
pub(crate) struct CaptureDir {
    dir: PathBuf,
    cap: u64,
    /// Oldest first.
    entries: Vec<Entry>,
    total: u64,
    removed: u64,
}

impl CaptureDir {
    /// Opens (creating it, mode 0700, if needed) `dir`, counting the captures already there
    /// against `cap` bytes.
    pub(crate) fn open(dir: &Path, cap: u64) -> io::Result<CaptureDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut found: Vec<(SystemTime, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pcap") {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                found.push((meta.modified()?, path, meta.len()));
            }
        }
        found.sort();
        let total = found.iter().map(|(_, _, size)| size).sum();
        let mut store = CaptureDir {
            dir: dir.to_path_buf(),
            cap,
            entries: found
                .into_iter()
                .map(|(_, path, size)| Entry {
                    path,
                    size,
                    file: None,
                })
                .collect(),
            total,
            removed: 0,
        };
        store.make_room(0);
        Ok(store)
    }

    /// Creates (or truncates) `<dir>/<name>.pcap` for writing and returns its path.
    pub(crate) fn create(&mut self, name: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("{name}.pcap"));
        if let Some(i) = self.entries.iter().position(|e| e.path == path) {
            let old = self.entries.remove(i);
            self.total -= old.size;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        self.entries.push(Entry {
            path: path.clone(),
            size: 0,
            file: Some(file),
        });
        Ok(path)
    }

    /// Appends `bytes` to the capture being written at `path`, first removing the oldest
    /// finished captures as far as the cap needs.
    pub(crate) fn append(&mut self, path: &Path, bytes: &[u8]) -> io::Result<Appended> {
        let len = bytes.len() as u64;
        if !self.make_room(len) {
            return Ok(Appended::OverCap);
        }
        let Some(entry) = self.entries.iter_mut().find(|e| e.path == path) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "capture not open"));
        };
        let Some(file) = entry.file.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "capture closed"));
        };
        file.write_all(bytes)?;
        entry.size += len;
        self.total += len;
        Ok(Appended::Written)
    }

    /// The capture at `path` is finished: it may be removed to make room from now on.
    pub(crate) fn close(&mut self, path: &Path) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.path == path) {
            entry.file = None;
        }
    }

    /// Bytes the captures hold.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Captures removed to keep under the cap so far.
    pub(crate) fn removed(&self) -> u64 {
        self.removed
    }

    /// Removes finished captures, oldest first, until `more` bytes fit under the cap; false
    /// when they cannot.
    fn make_room(&mut self, more: u64) -> bool {
        while self.total + more > self.cap {
            let Some(i) = self.entries.iter().position(|e| e.file.is_none()) else {
                return false;
            };
            let old = self.entries.remove(i);
            match fs::remove_file(&old.path) {
                Ok(()) => log::info!(
                    "removed capture {} ({} bytes) to keep {} under its cap",
                    old.path.display(),
                    old.size,
                    self.dir.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("removing capture {}: {e}", old.path.display()),
            }
            self.total -= old.size;
            self.removed += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("ftagent-store-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Issue 9: the directory keeps under its cap by removing the oldest finished captures —
    /// those of an earlier run included — never one being written, and never other files.
    #[test]
    fn oldest_finished_captures_go_first() {
        let tmp = TempDir::new("cap");
        let dir = tmp.0.join("pcap");
        fs::create_dir_all(&dir).unwrap();
        // From an earlier run: two captures (the older one by mtime) and an unrelated file.
        fs::write(dir.join("100-2.pcap"), [0u8; 300]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(dir.join("100-1.pcap"), [0u8; 300]).unwrap();
        fs::write(dir.join("notes.txt"), [0u8; 5000]).unwrap();

        let mut store = CaptureDir::open(&dir, 1000).unwrap();
        assert_eq!(store.total(), 600);
        let a = store.create("200-1").unwrap();
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(store.append(&a, &[1; 300]).unwrap(), Appended::Written);
        assert_eq!(store.total(), 900);
        // 300 more do not fit: the oldest finished capture (by mtime) goes.
        assert_eq!(store.append(&a, &[1; 300]).unwrap(), Appended::Written);
        assert_eq!(names(&dir), ["100-1.pcap", "200-1.pcap", "notes.txt"]);
        let b = store.create("200-2").unwrap();
        assert_eq!(store.append(&b, &[2; 400]).unwrap(), Appended::Written);
        assert_eq!(names(&dir), ["200-1.pcap", "200-2.pcap", "notes.txt"]);
        assert_eq!(store.removed(), 2);
        // Both being written: nothing may go, so what does not fit is refused.
        assert_eq!(store.append(&b, &[2; 1]).unwrap(), Appended::OverCap);
        assert_eq!(store.total(), 1000);
        store.close(&a);
        assert_eq!(store.append(&b, &[2; 100]).unwrap(), Appended::Written);
        assert_eq!(names(&dir), ["200-2.pcap", "notes.txt"]);
        assert_eq!(fs::metadata(&b).unwrap().len(), 500);
        assert_eq!(store.total(), 500);
    }

    /// A directory already over a (lowered) cap is trimmed when opened; it is created 0700.
    #[test]
    fn opening_trims_and_creates() {
        let tmp = TempDir::new("open");
        let dir = tmp.0.join("pcap");
        let store = CaptureDir::open(&dir, 10).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(store);
        fs::write(dir.join("1-1.pcap"), [0u8; 8]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(dir.join("1-2.pcap"), [0u8; 8]).unwrap();
        let store = CaptureDir::open(&dir, 10).unwrap();
        assert_eq!(names(&dir), ["1-2.pcap"]);
        assert_eq!((store.total(), store.removed()), (8, 1));
    }
}
