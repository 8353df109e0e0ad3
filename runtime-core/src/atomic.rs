//! Crash-safe file replacement: temp file, fsync, rename, fsync directory.
//!
//! A crash at any instant leaves either the old or the new content, never a
//! torn file; berthd's restart and the exit record rely on that.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Atomically and durably replaces `path` with `data` (mode 0600): after
/// a crash of the process or of the machine, the old or the new content.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    let staged = stage(path, data)?;
    if let Err(e) = staged.sync() {
        let _ = fs::remove_file(&staged.tmp);
        return Err(e);
    }
    let dir = staged.commit()?;
    sync_dir(&dir)
}

/// Atomically replaces `path` with `data`, without waiting for the disk:
/// for files whose meaning ends with the boot (a bundle's config.json, a
/// shim's PID). A crashed process still leaves the old or the new content;
/// a crashed machine has no container left for them to describe. Each
/// fsync saved is a few hundred microseconds off a container's start.
pub fn write_until_reboot(path: &Path, data: &[u8]) -> Result<()> {
    stage(path, data)?.commit().map(drop)
}

/// New content written beside its final name, not yet in place: the steps
/// of [`write`] one by one, so a caller can run the fsyncs while it does
/// other work and still keep their order (temp, fsync, rename, fsync dir).
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    file: File,
}

/// Writes `data` to a temp file next to `path` (mode 0600).
pub fn stage(path: &Path, data: &[u8]) -> Result<Staged> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    if let Err(e) = file.write_all(data) {
        // A full disk: leave nothing half-written behind.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp, e));
    }
    Ok(Staged {
        tmp,
        path: path.to_owned(),
        file,
    })
}

impl Staged {
    /// Makes the staged content durable (it may run on another thread:
    /// move the `Staged` there and back).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))
    }

    /// Renames the content into place; returns the directory, whose fsync
    /// ([`sync_dir`]) makes the rename durable.
    pub fn commit(self) -> Result<PathBuf> {
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename into", &self.path, e))?;
        Ok(parent(&self.path)?.to_owned())
    }
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent directory", path.display())))
}

/// Serializes `value` as pretty JSON and writes it atomically and durably.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write(path, &to_json(path, value)?)
}

/// `value` as pretty JSON, naming `path` in any error.
pub fn to_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Other(format!("serialize {}: {e}", path.display())))
}

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&data).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Makes a rename or create inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_json(&path, &vec![1, 2]).unwrap();
        write_json(&path, &vec![3]).unwrap();
        let back: Vec<i32> = read_json(&path).unwrap();
        assert_eq!(back, vec![3]);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn staged_content_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write(&path, b"old").unwrap();
        let staged = stage(&path, b"new").unwrap();
        staged.sync().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let parent = staged.commit().unwrap();
        assert_eq!(parent, dir.path());
        sync_dir(&parent).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temp file is gone");
    }

    #[test]
    fn parse_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        fs::write(&path, "{nope").unwrap();
        let err = read_json::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.json"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
