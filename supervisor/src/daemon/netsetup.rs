//! berthd's side of a container's network: checks that need the
//! registry (`container:<name>`, host ports other containers publish),
//! and running `runtime_core::net` setup and teardown on blocking threads
//! (the CNI plugins are processes; each call takes tens of milliseconds).

use std::path::PathBuf;

use runtime_core::net::{self, NetState, Setup};
use runtime_core::protocol::{ErrorCode, RpcError};
use runtime_core::runopts::{NetworkMode, RunOptions};

use super::registry::Phase;
use super::Daemon;

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

/// What the OCI config needs before the network exists.
pub struct Plan {
    /// `container:<name>`: that container's namespace and directory.
    pub join: Option<(PathBuf, PathBuf)>,
}

/// Checks the network options against the other containers: the target
/// of `container:<name>` must be running; a host port must not be
/// published by another container (portmap keeps no socket that would
/// make the kernel refuse it).
pub fn plan(d: &Daemon, o: &RunOptions) -> Result<Plan, RpcError> {
    let join = match &o.network {
        NetworkMode::Container(reference) => {
            let id = d.registry.resolve(reference).map_err(|_| {
                invalid(format!(
                    "--network container:{reference}: there is no container {reference:?}"
                ))
            })?;
            let pid = d.registry.get(&id).and_then(|e| match &e.phase {
                Phase::Live(s) if s.status == runtime_core::protocol::ShimStatus::Running => {
                    Some(s.pid)
                }
                _ => None,
            });
            let pid = pid.ok_or_else(|| {
                invalid(format!(
                    "--network container:{reference}: that container is not running"
                ))
            })?;
            Some((
                PathBuf::from(format!("/proc/{pid}/ns/net")),
                d.root.container(&id).dir().to_path_buf(),
            ))
        }
        _ => None,
    };
    let entries = d.registry.lock();
    for p in &o.publish {
        // A container being removed, or exited with --rm (so about to
        // be), gives its ports up (its rules go with its own chains):
        // `run --rm -p` back to back must not trip over the previous
        // one's removal still under way.
        // (The exit record is the shim's word; berthd's cache may not have
        // heard of the exit yet when the client already has.)
        let leaving = |e: &&super::registry::Entry| {
            e.removing
                || (e.meta.auto_remove
                    && (e.finished().is_some() || d.root.container(&e.meta.id).exit().exists()))
        };
        let taken = entries.values().filter(|e| !leaving(e)).find(|e| {
            e.meta.options.publish.iter().any(|q| {
                q.host_port == p.host_port
                    && q.protocol == p.protocol
                    && (q.host_ip == p.host_ip || q.host_ip.is_empty() || p.host_ip.is_empty())
            })
        });
        if let Some(e) = taken {
            return Err(invalid(format!(
                "-p {p}: host port {}/{} is already published by container {}",
                p.host_port, p.protocol, e.meta.name
            )));
        }
    }
    Ok(Plan { join })
}

/// Sets up the container's network (namespace, CNI chain, /etc files).
/// On failure nothing network-related is left.
pub async fn setup(
    d: &Daemon,
    id: &str,
    hostname: &str,
    o: &RunOptions,
    plan: &Plan,
) -> Result<NetState, RpcError> {
    let config = d.config.net.clone();
    let dir = d.root.container(id).dir().to_path_buf();
    let (id, hostname, mode, ports) = (
        id.to_string(),
        hostname.to_string(),
        o.network.clone(),
        o.publish.clone(),
    );
    let joined = plan.join.as_ref().map(|(_, dir)| dir.clone());
    let began = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        let made = net::setup(&Setup {
            config: &config,
            container_id: &id,
            container_dir: &dir,
            hostname: &hostname,
            mode: &mode,
            ports: &ports,
            joined_dir: joined.as_deref(),
        });
        if made.is_ok() && mode == NetworkMode::Bridge {
            // What bridge networking costs at start, for operators and the bench.
            log::info!(
                "container {id}: network set up in {} ms",
                began.elapsed().as_millis()
            );
        }
        made
    })
    .await
    .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| match e {
        net::NetError::PortInUse(_) | net::NetError::Config(_) => invalid(e.to_string()),
        other => RpcError::new(ErrorCode::Runtime, format!("network setup: {other}")),
    })
}

/// Tears down whatever network a container directory records (see
/// `runtime_core::net::teardown`).
pub async fn teardown(dir: &std::path::Path, id: &str) -> Result<(), String> {
    let (dir, id) = (dir.to_path_buf(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let began = std::time::Instant::now();
        let had_network = dir.join(net::NET_STATE).exists();
        let done = net::teardown(&dir, &id);
        if done.is_ok() && had_network {
            log::info!(
                "container {id}: network torn down in {} ms",
                began.elapsed().as_millis()
            );
        }
        done
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("network teardown: {e}"))
}

/// Before an exited container runs again (`start`, `restart`, a restart
/// policy): a bridge container whose namespace is gone (a reboot, or a
/// teardown) gets its network set up anew; `container:<name>` joins that
/// container's namespace as it is now (its process has another PID after
/// a restart), so the OCI config is pointed at it again.
pub async fn prepare_rerun(d: &Daemon, id: &str) -> Result<(), RpcError> {
    let Some(entry) = d.registry.get(id) else {
        return Ok(());
    };
    let o = &entry.meta.options;
    let paths = d.root.container(id);
    let dir = paths.dir().to_path_buf();
    match &o.network {
        NetworkMode::Bridge => {
            if net::netns::is_mounted(&dir.join(net::NETNS)) {
                return Ok(());
            }
            log::info!(
                "container {id}: its network namespace is gone; setting the network up again"
            );
            teardown(&dir, id)
                .await
                .map_err(|e| RpcError::new(ErrorCode::Internal, e))?;
            let spec = runtime_core::spec::load_bundle_config(&paths.bundle())
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
            let hostname = spec
                .hostname()
                .clone()
                .unwrap_or_else(|| entry.meta.name.clone());
            setup(d, id, &hostname, o, &Plan { join: None }).await?;
            Ok(())
        }
        NetworkMode::Container(_) => {
            let plan = plan(d, o)?;
            let mut spec = runtime_core::spec::load_bundle_config(&paths.bundle())
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
            net::configure_spec(
                &mut spec,
                &o.network,
                &dir,
                plan.join.as_ref().map(|(ns, _)| ns.as_path()),
            );
            runtime_core::spec::write_config(&spec, &paths.bundle())
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
        }
        NetworkMode::None | NetworkMode::Host => Ok(()),
    }
}
