//! Crash-safe file replacement: temp file, fsync, rename, fsync directory.
//!
//! A crash at any instant leaves either the old or the new content, never a
//! torn file; berthd's restart and the exit record rely on that.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Error, Result};

/// Atomically and durably replaces `path` with `data` (mode 0600): after
/// a crash of the process or of the machine, the old or the new content.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, true)
}

/// Atomically replaces `path` with `data`, without waiting for the disk:
/// for files whose meaning ends with the boot (a bundle's config.json, a
/// shim's PID). A crashed process still leaves the old or the new content;
/// a crashed machine has no container left for them to describe. Each
/// fsync saved is a few hundred microseconds off a container's start.
pub fn write_until_reboot(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, false)
}

fn replace(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent directory", path.display())))?;
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
    file.write_all(data)
        .and_then(|_| if durable { file.sync_all() } else { Ok(()) })
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Serializes `value` as pretty JSON and writes it atomically and durably.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write(path, &pretty(path, value)?)
}

/// Serializes `value` as pretty JSON and writes it atomically; the caller
/// makes it durable later with [`make_durable`] (see `write_until_reboot`).
pub fn write_json_until_reboot<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_until_reboot(path, &pretty(path, value)?)
}

fn pretty<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Other(format!("serialize {}: {e}", path.display())))
}

/// Makes a file already renamed into place durable: fsync the file, then
/// its directory. With `write_until_reboot` first, the disk wait can run
/// while other work goes on; until it returns, a crashed *machine* may
/// lose the file (a crashed process never does).
pub fn make_durable(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", path, e))?;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent directory", path.display())))?;
    sync_dir(dir)
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
