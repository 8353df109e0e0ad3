//! Keeping berthd's view true: one watcher task per container holds a
//! `wait` long poll on its shim; on start-up every container on disk is
//! restored concurrently, each with its own timeout.

use std::sync::Arc;
use std::time::Duration;

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::meta::ContainerMeta;
use runtime_core::protocol::{shim_methods as m, ShimState};

use super::registry::{Entry, Phase};
use super::{create, lifecycle, shim, Daemon};
use crate::rpc::CallError;

/// File recording that a container's shim died without an exit record.
const LOST: &str = "lost";

/// Asks the shim for its state and stores it; false if the shim is gone.
pub async fn refresh(d: &Daemon, id: &str) -> bool {
    let paths = d.root.container(id);
    let Ok(mut c) = shim::connect(&paths).await else {
        return false;
    };
    match c.call::<_, ShimState>(m::STATE, &()).await {
        Ok(state) => {
            d.registry.set_phase(id, Phase::Live(state));
            true
        }
        Err(_) => false,
    }
}

/// Starts the watcher of one container.
pub fn spawn_watcher(d: &Arc<Daemon>, id: String) {
    let d = d.clone();
    tokio::spawn(async move { watch(d, id).await });
}

async fn watch(d: Arc<Daemon>, id: String) {
    let paths = d.root.container(&id);
    let mut failures = 0u32;
    loop {
        if d.registry.get(&id).is_none_or(|e| e.removing) {
            return;
        }
        let conn = shim::connect(&paths).await;
        let mut c = match conn {
            Ok(c) => c,
            Err(e) => {
                if shim::live_shim_pid(&paths).is_some() && failures < 20 {
                    failures += 1;
                    log::warn!("container {id}: shim alive but unreachable ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                return shim_gone(&d, &id).await;
            }
        };
        failures = 0;
        match c.call::<_, ShimState>(m::STATE, &()).await {
            Ok(state) => {
                let exited = state.exit.is_some();
                d.registry.set_phase(&id, Phase::Live(state));
                if exited {
                    return on_exit(&d, &id).await;
                }
            }
            Err(_) => continue,
        }
        match c.call::<_, Option<ExitRecord>>(m::WAIT, &()).await {
            Ok(_) => continue, // loop: fetch the final state and finish
            Err(CallError::Remote(e)) => {
                log::warn!("container {id}: wait: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            // The connection broke: the shim died or is deleting itself.
            Err(CallError::Transport(_)) => {}
        }
    }
}

async fn on_exit(d: &Daemon, id: &str) {
    let auto_remove = d
        .registry
        .get(id)
        .is_some_and(|e| e.meta.auto_remove && !e.removing);
    if auto_remove {
        if let Err(e) = lifecycle::remove(d, id, false).await {
            log::debug!("auto-remove {id}: {e}");
        }
    }
}

/// The shim is gone. Its exit record, if written, has the truth; if not,
/// the shim died first: kill what is left and say so.
async fn shim_gone(d: &Daemon, id: &str) {
    let Some(entry) = d.registry.get(id) else {
        return;
    };
    if entry.removing {
        return;
    }
    let paths = d.root.container(id);
    if !paths.shim_pid().exists() && !paths.exit().exists() {
        // The shim never finished creating it (berthd died mid-create).
        log::warn!("container {id} was never completely created; cleaning it up");
        shim::force_delete_runtime_state(d, &entry.meta).await;
        create::discard(d, &entry.meta).await;
        return;
    }
    let (exit, reason) = match atomic::read_json::<ExitRecord>(&paths.exit()) {
        Ok(exit) => (Some(exit), None),
        Err(_) => {
            let reason = match atomic::read_json::<String>(&paths.dir().join(LOST)) {
                Ok(r) => r,
                Err(_) => {
                    let r = format!(
                        "the shim died before the container exited; container killed at {}",
                        runtime_core::time::now_rfc3339()
                    );
                    log::warn!("container {id}: {r}");
                    shim::force_delete_runtime_state(d, &entry.meta).await;
                    if let Err(e) = atomic::write_json(&paths.dir().join(LOST), &r) {
                        log::error!("{e}");
                    }
                    r
                }
            };
            (None, Some(reason))
        }
    };
    d.registry.set_phase(id, Phase::Gone { exit, reason });
    on_exit(d, id).await;
}

/// Loads every container on disk as "restoring" and reconciles each in
/// its own task, so one hung shim never holds up the rest or the API.
pub fn restore_all(d: &Arc<Daemon>) {
    let dir = d.root.containers();
    let Ok(read) = std::fs::read_dir(&dir) else {
        return;
    };
    for ent in read.flatten() {
        let Some(id) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if runtime_core::id::validate("id", &id).is_err() {
            continue;
        }
        let paths = d.root.container(&id);
        match atomic::read_json::<ContainerMeta>(&paths.meta()) {
            Ok(meta) => {
                d.registry.lock().insert(
                    id.clone(),
                    Entry {
                        meta,
                        phase: Phase::Restoring,
                        removing: false,
                    },
                );
                let d2 = d.clone();
                tokio::spawn(async move { watch(d2, id).await });
            }
            Err(_) => {
                // No meta.json: berthd died before the container was made.
                log::warn!(
                    "removing half-made container directory {}",
                    paths.dir().display()
                );
                let d2 = d.clone();
                tokio::spawn(async move {
                    let meta = ContainerMeta {
                        id: id.clone(),
                        name: id.clone(),
                        created_at: String::new(),
                        command: Vec::new(),
                        rootfs: String::new(),
                        default_rootfs: true,
                        source_bundle: None,
                        tty: false,
                        stdin: false,
                        auto_remove: true,
                        log: Default::default(),
                        runtime: d2.config.runtime.display().to_string(),
                    };
                    create::discard(&d2, &meta).await;
                });
            }
        }
    }
}
