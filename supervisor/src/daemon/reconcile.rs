//! Bringing berthd's cache in line with the truth: the shim's `state`
//! answer while it lives, the exit record (or the lack of one) once it is
//! gone. Every verb and the watchers go through here; this module calls
//! no verb, so nothing imports in a circle.

use std::fs;

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::protocol::{shim_methods as m, ShimState, ShimStatus};
use runtime_core::rootfs;

use super::registry::Phase;
use super::{shim, Daemon};

/// File recording that a container's shim died without an exit record.
pub const LOST: &str = "lost";
/// The exit record of the previous run, kept aside while an exited
/// container is started again (so a crash mid-start shows it exited as it
/// was, never half-made).
pub const PREVIOUS_EXIT: &str = "exit.previous";

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

/// Brings a cached "running" entry up to date when the shim has already
/// written its exit record (the record comes before anyone is told, so a
/// client that saw the exit can ask berthd at once and get the truth).
pub async fn settle(d: &Daemon, id: &str) {
    let stale = d.registry.get(id).is_some_and(|e| match &e.phase {
        Phase::Live(s) => s.status != ShimStatus::Stopped,
        _ => false,
    }) && d.root.container(id).exit().exists();
    if stale {
        refresh(d, id).await;
    }
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
    let previous = paths.dir().join(PREVIOUS_EXIT);
    let never_created = !paths.exit().exists()
        && !previous.exists()
        && (!paths.shim_pid().exists() || !paths.init_pid().exists());
    if never_created {
        // No shim ever finished creating it (berthd or the shim died mid-create).
        log::warn!("container {id} was never completely created; cleaning it up");
        shim::force_delete_runtime_state(d, &entry.meta).await;
        discard(d, id).await;
        return false;
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

/// Why a container has no exit record: read from `lost`, or (the first
/// time) decided now, with whatever the runtime still holds killed.
async fn lost(d: &Daemon, id: &str, meta: &runtime_core::meta::ContainerMeta) -> String {
    let path = d.root.container(id).dir().join(LOST);
    if let Ok(r) = atomic::read_json::<String>(&path) {
        return r;
    }
    let r = format!(
        "the shim died before the container exited; container killed at {}",
        runtime_core::time::now_rfc3339()
    );
    log::warn!("container {id}: {r}");
    shim::force_delete_runtime_state(d, meta).await;
    if let Err(e) = atomic::write_json(&path, &r) {
        // A full disk: the reason is still cached and shown; the next
        // berthd decides it again.
        log::error!("container {id}: {e}");
    }
    r
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
    if let Err(e) = fs::remove_dir_all(paths.dir()) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("remove {}: {e}", paths.dir().display());
        }
    }
    d.registry.remove(id);
    true
}
