//! kill and wait: each asks the shim, which is the truth.

use runtime_core::exit::ExitRecord;
use runtime_core::protocol::{shim_methods as m, ErrorCode, KillParams, RpcError};

use super::registry::Phase;
use super::{reconcile, restart, shim, Daemon};
use crate::api::WaitResult;

/// Sends a signal to the container's init.
pub async fn kill(d: &Daemon, id: &str, signal: i32) -> Result<(), RpcError> {
    let entry = d.registry.get(id).ok_or_else(|| not_found(id))?;
    if !entry.maybe_running() {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!("container {} is not running", entry.meta.name),
        ));
    }
    restart::user_stopped(d, id);
    let paths = d.root.container(id);
    let sent = match shim::connect(&paths).await {
        Ok(mut c) => c.call_value(m::KILL, &KillParams { signal }).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => Ok(()),
        Err(e) => Err(reconcile::call_failed(d, id, e).await),
    }
}

fn not_found(id: &str) -> RpcError {
    RpcError::new(ErrorCode::NotFound, format!("no such container: {id}"))
}

/// Blocks until the container has exited; its exit code, or why none.
/// Woken by the entry's change channel: the watcher (which holds the
/// shim's own `wait`) or a reconcile updates the entry, and that is all.
pub async fn wait(d: &Daemon, id: &str) -> Result<WaitResult, RpcError> {
    loop {
        let mut changes = d.registry.subscribe(id).ok_or_else(|| not_found(id))?;
        let entry = d.registry.get(id).ok_or_else(|| not_found(id))?;
        if let Some((exit, reason)) = entry.finished() {
            return Ok(result(exit, reason.map(str::to_string)));
        }
        if let Phase::Unknown {
            reason,
            retrying: false,
        } = &entry.phase
        {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("cannot wait for container {}: {reason}", entry.meta.name),
            ));
        }
        // The exit record may be on disk before the watcher has heard:
        // settle reads it (and handles a shim that died since).
        reconcile::settle(d, id).await;
        if d.registry.get(id).is_some_and(|e| e.finished().is_some()) {
            continue;
        }
        // Err: the entry left the table; the next turn says so.
        let _ = changes.changed().await;
    }
}

fn result(exit: Option<&ExitRecord>, reason: Option<String>) -> WaitResult {
    WaitResult {
        exit_code: exit.map(|e| e.exit_code),
        reason: reason.or_else(|| exit.and_then(|e| e.reason.clone())),
    }
}
