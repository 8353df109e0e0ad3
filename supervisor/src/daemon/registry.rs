//! berthd's in-memory view of the containers: a cache rebuilt from disk and
//! the shims, never the source of truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use runtime_core::exit::ExitRecord;
use runtime_core::layout::Root;
use runtime_core::meta::ContainerMeta;
use runtime_core::protocol::{ErrorCode, RpcError, ShimState, ShimStatus};

use crate::api::{ContainerInfo, ContainerStatus};

/// Where berthd is with one container.
#[derive(Debug, Clone)]
pub enum Phase {
    /// berthd is creating it right now.
    Creating,
    /// Found on disk after a restart, shim not asked yet.
    Restoring,
    /// The shim answered.
    Live(ShimState),
    /// The shim is alive but cannot be adopted or does not answer; the
    /// container is left alone and the reason shown. `retrying`: a watcher
    /// keeps asking (not answering); false: it never will (other version).
    Unknown { reason: String, retrying: bool },
    /// Made by `create` and never started, and its runtime state is gone
    /// (a reboot): no shim, nothing ran. `start` makes it anew, as
    /// Docker keeps a created container created across a reboot.
    Unstarted,
    /// The shim is gone; the exit record (if any) says how it ended.
    Gone {
        exit: Option<ExitRecord>,
        reason: Option<String>,
    },
}

/// One container.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: ContainerMeta,
    pub phase: Phase,
    /// A remove is in progress; watchers stand down.
    pub removing: bool,
    /// Bumped on every change of `phase` or `removing` (and just before the
    /// entry leaves the table), so `wait` and `wait_removed` sleep until
    /// something happens instead of polling. Made by the first subscriber:
    /// a channel costs ~350 bytes, and most containers are never waited on.
    changes: Option<Arc<watch::Sender<()>>>,
}

impl Entry {
    /// A new entry.
    pub fn new(meta: ContainerMeta, phase: Phase) -> Self {
        Entry {
            meta,
            phase,
            removing: false,
            changes: None,
        }
    }

    /// How it ended, once it has: the exit record (if any) and why none.
    pub fn finished(&self) -> Option<(Option<&ExitRecord>, Option<&str>)> {
        match &self.phase {
            Phase::Live(s) if s.status == ShimStatus::Stopped => Some((s.exit.as_deref(), None)),
            Phase::Live(s) => s.exit.as_deref().map(|e| (Some(e), None)),
            Phase::Gone { exit, reason } => Some((exit.as_ref(), reason.as_deref())),
            _ => None,
        }
    }

    /// The status word of the entry as users see it.
    pub fn info_status(&self) -> ContainerStatus {
        match &self.phase {
            Phase::Creating => ContainerStatus::Creating,
            Phase::Restoring => ContainerStatus::Restoring,
            Phase::Unknown { .. } => ContainerStatus::Unknown,
            Phase::Live(s) => match s.status {
                ShimStatus::Created => ContainerStatus::Created,
                ShimStatus::Running => ContainerStatus::Running,
                ShimStatus::Paused => ContainerStatus::Paused,
                ShimStatus::Stopped => ContainerStatus::Exited,
            },
            Phase::Gone { .. } => ContainerStatus::Exited,
            Phase::Unstarted => ContainerStatus::Created,
        }
    }

    fn changed(&self) {
        if let Some(changes) = &self.changes {
            changes.send_replace(());
        }
    }

    /// True if the container may still run.
    pub fn maybe_running(&self) -> bool {
        match &self.phase {
            Phase::Creating | Phase::Restoring | Phase::Unknown { .. } => true,
            Phase::Live(s) => s.status != ShimStatus::Stopped,
            Phase::Gone { .. } | Phase::Unstarted => false,
        }
    }

    /// What the phase says of the container's last or current run,
    /// borrowed: `info` copies it, berthd's `list` encodes it in place.
    pub fn facts(&self) -> RunFacts<'_> {
        let none = RunFacts {
            pid: None,
            exit: None,
            started_at: None,
            reason: None,
            shim_pid: None,
        };
        let facts = match &self.phase {
            Phase::Creating | Phase::Restoring | Phase::Unstarted => none,
            Phase::Unknown { reason, .. } => RunFacts {
                reason: Some(reason),
                ..none
            },
            Phase::Live(s) => RunFacts {
                pid: Some(s.pid),
                exit: s.exit.as_deref(),
                started_at: s.started_at.as_deref(),
                reason: None,
                // A shim that answered with the exit retires by itself
                // (an exited container holds no process): whether its
                // pid still lives is a race with the caller, so only the
                // shim of a container not yet exited is shown.
                shim_pid: (s.status != ShimStatus::Stopped).then_some(s.shim_pid),
            },
            Phase::Gone { exit, reason } => RunFacts {
                pid: exit.as_ref().map(|e| e.pid),
                exit: exit.as_ref(),
                started_at: exit.as_ref().and_then(|e| e.started_at.as_deref()),
                reason: reason.as_deref(),
                shim_pid: None,
            },
        };
        RunFacts {
            reason: facts
                .reason
                .or_else(|| facts.exit.and_then(|e| e.reason.as_deref())),
            ..facts
        }
    }

    /// The API's view of the entry.
    pub fn info(&self, root: &Root) -> ContainerInfo {
        let paths = root.container(&self.meta.id);
        let f = self.facts();
        ContainerInfo {
            id: self.meta.id.clone(),
            name: self.meta.name.clone(),
            status: self.info_status(),
            pid: f.pid,
            exit_code: f.exit.map(|e| e.exit_code),
            signal: f.exit.and_then(|e| e.signal),
            reason: f.reason.map(str::to_string),
            created_at: self.meta.created_at.clone(),
            started_at: f.started_at.map(str::to_string),
            finished_at: f.exit.map(|e| e.finished_at.clone()),
            oom_killed: f.exit.is_some_and(|e| e.oom_killed),
            command: self.meta.command.clone(),
            rootfs: self.meta.rootfs.clone(),
            log_path: paths.log().display().to_string(),
            attach_socket: paths.attach_sock().display().to_string(),
            state_dir: paths.dir().display().to_string(),
            data_dir: paths.data_dir().display().to_string(),
            tty: self.meta.tty,
            stdin: self.meta.stdin,
            auto_remove: self.meta.auto_remove,
            shim_pid: f.shim_pid,
            restart_count: self.meta.restart_count,
            restart: None,
            options: self.meta.options.clone(),
            network: None,
        }
    }
}

