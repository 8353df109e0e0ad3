//! `stop` (Docker's): the signal, a wait of up to the timeout for the
//! exit, then SIGKILL. A container that is not running is left as it is:
//! stopping an exited one succeeds quietly, as Docker's does, and so does
//! stopping one that was created and never started.

use std::time::Duration;

use runtime_core::protocol::{ErrorCode, RpcError, ShimStatus};

use super::registry::Phase;
use super::{lifecycle, pause, reconcile, Daemon};

/// How long a SIGKILLed container may take to be reaped before stop fails.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Default seconds between the signal and SIGKILL.
pub const DEFAULT_TIMEOUT: u64 = 10;

/// The container's own stop signal and timeout (`run --stop-signal`,
/// `--stop-timeout`, else the image's StopSignal), else Docker's SIGTERM
/// and 10 s: what `stop` uses when not told otherwise.
pub fn defaults(d: &Daemon, id: &str) -> (i32, u64) {
    let Some(e) = d.registry.get(id) else {
        return (libc::SIGTERM, DEFAULT_TIMEOUT);
    };
    let o = &e.meta.options;
    let signal = o
        .stop_signal
        .as_deref()
        .or(e.meta.image.as_ref().and_then(|i| i.stop_signal.as_deref()))
        .and_then(runtime_core::runopts::parse_signal)
        .unwrap_or(libc::SIGTERM);
    (signal, o.stop_timeout.map_or(DEFAULT_TIMEOUT, u64::from))
}

/// Stops a container; Ok once it has exited (or if it was not running).
pub async fn stop(d: &Daemon, id: &str, signal: i32, timeout: Duration) -> Result<(), RpcError> {
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    if entry.finished().is_some() {
        return Ok(());
    }
    match &entry.phase {
        Phase::Live(s) if s.status == ShimStatus::Created => return Ok(()),
        Phase::Unstarted => return Ok(()),
        Phase::Live(_) => {}
        _ => {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!(
                    "container {} is {}: cannot stop it now",
                    entry.meta.name,
                    entry.info_status()
                ),
            ))
        }
    }
    let paused = matches!(&entry.phase, Phase::Live(s) if s.status == ShimStatus::Paused);
    let signalled = signal_unless_gone(d, id, signal).await?;
    if signalled && paused && signal != libc::SIGKILL {
        // Frozen, it could not act on the signal: thaw it so it can (the
        // signal is pending), as Docker does.
        if let Err(e) = pause::unpause(d, id).await {
            log::warn!("container {id}: thaw for stop: {e}");
        }
    }
    if signalled && exited_within(d, id, timeout).await {
        return Ok(());
    }
    log::info!("container {id}: no exit {timeout:?} after signal {signal}; SIGKILL");
    signal_unless_gone(d, id, libc::SIGKILL).await?;
    if exited_within(d, id, KILL_GRACE).await {
        return Ok(());
    }
    Err(RpcError::new(
        ErrorCode::Internal,
        format!(
            "container {} did not exit within {KILL_GRACE:?} of SIGKILL",
            entry.meta.name
        ),
    ))
}

/// Sends a signal; false if the container exited first (nothing to signal).
async fn signal_unless_gone(d: &Daemon, id: &str, signal: i32) -> Result<bool, RpcError> {
    match lifecycle::kill(d, id, signal).await {
        Ok(()) => Ok(true),
        // Exited between our look and the signal: what stop wanted.
        Err(e) if e.code == ErrorCode::Conflict && finished(d, id).await => Ok(false),
        Err(e) => Err(e),
    }
}

async fn finished(d: &Daemon, id: &str) -> bool {
    reconcile::settle(d, id).await;
    d.registry.get(id).is_none_or(|e| e.finished().is_some())
}

/// True once the container has exited (or is gone), false at the deadline.
async fn exited_within(d: &Daemon, id: &str, limit: Duration) -> bool {
    tokio::time::timeout(limit, lifecycle::wait(d, id))
        .await
        .is_ok()
}
