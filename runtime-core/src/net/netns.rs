//! Network namespaces as files: made by a short-lived thread that
//! unshares its network namespace and bind-mounts it onto a file (as
//! `ip netns add` and the CNI `ns` package do), removed by unmounting.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::NetError;

fn err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Netns {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Makes a new network namespace and pins it at `path` (which must not exist).
pub fn create(path: &Path) -> Result<(), NetError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| err("create", path, e))?;
    let target: PathBuf = path.to_path_buf();
    // unshare(CLONE_NEWNET) changes only the calling thread, so a thread of
    // its own does it and ends; the bind mount keeps the namespace.
    let made = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || -> Result<(), NetError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err("unshare", &target, e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| err("bind-mount", &target, e))
        })
        .map_err(|e| err("spawn thread for", path, e))?
        .join()
        .map_err(|_| err("create", path, "the namespace thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Whether `path` is a mounted namespace file (an nsfs mount).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| unescape(mp) == want))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Unmounts and removes a namespace file; nothing there is fine.
pub fn remove(path: &Path) -> Result<(), NetError> {
    // Unmount every layer (a mount may have been repeated).
    while is_mounted(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| err("unmount", path, e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("remove", path, e)),
    }
}
