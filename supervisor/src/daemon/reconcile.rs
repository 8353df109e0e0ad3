//! Bringing berthd's cache in line with the truth: the shim's `state`
//! answer while it lives, the exit record (or the lack of one) once it is
//! gone. Every verb and the watchers go through here; this module calls
//! no verb, so nothing imports in a circle.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};

use serde::{Deserialize, Serialize};

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::layout::{ContainerPaths, Root};
use runtime_core::protocol::{shim_methods as m, ErrorCode, RpcError, ShimState, ShimStatus};
use runtime_core::rootfs;

use super::registry::{Entry, Phase};
use super::{shim, Daemon};
use crate::rpc::CallError;

/// What asking the shim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The shim answered; its state is cached.
    Live,
    /// No shim process is left; the entry now says how the container ended.
    Gone,
    /// A shim process lives but did not answer; the cache is unchanged.
    Unreachable,
}

/// Asks the shim for its state and caches it. A shim that no longer
/// exists is handled at once (see [`shim_gone`]), so a caller never waits
/// on a process that cannot answer.
pub async fn refresh(d: &Daemon, id: &str) -> Refreshed {
    let paths = d.root.container(id);
    if let Ok(mut c) = shim::connect(&paths).await {
        if let Ok(state) = c.call::<_, ShimState>(m::STATE, &()).await {
            d.registry.set_phase(id, Phase::Live(state));
            return Refreshed::Live;
        }
    }
    if shim::live_shim_pid(&paths).is_some() {
        return Refreshed::Unreachable;
    }
    shim_gone(d, id).await;
    Refreshed::Gone
}

/// What a failed call to a container's shim means. An exited container's
/// shim exits by itself once the exit is on disk, so a shim that turns
/// out to be gone (the entry now settled from the record) means the
/// container is not running: a conflict, as the shim itself would have
/// answered a moment earlier. Anything else is the call's own error.
pub async fn call_failed(d: &Daemon, id: &str, e: CallError) -> RpcError {
    if matches!(e, CallError::Transport(_)) && refresh(d, id).await == Refreshed::Gone {
        let name = d
            .registry
            .get(id)
            .map_or_else(|| id.to_string(), |e| e.meta.name.clone());
        return RpcError::new(
            ErrorCode::Conflict,
            format!("container {name} is not running"),
        );
    }
    shim::from_call(id, e)
}

/// Brings a cached "running" entry up to date when the shim has already
/// written its exit record (the record comes before anyone is told, so a
/// client that saw the exit can ask berthd at once and get the truth).
pub async fn settle(d: &Daemon, id: &str) {
    let cached_running = d.registry.lock().get(id).is_some_and(|e| cached_running(e));
    if cached_running && d.root.container(id).exit().exists() {
        refresh(d, id).await;
    }
}

/// [`settle`] for every container (`list`): the entries cached as running
/// are picked in one pass over the table, copying nothing but their IDs,
/// and only their exit records are looked for (each container's paths
/// through one `Root::lookup`: with two roots, no walk of the whole path
/// to its meta.json).
pub async fn settle_all(d: &Daemon) {
    let running: Vec<String> = d
        .registry
        .lock()
        .iter()
        .filter(|(_, e)| cached_running(e))
        .map(|(id, _)| id.clone())
        .collect();
    let probe = ExitProbe::new(&d.root);
    let paths = d.root.lookup();
    for id in running {
        if probe.exists(&paths.container(&id).exit()) {
            refresh(d, &id).await;
        }
    }
}

/// Looks a path up relative to an open directory of the containers'
/// parents: the kernel walks two components (`<id>/exit`) instead of
/// the whole path, which was a third of berthd's cost of a `list`.
struct ExitProbe {
    bases: Vec<(PathBuf, OwnedFd)>,
}

impl ExitProbe {
    fn new(root: &Root) -> Self {
        let mut dirs = vec![root.containers(), root.data_containers()];
        dirs.dedup();
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let bases = dirs
            .into_iter()
            .filter_map(|dir| {
                let fd = rustix::fs::open(&dir, flags, Mode::empty()).ok()?;
                Some((dir, fd))
            })
            .collect();
        ExitProbe { bases }
    }

