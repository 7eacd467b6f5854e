//! Files written whole or not at all, names beside a file, and reads with a ceiling.
//!
//! [`AtomicFile`] is how every file `enos` keeps is written: the secrets of the secrets
//! folder, a replay's checkpoint, a download's `PATH.part`. The bytes go to a file beside
//! the target, are synced to the disk, and the file is renamed over the target; a file
//! that is dropped before [`AtomicFile::commit`] is removed, so a failure leaves the
//! target as it was and nothing beside it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// `path` with `suffix` added to its file name: `rows.csv` and `.enos-progress` make
/// `rows.csv.enos-progress`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// How far a file written whole must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced to the disk before it replaces the target: whole even after a power loss.
    Synced,
    /// Renamed over the target at once: whole however the process ends, but a power loss
    /// soon after may leave the previous file, or an empty one.
    Renamed,
}

/// A file being written beside its target (the target's name and a suffix), renamed over
/// the target by [`AtomicFile::commit`]; removed when dropped before that.
pub struct AtomicFile {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates `PATH` + `suffix` (a stale one is replaced), with `mode` (Unix
    /// permissions) when given.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn create(target: &Path, suffix: &str, mode: Option<u32>) -> io::Result<Self> {
        let temp = with_suffix(target, suffix);
        // A stale file keeps its permissions when opened again: start afresh.
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let file = open.open(&temp)?;
        Ok(AtomicFile { temp, target: target.to_owned(), file: Some(file) })
    }

    /// The file being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Syncs the bytes to the disk and renames the file over the target.
    ///
    /// # Errors
    ///
    /// The I/O error; the file written is removed, the target left as it was.
    pub fn commit(self) -> io::Result<()> {
        self.commit_as(Durability::Synced)
    }

    /// Renames the file over the target, synced to the disk first or not.
    ///
    /// # Errors
    ///
    /// The I/O error; the file written is removed, the target left as it was.
    pub fn commit_as(mut self, durability: Durability) -> io::Result<()> {
        let file = self.file.take().ok_or_else(|| io::Error::other("already committed"))?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&self.temp, &self.target)?;
        // Renamed: there is nothing left to remove.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` whole or not at all: through `PATH` + `suffix`, synced, then
/// renamed over it.
///
/// # Errors
///
/// The I/O error; `path` is then as it was, and nothing is left beside it.
pub fn write_atomic(path: &Path, suffix: &str, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    write_atomic_as(path, suffix, bytes, mode, Durability::Synced)
}

/// [`write_atomic`], with the durability asked for.
///
/// # Errors
///
/// As [`write_atomic`].
pub fn write_atomic_as(
    path: &Path,
    suffix: &str,
    bytes: &[u8],
    mode: Option<u32>,
    durability: Durability,
) -> io::Result<()> {
    let mut f = AtomicFile::create(path, suffix, mode)?;
    f.write_all(bytes)?;
    f.commit_as(durability)
}

/// Everything `r` gives, at most `limit` bytes: `None` when it has more.
///
/// # Errors
///
/// The I/O error.
pub fn read_limited(r: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("enos-cli-fsio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_is_replaced_whole_or_left_as_it_was() {
        let d = dir("atomic");
        let target = d.join("a.txt");
        assert_eq!(with_suffix(&target, ".tmp"), d.join("a.txt.tmp"));
        write_atomic(&target, ".tmp", b"one", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        assert!(!d.join("a.txt.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Dropped before its commit: the target is untouched and nothing is left.
        let mut f = AtomicFile::create(&target, ".part", None).unwrap();
        f.write_all(b"two, half").unwrap();
        assert!(f.temp_path().exists());
        drop(f);
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        assert!(!d.join("a.txt.part").exists());
        // A rename that fails (the target is a folder) removes what was written.
        let folder = d.join("folder");
        std::fs::create_dir_all(folder.join("inside")).unwrap();
        assert!(write_atomic(&folder, ".tmp", b"x", None).is_err());
        assert!(!d.join("folder.tmp").exists());
    }

    #[test]
    fn a_read_stops_past_its_ceiling() {
        assert_eq!(read_limited(&b"0123456789"[..], 10).unwrap(), Some(b"0123456789".to_vec()));
        assert_eq!(read_limited(&b"0123456789a"[..], 10).unwrap(), None);
        // An endless source ends too.
        assert_eq!(read_limited(std::io::repeat(0), 1000).unwrap(), None);
    }
}
