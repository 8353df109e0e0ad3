//! Finding a container without berthd, from what is on disk: its
//! `meta.json`, its `exit` record, its shim's PID. `berth logs` and
//! `berth attach` need only the log file and the shim's attach socket, so
//! they keep working while berthd is down (design invariant 2); this is how
//! they find them.
//!
//! The reference rules are berthd's: an exact ID, an exact name, or a
//! unique ID prefix.

use std::path::{Path, PathBuf};

use runtime_core::exit::ExitRecord;
use runtime_core::layout::{ContainerPaths, Root};
use runtime_core::meta::ContainerMeta;

use super::{try_connect, ConnectError, Failure};
use crate::api::{methods, ContainerInfo, ContainerStatus, Target};
use crate::rpc::CallError;

/// Why a container could not be found on disk.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{reference} matches {count} containers; give more of the ID")]
    Ambiguous { reference: String, count: usize },
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The container `reference` names, as berthd would report it, built from
/// the on-disk state alone. The status is what the disk can tell: exited
/// (with its code) when the exit record exists, running while its shim
/// lives, unknown otherwise.
pub fn inspect(root: &Root, reference: &str) -> Result<ContainerInfo, OfflineError> {
    // Unreadable (permission): said as such, not as "no such container".
    let dir = root.containers();
    std::fs::read_dir(&dir).map_err(|source| OfflineError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut metas = Vec::new();
    for id in root.container_ids() {
        let paths = root.container(&id);
        // A directory without a readable meta.json is a create that never
        // finished: berthd would not list it either.
        if let Ok(meta) = runtime_core::atomic::read_json::<ContainerMeta>(&paths.meta()) {
            metas.push((meta, paths));
        }
    }
    let (meta, paths) = pick(metas, reference)?;
    Ok(info_from_disk(meta, paths))
}

/// Exact ID, then exact name, then a unique ID prefix.
fn pick(
    mut metas: Vec<(ContainerMeta, ContainerPaths)>,
    reference: &str,
) -> Result<(ContainerMeta, ContainerPaths), OfflineError> {
    if let Some(i) = metas.iter().position(|(m, _)| m.id == reference) {
        return Ok(metas.swap_remove(i));
    }
    if let Some(i) = metas.iter().position(|(m, _)| m.name == reference) {
        return Ok(metas.swap_remove(i));
    }
    let mut matches: Vec<_> = metas
        .into_iter()
        .filter(|(m, _)| !reference.is_empty() && m.id.starts_with(reference))
        .collect();
    match matches.len() {
        1 => Ok(matches.swap_remove(0)),
        0 => Err(OfflineError::NotFound(reference.to_string())),
        count => Err(OfflineError::Ambiguous {
            reference: reference.to_string(),
            count,
        }),
    }
}

fn info_from_disk(meta: ContainerMeta, paths: ContainerPaths) -> ContainerInfo {
    let exit: Option<ExitRecord> = runtime_core::atomic::read_json(&paths.exit()).ok();
    let shim_pid = std::fs::read_to_string(paths.shim_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0 && Path::new(&format!("/proc/{pid}")).exists());
    let init_pid = std::fs::read_to_string(paths.init_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let status = match (&exit, shim_pid) {
        (Some(_), _) => ContainerStatus::Exited,
        (None, Some(_)) => ContainerStatus::Running,
        (None, None) => ContainerStatus::Unknown,
    };
    ContainerInfo {
        id: meta.id,
        name: meta.name,
        status,
        pid: if exit.is_none() { init_pid } else { None },
        exit_code: exit.as_ref().map(|e| e.exit_code),
        signal: exit.as_ref().and_then(|e| e.signal),
        reason: Some("berthd is not running: read from the on-disk state".into()),
        created_at: meta.created_at,
        started_at: exit.as_ref().and_then(|e| e.started_at.clone()),
        finished_at: exit.as_ref().map(|e| e.finished_at.clone()),
        oom_killed: exit.as_ref().is_some_and(|e| e.oom_killed),
        command: meta.command,
        rootfs: meta.rootfs,
        log_path: paths.log().display().to_string(),
        attach_socket: paths.attach_sock().display().to_string(),
        state_dir: paths.dir().display().to_string(),
        data_dir: paths.data_dir().display().to_string(),
        tty: meta.tty,
        stdin: meta.stdin,
        auto_remove: meta.auto_remove,
        shim_pid,
        restart_count: 0,
        restart: None,
        network: runtime_core::net::read_state(paths.dir()).map(|mut n| {
            n.conflist = None;
            n.result = None;
            n
        }),
        options: meta.options,
    }
}

/// The container through berthd when it answers, else from the disk.
/// Used by the verbs that do not need berthd (`logs`, `attach`).
pub async fn inspect_anyhow(
    root: &Path,
    data_root: &Path,
    reference: &str,
) -> Result<ContainerInfo, Failure> {
    let unreachable = match try_connect(root).await {
        Ok(mut c) => {
            let target = Target {
                id: reference.to_string(),
            };
            match c.call(methods::INSPECT, &target).await {
                Ok(info) => return Ok(info),
                // berthd went away in the middle of the call (killed or
                // restarted): the disk still knows the container, as when
                // berthd was not there at all.
                Err(CallError::Transport(e)) => Failure::new(format!("inspect: {e}")),
                Err(other) => return Err(other.into()),
            }
        }
        Err(ConnectError::Refused(f)) => return Err(f),
        Err(ConnectError::Unreachable(unreachable)) => unreachable,
    };
    log::debug!(
        "{}; resolving {reference} from the disk",
        unreachable.message
    );
    inspect(&Root::with_data(root, data_root), reference).map_err(|e| match e {
        // Not even the disk can be read: say why berthd could not be
        // reached either (usually permission on the root).
        OfflineError::Io { .. } => unreachable,
        other => Failure::new(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From JSON, so fields added later take their defaults.
    fn meta(id: &str, name: &str) -> ContainerMeta {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "created_at": "2026-11-28T10:00:00Z",
            "command": ["true"], "rootfs": "/x", "runtime": "runc",
            "log": {"max_size": 0, "max_files": 1},
        }))
        .unwrap()
    }

    fn write(root: &Path, m: &ContainerMeta) {
        let paths = Root::new(root).container(&m.id);
        std::fs::create_dir_all(paths.dir()).unwrap();
        runtime_core::atomic::write_json(&paths.meta(), m).unwrap();
    }

    #[test]
    fn resolves_like_berthd_and_reads_the_exit_record() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, &meta("abcd000000000001", "web"));
        write(root, &meta("abcd000000000002", "abcd000000000001x"));
        let exit = ExitRecord {
            pid: 5,
            exit_code: 3,
            signal: None,
            finished_at: "2026-11-28T10:01:00Z".into(),
            started_at: None,
            reason: None,
            oom_killed: false,
            oom_at: None,
            oom_kills: None,
            oom_last_at: None,
        };
        let p = Root::new(root).container("abcd000000000001");
        runtime_core::atomic::write_json(&p.exit(), &exit).unwrap();

        let web = inspect(&Root::new(root), "web").unwrap();
        assert_eq!(web.id, "abcd000000000001");
        assert_eq!(web.status, ContainerStatus::Exited);
        assert_eq!(web.exit_code, Some(3));
        assert!(web.log_path.ends_with("/abcd000000000001/log"));
        assert_eq!(
            inspect(&Root::new(root), "abcd000000000002").unwrap().id,
            "abcd000000000002"
        );
        assert_eq!(
            inspect(&Root::new(root), "abcd000000000001x").unwrap().id,
            "abcd000000000002"
        );
        let amb = inspect(&Root::new(root), "abcd").unwrap_err();
        assert!(
            matches!(amb, OfflineError::Ambiguous { count: 2, .. }),
            "{amb}"
        );
        let none = inspect(&Root::new(root), "ghost").unwrap_err();
        assert_eq!(none.to_string(), "no such container: ghost");
        // A create that never wrote meta.json is not a container.
        std::fs::create_dir_all(Root::new(root).container("abcd000000000003").dir()).unwrap();
        assert_eq!(
            inspect(&Root::new(root), "abcd000000000003")
                .unwrap_err()
                .to_string(),
            "no such container: abcd000000000003"
        );
    }
}
