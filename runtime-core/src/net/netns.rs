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

/// Keeps the namespace pins made under `dir` (the runtime root's
/// `containers`) out of every other mount namespace: `dir` becomes a
/// bind mount of itself (recursive, so pins made before stay visible)
/// with private propagation, as `ip netns` does for /run/netns. On a
/// host whose `/` is shared (every systemd host), a pin made under a
/// shared mount is otherwise copied into each shim's namespace (a slave
/// of the host's), so N containers would cost N^2 mounts and every start
/// would propagate into N namespaces. Idempotent: a `dir` that is a
/// mount point already (a previous berthd's) is only made private.
pub fn isolate_pins(dir: &Path) -> Result<(), NetError> {
    if !is_mounted(dir) {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err("bind-mount", dir, e))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("make private", dir, e))
}

/// Undoes [`isolate_pins`] when no pin (no mount at all) is left under
/// `dir`, so a stopped berthd with no container leaves nothing mounted.
/// With pins left it keeps the mount: unmounting it would take them away.
pub fn release_pins(dir: &Path) -> Result<(), NetError> {
    if mounts_under(dir).is_none_or(|under| !under.is_empty()) {
        return Ok(());
    }
    // A bind stacked twice (two berthds racing long ago) goes layer by layer.
    while is_mounted(dir) {
        umount2(dir, MntFlags::MNT_DETACH).map_err(|e| err("unmount", dir, e))?;
    }
    Ok(())
}

/// The mount points strictly under `dir` in this process's mount
/// namespace (the pins, when `dir` is the runtime root's `containers`),
/// or None when `dir` is not a mount point itself (no [`isolate_pins`]).
pub fn mounts_under(dir: &Path) -> Option<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let top = dir.to_string_lossy();
    let under = format!("{top}/");
    let points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape))
        .collect();
    if !points.iter().any(|p| *p == top) {
        return None;
    }
    Some(
        points
            .into_iter()
            .filter(|p| p.starts_with(&under))
            .map(PathBuf::from)
            .collect(),
    )
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