    /// Whether `path` exists (following symlinks), as `Path::exists`.
    fn exists(&self, path: &Path) -> bool {
        for (base, fd) in &self.bases {
            if let Ok(rel) = path.strip_prefix(base) {
                return rustix::fs::statat(fd, rel, AtFlags::empty()).is_ok();
            }
        }
        path.exists()
    }
}

/// The entry says the shim answered that the container runs.
fn cached_running(e: &Entry) -> bool {
    matches!(&e.phase, Phase::Live(s) if s.status != ShimStatus::Stopped)
}

/// The shim is gone. Its exit record, if written, has the truth; if not,
/// the shim died first: kill what is left and say so. A container that
/// never finished creating is discarded. Returns false when the entry is
/// no more (discarded, or being removed by someone else).
pub async fn shim_gone(d: &Daemon, id: &str) -> bool {
    let Some(entry) = d.registry.get(id) else {
        return false;
    };
    if entry.removing {
        return false;
    }
    let paths = d.root.container(id);
    // The exit record of the previous run, kept aside while an exited
    // container is started again (so a crash mid-start shows it exited as
    // it was, never half-made).
    let previous = paths.previous_exit();
    // After a reboot (or the runtime root wiped) the shim's pid files are
    // gone with it: a container with a definition is not half-made then,
    // only ended by the reboot.
    let never_created = !paths.exit().exists()
        && !previous.exists()
        && !runtime_state_gone(&paths)
        && (!paths.shim_pid().exists() || !paths.init_pid().exists());
    if never_created {
        // No shim ever finished creating it (berthd or the shim died mid-create).
        log::warn!("container {id} was never completely created; cleaning it up");
        shim::force_delete_runtime_state(d, &entry.meta).await;
        discard(d, id).await;
        return false;
    }
    // Made by `create`, never started, and a reboot took its runtime
    // state: still created (it never ran, so nothing ended).
    if entry.meta.start_later
        && !paths.exit().exists()
        && !previous.exists()
        && runtime_state_gone(&paths)
    {
        log::info!("container {id} was created, not started, before a reboot: created still");
        shim::force_delete_runtime_state(d, &entry.meta).await;
        d.registry.set_phase(id, Phase::Unstarted);
        return true;
    }
    let (exit, reason) = match atomic::read_json::<ExitRecord>(&paths.exit()) {
        Ok(exit) => (Some(exit), None),
        // A start of the exited container was cut short before its new
        // shim ran: it is exited as it was.
        Err(_) if previous.exists() && !paths.shim_pid().exists() => {
            match atomic::read_json::<ExitRecord>(&previous) {
                Ok(exit) => (Some(exit), None),
                Err(e) => (None, Some(format!("previous exit record unreadable: {e}"))),
            }
        }
        Err(_) => (None, Some(lost(d, id, &entry.meta).await)),
    };
    d.registry.set_phase(id, Phase::Gone { exit, reason });
    true
}

/// The `lost` file: why a container has no exit record, and whether a
/// reboot ended it (then a restart policy treats it as Docker treats a
/// container found stopped at daemon start: `always` and
/// `unless-stopped` bring it back, `on-failure` does not, since it did
/// not fail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LostRecord {
    Full {
        reason: String,
        #[serde(default)]
        rebooted: bool,
    },
    /// Written by a berth from before the split: the reason alone.
    Reason(String),
}

impl LostRecord {
    pub fn reason(&self) -> &str {
        match self {
            LostRecord::Full { reason, .. } | LostRecord::Reason(reason) => reason,
        }
    }
    pub fn rebooted(&self) -> bool {
        matches!(self, LostRecord::Full { rebooted: true, .. })
    }
}

/// The container's `lost` record, if it has one.
pub fn lost_record(paths: &ContainerPaths) -> Option<LostRecord> {
    atomic::read_json(&paths.lost()).ok()
}