/// The run-time facts of one entry (see [`Entry::facts`]).
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub pid: Option<i32>,
    pub exit: Option<&'a ExitRecord>,
    pub started_at: Option<&'a str>,
    /// Why the status is what it is: the phase's reason, else the exit
    /// record's.
    pub reason: Option<&'a str>,
    pub shim_pid: Option<i32>,
}

/// The table of containers, behind one lock held only briefly. Entries
/// are boxed: the table grows by doubling, so an inline entry (~1 kB)
/// would cost up to twice that per container in empty slots.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Box<Entry>>>,
}

impl Registry {
    /// Locks the table; a poisoned lock (a panicked handler) is recovered,
    /// since every entry is rebuilt from disk anyway.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Box<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves a user's reference: exact ID, exact name, or unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Result<String, RpcError> {
        let entries = self.lock();
        if entries.contains_key(reference) {
            return Ok(reference.to_string());
        }
        if let Some(e) = entries.values().find(|e| e.meta.name == reference) {
            return Ok(e.meta.id.clone());
        }
        let matches: Vec<&String> = if reference.is_empty() {
            Vec::new()
        } else {
            entries
                .keys()
                .filter(|id| id.starts_with(reference))
                .collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RpcError::new(
                ErrorCode::NotFound,
                format!("no such container: {reference}"),
            )),
            _ => Err(RpcError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{reference} matches {} containers; give more of the ID",
                    matches.len()
                ),
            )),
        }
    }

    /// A copy of one entry.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.lock().get(id).map(|e| Entry::clone(e))
    }

    /// Changes one entry's phase, if it still exists, and wakes its waiters.
    pub fn set_phase(&self, id: &str, phase: Phase) {
        if let Some(e) = self.lock().get_mut(id) {
            e.phase = phase;
            e.changed();
        }
    }

    /// Marks an entry as being removed (or not any more) and wakes its waiters.
    pub fn set_removing(&self, id: &str, removing: bool) {
        if let Some(e) = self.lock().get_mut(id) {
            e.removing = removing;
            e.changed();
        }
    }

    /// Replaces an entry's meta (after meta.json was rewritten).
    pub fn set_meta(&self, id: &str, meta: ContainerMeta) {
        if let Some(e) = self.lock().get_mut(id) {
            e.meta = meta;
            e.changed();
        }
    }

    /// Claims an exited container to run it again: it becomes `Creating`
    /// (so rm, another start and wait hold off) and its entry as it was is
    /// returned. Refused unless it has exited and nobody is removing it.
    pub fn begin_rerun(&self, id: &str) -> Result<Entry, RpcError> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id).ok_or_else(|| {
            RpcError::new(ErrorCode::NotFound, format!("no such container: {id}"))
        })?;
        let runnable = entry.finished().is_some() || matches!(entry.phase, Phase::Unstarted);
        if entry.removing || !runnable {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!(
                    "container {} is {}: only an exited container can be run again",
                    entry.meta.name,
                    entry.info_status()
                ),
            ));
        }
        let before = Entry::clone(entry);
        entry.phase = Phase::Creating;
        entry.changed();
        Ok(before)
    }

    /// Takes an entry out of the table, waking its waiters.
    pub fn remove(&self, id: &str) {
        if let Some(e) = self.lock().remove(id) {
            e.changed();
        }
    }

    /// A receiver woken on every change of the entry: take it before
    /// looking at the entry, so no change between the two is missed.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<()>> {
        self.lock().get_mut(id).map(|e| {
            e.changes
                .get_or_insert_with(|| Arc::new(watch::channel(()).0))
                .subscribe()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_pid_is_shown_until_the_shim_answers_with_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let meta: ContainerMeta = serde_json::from_value(serde_json::json!({
            "id": "a", "name": "a", "created_at": "", "command": [], "rootfs": "",
            "log": {"max_size": 0, "max_files": 1}, "runtime": "runc",
        }))
        .unwrap();
        let state = |status: &str, exit: serde_json::Value| -> ShimState {
            serde_json::from_value(serde_json::json!({
                "id": "a", "status": status, "pid": 10, "shim_pid": 9, "exit": exit,
            }))
            .unwrap()
        };
        let running = Entry::new(
            meta.clone(),
            Phase::Live(state("running", serde_json::Value::Null)),
        );
        assert_eq!(running.info(&root).shim_pid, Some(9));
        let exit = serde_json::json!({"pid": 10, "exit_code": 3, "signal": null, "finished_at": "2026-01-01T00:00:00Z"});
        let exited = Entry::new(meta, Phase::Live(state("stopped", exit)));
        let info = exited.info(&root);
        assert_eq!(info.shim_pid, None);
        assert_eq!(
            (info.status, info.exit_code),
            (ContainerStatus::Exited, Some(3))
        );
    }
}
