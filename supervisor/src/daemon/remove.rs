//! `rm`: removing a container and its state, once, whoever asks.

use std::time::Duration;

use serde_json::Value;

use runtime_core::protocol::{shim_methods as m, ErrorCode, KillParams, RpcError};
use runtime_core::rootfs;

use super::registry::Phase;
use super::{events, reconcile, shim, Daemon};

fn not_found(id: &str) -> RpcError {
    RpcError::new(ErrorCode::NotFound, format!("no such container: {id}"))
}

/// Removes a container and its state; `force` kills a running one first.
pub async fn remove(d: &Daemon, id: &str, force: bool) -> Result<(), RpcError> {
    // The cache may not have seen the exit yet: ask the shim before refusing.
    if !force
        && d.registry
            .get(id)
            .is_some_and(|e| e.maybe_running() && !e.removing)
    {
        reconcile::refresh(d, id).await;
    }
    // A restart policy re-running it (or a create) is mid-way: `rm -f`
    // waits for that step to end, then removes what it made; the policy
    // stands down once the entry is being removed (Docker's rm -f of a
    // restarting container). A policy quick enough to begin the next run
    // in between is waited for again, a few times.
    let mut tries = 0;
    loop {
        match claim_removal(d, id, force)? {
            Claim::Mine => break,
            Claim::Another => return wait_removed(d, id).await,
            Claim::BeingCreated(name) => {
                tries += 1;
                if !force || tries > 5 {
                    return Err(RpcError::new(
                        ErrorCode::Conflict,
                        format!("container {name} is still being created"),
                    ));
                }
                wait_created(d, id).await;
            }
        }
    }
    let outcome = remove_inner(d, id, force).await;
    if outcome.is_err() {
        d.registry.set_removing(id, false);
    }
    outcome
}

/// What [`claim_removal`] found.
enum Claim {
    /// The entry is ours to remove now.
    Mine,
    /// Another remove already is under way.
    Another,
    /// It is being created or re-run (its name).
    BeingCreated(String),
}

/// Marks the entry as being removed, or says why not yet. Refuses a
/// running container without `force`.
fn claim_removal(d: &Daemon, id: &str, force: bool) -> Result<Claim, RpcError> {
    let mut entries = d.registry.lock();
    let entry = entries.get_mut(id).ok_or_else(|| not_found(id))?;
    if entry.removing {
        return Ok(Claim::Another);
    }
    if matches!(entry.phase, Phase::Creating) {
        return Ok(Claim::BeingCreated(entry.meta.name.clone()));
    }
    let running = match &entry.phase {
        Phase::Live(s) => s.status.is_alive(),
        Phase::Restoring | Phase::Unknown { .. } => true,
        _ => false,
    };
    if running && !force {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!(
                "container {} is running: stop it first, or remove it with rm -f",
                entry.meta.name
            ),
        ));
    }
    entry.removing = true;
    drop(entries);
    // Wakes waiters (wait_removed of a concurrent rm) through the registry.
    d.registry.set_removing(id, true);
    Ok(Claim::Mine)
}

/// Waits (up to 30 s) while the entry is being created or re-run.
async fn wait_created(d: &Daemon, id: &str) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Some(mut changes) = d.registry.subscribe(id) else {
            return;
        };
        match d.registry.get(id) {
            Some(e) if matches!(e.phase, Phase::Creating) => {}
            _ => return,
        }
        if tokio::time::timeout_at(give_up, changes.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Another remove (e.g. the auto-remove of `--rm`) is under way: succeed
/// when it has finished, so `rm` is idempotent for the caller.
async fn wait_removed(d: &Daemon, id: &str) -> Result<(), RpcError> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Some(mut changes) = d.registry.subscribe(id) else {
            return Ok(());
        };
        match d.registry.get(id) {
            None => return Ok(()),
            Some(e) if !e.removing => break,
            Some(_) => {}
        }
        match tokio::time::timeout_at(give_up, changes.changed()).await {
            // A change, or the entry left the table: look again.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    match d.registry.get(id) {
        None => Ok(()),
        Some(_) => Err(RpcError::new(
            ErrorCode::Conflict,
            format!("container {id} is being removed by another request that did not finish"),
        )),
    }
}

async fn remove_inner(d: &Daemon, id: &str, force: bool) -> Result<(), RpcError> {
    let entry = d.registry.get(id).ok_or_else(|| not_found(id))?;
    let paths = d.root.container(id);
    if force {
        if let Ok(mut c) = shim::connect(&paths).await {
            // Killing an exited container fails harmlessly.
            let _ = c
                .call_value(
                    m::KILL,
                    &KillParams {
                        signal: libc::SIGKILL,
                    },
                )
                .await;
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                c.long_call::<_, Value>(m::WAIT, &()),
            )
            .await;
            if waited.is_err() {
                return Err(RpcError::new(
                    ErrorCode::Internal,
                    format!("container {id} did not die within 10s of SIGKILL"),
                ));
            }
        }
    }
    shim::delete(d, &entry.meta).await?;
    // The network goes before the directory that records it.
    super::netsetup::teardown(paths.dir(), id)
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e))?;
    // `run --rm` removes before the watcher hears of the exit.
    events::exited(d, id);
    rootfs::unmount_if_mounted(&paths.bundle_rootfs())
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
    // The data directory (meta.json) first: a berthd killed in between
    // finds a runtime directory without a definition and removes it. A
    // reboot may have taken the runtime directory already.
    for dir in paths.dirs() {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RpcError::new(
                    ErrorCode::Internal,
                    format!("remove {}: {e}", dir.display()),
                ));
            }
            _ => {}
        }
    }
    d.registry.remove(id);
    events::deleted(d, id, &entry.meta.name);
    log::info!("removed {id}");
    Ok(())
}
