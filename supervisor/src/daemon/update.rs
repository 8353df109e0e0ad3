//! `update`: a new restart policy (any container), new memory and CPU
//! limits (a running one, through the runtime's `update`). Everything is
//! checked first; the runtime goes first among the changes, so a refusal
//! changes nothing. New limits are also written into the bundle's
//! config.json, so a restart keeps them.

use oci_spec::runtime::{LinuxBuilder, LinuxCpuBuilder, LinuxResourcesBuilder};

use runtime_core::protocol::{ErrorCode, RpcError, ShimStatus};
use runtime_core::spec;

use super::registry::Phase;
use super::{reconcile, restart, Daemon};
use crate::policy::{check_cpus, check_memory, RestartPolicy, UpdateParams};

/// The CFS period used for `--cpus`, as Docker's.
const CPU_PERIOD: u64 = 100_000;

fn invalid(msg: String) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

pub async fn update(d: &Daemon, id: &str, p: UpdateParams) -> Result<(), RpcError> {
    let policy = p
        .restart
        .as_deref()
        .map(str::parse::<RestartPolicy>)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(m) = p.memory {
        check_memory(m).map_err(invalid)?;
    }
    if let Some(c) = p.cpus {
        check_cpus(c).map_err(invalid)?;
    }
    if policy.is_none() && p.memory.is_none() && p.cpus.is_none() {
        return Err(invalid(
            "nothing to update: give --restart, --memory or --cpus".into(),
        ));
    }
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    if p.memory.is_some() || p.cpus.is_some() {
        let running = matches!(&entry.phase, Phase::Live(s) if s.status == ShimStatus::Running && s.exit.is_none());
        if !running {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!(
                    "container {} is not running ({}): limits can only be changed while it runs",
                    entry.meta.name,
                    entry.info(&d.root).status
                ),
            ));
        }
        runtime_update(d, &entry.meta, p.memory, p.cpus).await?;
        persist_limits(d, id, p.memory, p.cpus)?;
    }
    if let Some(policy) = policy {
        restart::set_policy(d, id, policy)?;
    }
    Ok(())
}

async fn runtime_update(
    d: &Daemon,
    meta: &runtime_core::meta::ContainerMeta,
    memory: Option<u64>,
    cpus: Option<f64>,
) -> Result<(), RpcError> {
    let mut cmd = tokio::process::Command::new(&meta.runtime);
    cmd.arg("--root").arg(d.root.runc_root()).arg("update");
    if let Some(m) = memory {
        cmd.arg("--memory").arg(m.to_string());
    }
    if let Some(c) = cpus {
        cmd.arg("--cpu-period")
            .arg(CPU_PERIOD.to_string())
            .arg("--cpu-quota")
            .arg(quota(c).to_string());
    }
    cmd.arg(&meta.id);
    let out = cmd.output().await.map_err(|e| {
        RpcError::new(
            ErrorCode::Runtime,
            format!("run {} update: {e}", meta.runtime),
        )
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RpcError::new(
            ErrorCode::Runtime,
            format!("{} update of {} failed: {msg}", meta.runtime, meta.name),
        ));
    }
    Ok(())
}

fn quota(cpus: f64) -> i64 {
    (cpus * CPU_PERIOD as f64).round() as i64
}

/// The new limits into bundle/config.json, for the next run.
fn persist_limits(
    d: &Daemon,
    id: &str,
    memory: Option<u64>,
    cpus: Option<f64>,
) -> Result<(), RpcError> {
    let internal = |e: String| RpcError::new(ErrorCode::Internal, e);
    let bundle = d.root.container(id).bundle();
    let mut oci = spec::load_bundle_config(&bundle).map_err(|e| internal(e.to_string()))?;
    let linux = match oci.linux().clone() {
        Some(l) => l,
        None => LinuxBuilder::default()
            .build()
            .map_err(|e| internal(e.to_string()))?,
    };
    let mut resources = match linux.resources().clone() {
        Some(r) => r,
        None => LinuxResourcesBuilder::default()
            .build()
            .map_err(|e| internal(e.to_string()))?,
    };
    if let Some(m) = memory {
        // LinuxMemory has no setters: through its JSON form, which keeps
        // every other field (swap, reservation...) as it was.
        let mut mem = serde_json::to_value(resources.memory().unwrap_or_default())
            .map_err(|e| internal(e.to_string()))?;
        mem["limit"] = serde_json::json!(m);
        let mem = serde_json::from_value(mem).map_err(|e| internal(e.to_string()))?;
        resources.set_memory(Some(mem));
    }
    if let Some(c) = cpus {
        let mut cpu = resources
            .cpu()
            .clone()
            .unwrap_or_else(|| LinuxCpuBuilder::default().build().unwrap_or_default());
        cpu.set_period(Some(CPU_PERIOD));
        cpu.set_quota(Some(quota(c)));
        resources.set_cpu(Some(cpu));
    }
    let mut linux = linux;
    linux.set_resources(Some(resources));
    oci.set_linux(Some(linux));
    spec::write_config(&oci, &bundle).map_err(|e| internal(e.to_string()))
}
