//! `start`: a created container is started by its shim; an exited one is
//! run again: same ID, config and bundle (and overlay, so its files
//! stay), a new shim, the log appended, the restart count up by one.

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use runtime_core::atomic;
use runtime_core::protocol::{shim_methods as m, ErrorCode, RpcError, ShimStatus};

use super::reconcile;
use super::registry::{Entry, Phase};
use super::shim::{self, from_call};
use super::{events, Daemon};
use crate::event::EventKind;

fn conflict(msg: String) -> RpcError {
    RpcError::new(ErrorCode::Conflict, msg)
}

/// What a successful start leaves for its caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a new shim has no watcher until the caller gives it one"]
pub enum Started {
    /// The created container's own shim runs it; its watcher goes on.
    SameShim,
    /// An exited container runs again under a new shim, which nobody
    /// watches yet: the caller spawns a watcher (the API), or is the
    /// watcher and keeps going (a restart policy). start does not spawn
    /// one itself, so it never imports the watcher that calls it.
    NewShim,
}

/// Starts a created container, or runs an exited one again. `attach`: the
/// caller attaches right after, so a new shim holds the output for it.
pub async fn start(d: &Arc<Daemon>, id: &str, attach: bool) -> Result<Started, RpcError> {
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    if entry.removing {
        return Err(conflict(format!(
            "container {} is being removed",
            entry.meta.name
        )));
    }
    if entry.finished().is_some() {
        return run_again(d, id, attach).await.map(|()| Started::NewShim);
    }
    match &entry.phase {
        Phase::Live(s) if s.status == ShimStatus::Created => {
            start_created(d, id).await.map(|()| Started::SameShim)
        }
        // Created before a reboot: a new shim makes it and runs it.
        Phase::Unstarted => run_again(d, id, attach).await.map(|()| Started::NewShim),
        _ => Err(conflict(format!(
            "container {} is {}: only a created or exited container can be started",
            entry.meta.name,
            entry.info_status()
        ))),
    }
}

async fn start_created(d: &Daemon, id: &str) -> Result<(), RpcError> {
    let paths = d.root.container(id);
    let mut c = shim::connect(&paths).await.map_err(|e| from_call(id, e))?;
    c.call_value(m::START, &())
        .await
        .map_err(|e| from_call(id, e))?;
    events::record(d, EventKind::Start, id);
    started_once(d, id);
    reconcile::refresh(d, id).await;
    Ok(())
}

/// A container made by `create` has now run: its definition says so
/// durably, so a reboot later shows it ended rather than still created.
fn started_once(d: &Daemon, id: &str) {
    let Some(mut meta) = d.registry.get(id).map(|e| e.meta).filter(|m| m.start_later) else {
        return;
    };
    meta.start_later = false;
    match atomic::write_json(&d.root.container(id).meta(), &meta) {
        Ok(()) => d.registry.set_meta(id, meta),
        Err(e) => log::error!("container {id}: {e}"),
    }
}

async fn run_again(d: &Arc<Daemon>, id: &str, attach: bool) -> Result<(), RpcError> {
    let before = d.registry.begin_rerun(id)?;
    match rerun_steps(d, id, &before, attach).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // Back to exited as it was: the previous record into place.
            let paths = d.root.container(id);
            let previous = paths.previous_exit();
            if previous.exists() && !paths.exit().exists() {
                if let Err(err) = std::fs::rename(&previous, paths.exit()) {
                    log::error!("container {id}: restore the exit record: {err}");
                }
            }
            if let Err(err) = atomic::write_json(&paths.meta(), &before.meta) {
                log::error!("container {id}: restore meta.json: {err}");
            }
            d.registry.set_meta(id, before.meta.clone());
            d.registry.set_phase(id, before.phase.clone());
            log::warn!("container {id}: start failed: {e}");
            Err(e)
        }
    }
}

async fn rerun_steps(
    d: &Arc<Daemon>,
    id: &str,
    before: &Entry,
    attach: bool,
) -> Result<(), RpcError> {
    let internal = |e: runtime_core::Error| RpcError::new(ErrorCode::Internal, e.to_string());
    let paths = d.root.container(id);
    // The old shim goes first (runc delete, its sockets and pid file).
    shim::delete(d, &before.meta).await?;
    // After a reboot the runtime directory is gone: made again (0700).
    for dir in paths.dirs() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .map_err(|e| {
                RpcError::new(
                    ErrorCode::Internal,
                    format!("create {}: {e}", dir.display()),
                )
            })?;
    }
    // Its exit record aside, so the new shim's is the only one; put back
    // if this start fails (and read by a restarted berthd meanwhile).
    if paths.exit().exists() {
        std::fs::rename(paths.exit(), paths.previous_exit()).map_err(|e| {
            RpcError::new(
                ErrorCode::Internal,
                format!("set aside {}: {e}", paths.exit().display()),
            )
        })?;
    }
    let _ = std::fs::remove_file(paths.lost());
    super::netsetup::prepare_rerun(d, id).await?;
    let mut meta = before.meta.clone();
    if matches!(before.phase, Phase::Unstarted) {
        // Its first run: started, not run again.
        meta.start_later = false;
    } else {
        meta.restart_count += 1;
    }
    atomic::write_json(&paths.meta(), &meta).map_err(internal)?;
    d.registry.set_meta(id, meta.clone());
    let addr = shim::start_shim(
        d,
        &meta,
        &paths,
        shim::StartMode {
            start: true,
            wait_attach: attach,
        },
    )
    .await
    .map_err(|m| RpcError::new(ErrorCode::Runtime, m))?;
    let _ = std::fs::remove_file(paths.previous_exit());
    log::info!(
        "started {id} again (run {}), shim pid {} init pid {}",
        meta.restart_count + 1,
        addr.pid,
        addr.init_pid
    );
    match addr.state {
        Some(state) => d.registry.set_phase(id, Phase::Live(state)),
        None => {
            reconcile::refresh(d, id).await;
        }
    }
    events::record(d, EventKind::Start, id);
    Ok(())
}