/// The runtime state of the container's last run is gone: its runtime
/// directory no longer exists (a reboot emptied the runtime root, or it
/// was wiped), or its shim's pid file is older than this boot (a single
/// root on a disk that a reboot does not empty).
fn runtime_state_gone(paths: &ContainerPaths) -> bool {
    if paths.dir() != paths.data_dir() && !paths.dir().exists() {
        return true;
    }
    let written = fs::metadata(paths.shim_pid()).and_then(|m| m.modified());
    match (written, boot_time()) {
        (Ok(w), Some(boot)) => w < boot,
        _ => false,
    }
}

/// When this boot began (`btime` in /proc/stat).
fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Why a container has no exit record: read from `lost`, or (the first
/// time) decided now, with whatever the runtime still holds killed.
async fn lost(d: &Daemon, id: &str, meta: &runtime_core::meta::ContainerMeta) -> String {
    let paths = d.root.container(id);
    let path = paths.lost();
    if let Some(r) = lost_record(&paths) {
        return r.reason().to_string();
    }
    let now = runtime_core::time::now_rfc3339();
    let r = if runtime_state_gone(&paths) {
        LostRecord::Full {
            reason: format!(
                "the host rebooted (or the runtime root was emptied) while it ran; found at {now}"
            ),
            rebooted: true,
        }
    } else {
        LostRecord::Full {
            reason: format!("the shim died before the container exited; container killed at {now}"),
            rebooted: false,
        }
    };
    log::warn!("container {id}: {}", r.reason());
    shim::force_delete_runtime_state(d, meta).await;
    let r_text = r.reason().to_string();
    if let Err(e) = atomic::write_json(&path, &r) {
        // A full disk: the reason is still cached and shown; the next
        // berthd decides it again.
        log::error!("container {id}: {e}");
    }
    r_text
}

/// Removes every trace of a container that never came to be; true when
/// it is gone. When its network cannot be torn down or its rootfs not
/// unmounted, nothing is removed: the directory keeps meta.json and
/// net.json (what to tear down) and the entry stays, saying why, so
/// `berth rm` or the next berthd tries again. Removing them would leak
/// the namespace, veth, lease and rules for good.
pub async fn discard(d: &Daemon, id: &str) -> bool {
    let paths = d.root.container(id);
    let freed = match super::netsetup::teardown(paths.dir(), id).await {
        Ok(()) => rootfs::unmount_if_mounted(&paths.bundle_rootfs()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = freed {
        let reason = format!(
            "never completely created, and cleaning it up failed: {e}; berth rm or a berthd restart tries again"
        );
        log::warn!("container {id}: {reason}");
        d.registry.set_phase(
            id,
            Phase::Gone {
                exit: None,
                reason: Some(reason),
            },
        );
        return false;
    }
    for dir in paths.dirs() {
        if let Err(e) = fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("remove {}: {e}", dir.display());
            }
        }
    }
    d.registry.remove(id);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_probe_finds_what_exists_under_either_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::with_data(dir.path().join("run"), dir.path().join("data"));
        for base in [root.containers(), root.data_containers()] {
            fs::create_dir_all(base.join("a")).unwrap();
            fs::write(base.join("a").join("exit"), b"{}").unwrap();
        }
        fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        fs::write(dir.path().join("elsewhere").join("exit"), b"{}").unwrap();
        let probe = ExitProbe::new(&root);
        assert_eq!(probe.bases.len(), 2);
        for base in [root.containers(), root.data_containers()] {
            assert!(probe.exists(&base.join("a").join("exit")));
            assert!(!probe.exists(&base.join("a").join("lost")));
            assert!(!probe.exists(&base.join("b").join("exit")));
        }
        // Outside both: looked up by its whole path.
        assert!(probe.exists(&dir.path().join("elsewhere").join("exit")));
        assert!(!probe.exists(&dir.path().join("elsewhere").join("lost")));
    }
}
