//! `exec`: one more process in a running container, through its shim.
//!
//! berthd builds the process from the container's own (its env, user,
//! capabilities, cwd, as in the bundle's config.json) with the caller's
//! command, `-e`, `-w` and `-u` on top, checks what it can before anything
//! runs (the user in the container's /etc/passwd, the workdir, the
//! command, all looked up through `/proc/<init>/root` so the container's
//! own mounts count), and asks the shim to run it. The stream and the exit
//! code then go between the CLI and the shim only, so a session survives
//! a berthd restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use runtime_core::protocol::{
    shim_methods, ErrorCode, ExecParams, ExecStarted, ExecState, RpcError, ShimStatus,
};
use runtime_core::spec::load_bundle_config;
use runtime_core::user;

use super::registry::Phase;
use super::{reconcile, shim, validate, Daemon};
use crate::api::{ExecRequest, ExecResult};

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

/// Starts an exec; the caller attaches to `attach_socket` with its ID.
pub async fn exec(d: &Arc<Daemon>, id: &str, p: ExecRequest) -> Result<ExecResult, RpcError> {
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    let name = &entry.meta.name;
    let init_pid = match &entry.phase {
        Phase::Live(s) if s.exit.is_none() && s.status == ShimStatus::Running => s.pid,
        Phase::Live(s) if s.exit.is_none() && s.status == ShimStatus::Paused => {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("container {name} is paused: unpause it before exec"),
            ))
        }
        _ => {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!(
                    "container {name} is not running (it is {})",
                    entry.info_status()
                ),
            ))
        }
    };
    if p.command.is_empty() {
        return Err(invalid("exec: no command given"));
    }
    let paths = d.root.container(id);
    let mut spec = load_bundle_config(&paths.bundle())
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("container {name}: {e}")))?;
    // The container's filesystem as its processes see it, mounts included.
    let root = PathBuf::from(format!("/proc/{init_pid}/root"));
    let process = build_process(&spec, &p, &root)?;
    let typed: oci_spec::runtime::Process = serde_json::from_value(process.clone())
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("exec process: {e}")))?;
    spec.set_process(Some(typed));
    // Mounts are visible through /proc/<init>/root: nothing is unknown.
    spec.set_mounts(None);
    spec.set_hostname(None);
    validate::spec(&spec)?;
    check_workdir(&spec, &root)?;
    validate::command(&spec, &root)?;
    let exec_id = runtime_core::id::generate()
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
    let params = ExecParams {
        exec_id: exec_id.clone(),
        process,
        tty: p.tty,
        stdin: p.stdin,
        detach: p.detach,
    };
    // The exec_start event's time: the process starts during the call.
    let asked_at = runtime_core::time::now_rfc3339();
    let started = match shim::connect(&paths).await {
        Ok(mut c) => c.call::<_, ExecStarted>(shim_methods::EXEC, &params).await,
        Err(e) => Err(e),
    };
    let started = match started {
        Ok(s) => s,
        // An exited container's shim may have gone meanwhile.
        Err(e) => return Err(super::reconcile::call_failed(d, id, e).await),
    };
    log::info!(
        "container {id}: exec {exec_id} started ({:?}, pid {})",
        p.command,
        started.pid
    );
    super::events::exec_started(d, id, &exec_id, asked_at);
    Ok(ExecResult {
        exec_id,
        pid: started.pid,
        attach_socket: paths.attach_sock().display().to_string(),
        tty: p.tty,
    })
}

/// The container's process with the exec's own settings on top.
fn build_process(
    spec: &oci_spec::runtime::Spec,
    p: &ExecRequest,
    root: &Path,
) -> Result<Value, RpcError> {
    let mut process = spec
        .process()
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
        .unwrap_or_else(|| serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
    let Some(obj) = process.as_object_mut() else {
        return Err(RpcError::new(
            ErrorCode::Internal,
            "the container's process is not an object",
        ));
    };
    obj.insert("args".into(), serde_json::json!(p.command));
    obj.insert("terminal".into(), Value::Bool(p.tty));
    obj.remove("consoleSize");
    let mut env: Vec<String> = obj
        .get("env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    for kv in &p.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if key.is_empty() {
            return Err(invalid(format!("invalid environment variable {kv:?}")));
        }
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    obj.insert("env".into(), serde_json::json!(env));
    if let Some(w) = &p.workdir {
        if !w.starts_with('/') {
            return Err(invalid(format!(
                "the working directory {w:?} is not an absolute path"
            )));
        }
        obj.insert("cwd".into(), Value::String(w.clone()));
    }
    if let Some(u) = &p.user {
        let who = user::resolve(root, Some(u), &[]).map_err(|e| invalid(e.to_string()))?;
        obj.insert(
            "user".into(),
            serde_json::json!({
                "uid": who.uid,
                "gid": who.gid,
                "additionalGids": who.additional_gids,
            }),
        );
    }
    Ok(process)
}

/// The working directory must exist in the container, as a directory.
fn check_workdir(spec: &oci_spec::runtime::Spec, root: &Path) -> Result<(), RpcError> {
    let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) else {
        return Ok(());
    };
    let text = cwd.display().to_string();
    let host = user::resolve_in_root(root, &text).map_err(|e| invalid(e.to_string()))?;
    match std::fs::metadata(&host) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(invalid(format!(
            "the working directory {text} is not a directory in the container"
        ))),
        Err(_) => Err(invalid(format!(
            "the working directory {text} does not exist in the container"
        ))),
    }
}

/// The container's execs: those its shim holds (running, or ended and
/// not yet reported), then those it has let go of or that outlived it,
/// from their exit records on disk. A shim that does not answer leaves
/// the disk's list (inspect still shows the rest).
pub async fn list(d: &Daemon, id: &str) -> Vec<ExecState> {
    let paths = d.root.container(id);
    let alive = d
        .registry
        .get(id)
        .is_some_and(|e| matches!(&e.phase, Phase::Live(s) if s.status != ShimStatus::Stopped));
    let mut live = Vec::new();
    if alive {
        if let Ok(mut c) = shim::connect(&paths).await {
            match c
                .call::<_, runtime_core::protocol::ShimState>(shim_methods::STATE, &Value::Null)
                .await
            {
                Ok(s) => live = s.execs,
                Err(e) => log::debug!("container {id}: state for inspect: {e}"),
            }
        }
    }
    let mut all: Vec<ExecState> = runtime_core::protocol::exec_records(&paths)
        .into_iter()
        .filter(|r| !live.iter().any(|l| l.id == r.id))
        .collect();
    all.extend(live);
    all.sort_by_key(|s| s.pid);
    all
}
