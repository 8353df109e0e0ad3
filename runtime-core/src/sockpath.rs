//! Socket addresses that always fit in sun_path (108 bytes).
//!
//! A container directory under a long root can exceed sun_path. Like conmon,
//! we open the directory (O_PATH) and name the socket through
//! `/proc/self/fd/<fd>/<name>`, which is short whatever the root is. The
//! handle must stay alive until bind/connect returns.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use crate::{Error, Result};

/// An open directory through which short socket paths are formed.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
}

impl DirHandle {
    /// Opens `dir` as an O_PATH handle.
    pub fn open(dir: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| Error::io("open", dir, e))?;
        Ok(DirHandle {
            fd: OwnedFd::from(file),
        })
    }

    /// The short path naming `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }
}

/// Returns `path` itself when it fits in sun_path, otherwise a short alias
/// through a directory handle (kept in the returned tuple).
pub fn short(path: &Path) -> Result<(PathBuf, Option<DirHandle>)> {
    if path.as_os_str().len() < 100 {
        return Ok((path.to_path_buf(), None));
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Other(format!("{} has no file name", path.display())))?;
    let handle = DirHandle::open(dir)?;
    Ok((handle.path(name), Some(handle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn binds_and_connects_under_a_very_long_directory() {
        let base = tempfile::tempdir().unwrap();
        let mut dir = base.path().to_path_buf();
        for _ in 0..6 {
            dir.push("x".repeat(40));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("attach.sock");
        assert!(sock.as_os_str().len() > 200);
        let (bind_path, _h) = short(&sock).unwrap();
        let listener = UnixListener::bind(&bind_path).unwrap();
        let (conn_path, _h2) = short(&sock).unwrap();
        let _c = UnixStream::connect(&conn_path).unwrap();
        listener.accept().unwrap();
        assert!(sock.exists());
    }
}
