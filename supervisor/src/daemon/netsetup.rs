//! berthd's side of a container's network: checks that need the
//! registry (`container:<name>`, host ports other containers publish),
//! and running `runtime_core::net` setup and teardown on blocking threads
//! (the CNI plugins are processes; each call takes tens of milliseconds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use runtime_core::layout::{self, Root};
use runtime_core::net::{self, NetState, Setup};
use runtime_core::protocol::{ErrorCode, RpcError};
use runtime_core::runopts::{NetworkMode, RunOptions};

use super::registry::{Entry, Phase};
use super::Daemon;

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

/// What the OCI config needs before the network exists.
pub struct Plan {
    /// `container:<name>`: that container's namespace and directory.
    pub join: Option<(PathBuf, PathBuf)>,
}

/// Checks the network options that need other containers: the target of
/// `container:<name>` must be running. (Host ports are checked by
/// [`check_published`] under the same registry lock that reserves the new
/// container, so two creates cannot both pass.)
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
    Ok(Plan { join })
}

/// Fails when a host port of `o` is published by another container that
/// holds it: one whose process has not exited (running, being created or
/// run again, being removed while it still runs). As Docker, an exited
/// container gives its ports up and takes them again when it starts; but
/// its port mappings (iptables rules) exist until its network is released
/// (see [`release_on_exit`], or its removal), so an exited container whose
/// network is still recorded is returned: the caller releases it with
/// [`release`] before setting up the new network, or the new container's
/// traffic could still be mapped to the old one's address. `this`: the
/// container itself, when it runs again. Called with the registry locked
/// by the caller, in the same critical section that reserves the
/// container (or claims it to run again).
pub fn check_published(
    root: &Root,
    entries: &HashMap<String, Box<Entry>>,
    o: &RunOptions,
    this: Option<&str>,
) -> Result<Releasing, RpcError> {
    let mut releasing = Releasing(Vec::new());
    for e in entries.values() {
        if Some(e.meta.id.as_str()) == this {
            continue;
        }
        let Some(p) = o.publish.iter().find(|p| {
            e.meta.options.publish.iter().any(|q| {
                q.host_port == p.host_port
                    && q.protocol == p.protocol
                    && (q.host_ip == p.host_ip || q.host_ip.is_empty() || p.host_ip.is_empty())
            })
        }) else {
            continue;
        };
        let paths = root.container(&e.meta.id);
        // The exit record is the shim's word: berthd's cache may not have
        // heard of the exit yet when the client already has (`run --rm -p`
        // back to back).
        let exited = e.finished().is_some() || paths.exit().exists();
        if !exited {
            return Err(invalid(format!(
                "-p {p}: host port {}/{} is already published by container {}",
                p.host_port, p.protocol, e.meta.name
            )));
        }
        if paths.net_state().exists() {
            releasing.0.push(e.meta.id.clone());
        }
    }
    Ok(releasing)
}

/// Exited containers whose network still maps a host port that a new
/// container publishes (from [`check_published`]).
#[must_use = "the ports count as free only once these are released"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Releasing(Vec<String>);

/// Releases the networks [`check_published`] found still in place, each
/// under its container's network lock: after this, none of their port
/// mappings exists (a release already running, at the exit or in a
/// removal, is waited for; one that comes later finds nothing to do).
/// Such a container cannot run again meanwhile: its own port check sees
/// the caller's reservation and refuses.
pub async fn release(d: &Daemon, releasing: Releasing) -> Result<(), RpcError> {
    for id in releasing.0 {
        let dir = d.root.container(&id).dir().to_path_buf();
        let _guard = net_lock(&dir).await;
        if !layout::net_state_in(&dir).exists() {
            continue;
        }
        teardown_locked(&dir, &id).await.map_err(|e| {
            RpcError::new(
                ErrorCode::Internal,
                format!("releasing the ports of exited container {id}: {e}"),
            )
        })?;
    }
    Ok(())
}

/// One lock per container directory around every setup and teardown of
/// its network, so the release at exit, a `start` setting it up again and
/// `rm` never run CNI for the same container at once.
async fn net_lock(dir: &Path) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: Mutex<Vec<(PathBuf, Weak<tokio::sync::Mutex<()>>)>> = Mutex::new(Vec::new());
    let lock = {
        let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|(_, w)| w.strong_count() > 0);
        match locks
            .iter()
            .find_map(|(p, w)| (p == dir).then(|| w.upgrade()).flatten())
        {
            Some(l) => l,
            None => {
                let l = Arc::new(tokio::sync::Mutex::new(()));
                locks.push((dir.to_path_buf(), Arc::downgrade(&l)));
                l
            }
        }
    };
    lock.lock_owned().await
}

/// Maps a network error to the API's: the user's input (a taken port, a
/// bad option) is invalid; a plugin's failure is the runtime's; berth's
/// own (its state file, the namespace, a thread) is internal.
fn rpc_error(e: net::NetError) -> RpcError {
    use net::NetError as E;
    match e {
        E::PortInUse(_) | E::Config(_) => invalid(e.to_string()),
        E::Plugin { .. } => RpcError::new(ErrorCode::Runtime, format!("network setup: {e}")),
        E::State { .. } | E::Io { .. } | E::Netns { .. } | E::Internal(_) => {
            RpcError::new(ErrorCode::Internal, format!("network setup: {e}"))
        }
    }
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
    let _guard = net_lock(d.root.container(id).dir()).await;
    setup_locked(d, id, hostname, o, plan).await
}

async fn setup_locked(
    d: &Daemon,
    id: &str,
    hostname: &str,
    o: &RunOptions,
    plan: &Plan,
) -> Result<NetState, RpcError> {
    let (net, beside) = setup_beside_locked(d, id, hostname, o, plan, async {}).await;
    debug_assert!(net.is_err() || beside.is_some());
    net
}

/// Sets up the container's network with `beside` (the runtime's create)
/// running while the CNI chain does: the namespace and the files the OCI
/// config bind-mounts are made first (fast), then the chain and `beside`
/// run at once. `beside` runs only when that first part succeeded
/// (None otherwise); its outcome is returned whatever the chain's was, so
/// the caller undoes it when the network failed. The caller must not let
/// the container's process start before this returns Ok.
pub async fn setup_beside<T>(
    d: &Daemon,
    id: &str,
    hostname: &str,
    o: &RunOptions,
    plan: &Plan,
    beside: impl std::future::Future<Output = T>,
) -> (Result<NetState, RpcError>, Option<T>) {
    let _guard = net_lock(d.root.container(id).dir()).await;
    setup_beside_locked(d, id, hostname, o, plan, beside).await
}

async fn setup_beside_locked<T>(
    d: &Daemon,
    id: &str,
    hostname: &str,
    o: &RunOptions,
    plan: &Plan,
    beside: impl std::future::Future<Output = T>,
) -> (Result<NetState, RpcError>, Option<T>) {
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
    let run = move |connect_with: Option<NetState>| {
        let setup = Setup {
            config: &config,
            container_id: &id,
            container_dir: &dir,
            hostname: &hostname,
            mode: &mode,
            ports: &ports,
            joined_dir: joined.as_deref(),
        };
        match connect_with {
            None => net::prepare(&setup),
            Some(state) => {
                let made = net::connect(&setup, state);
                if made.is_ok() && mode == NetworkMode::Bridge {
                    // What bridge networking costs at start, for operators and the bench.
                    log::info!(
                        "container {id}: network set up in {} ms",
                        began.elapsed().as_millis()
                    );
                }
                made
            }
        }
    };
    let run2 = run.clone();
    let blocking = |r: Result<Result<NetState, net::NetError>, tokio::task::JoinError>| {
        r.map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(rpc_error)
    };
    let prepared = match blocking(tokio::task::spawn_blocking(move || run(None)).await) {
        Ok(state) => state,
        Err(e) => return (Err(e), None),
    };
    let (net, beside) = tokio::join!(
        async { blocking(tokio::task::spawn_blocking(move || run2(Some(prepared))).await) },
        beside
    );
    (net, Some(beside))
}

/// Tears down whatever network a container directory records (see
/// `runtime_core::net::teardown`).
pub async fn teardown(dir: &Path, id: &str) -> Result<(), String> {
    let _guard = net_lock(dir).await;
    teardown_locked(dir, id).await
}

async fn teardown_locked(dir: &Path, id: &str) -> Result<(), String> {
    let (dir, id) = (dir.to_path_buf(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let began = std::time::Instant::now();
        let had_network = layout::net_state_in(&dir).exists();
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

/// A bridge container that has exited gives its network up, as Docker's
/// does: its published ports, address, veth and namespace are released
/// (in the background, off the path of whoever waited for the exit), and
/// `start` sets them up again. Skipped when the container is already
/// running again, or is being (or with `--rm` about to be) removed: the
/// removal tears down.
pub async fn release_on_exit(d: Arc<Daemon>, id: String) {
    let id = id.as_str();
    let dir = d.root.container(id).dir().to_path_buf();
    let _guard = net_lock(&dir).await;
    // Looked at under the lock: a `start` that claimed the container
    // first keeps its network (and checks its ports again).
    let exited = d.registry.get(id).is_some_and(|e| {
        e.meta.options.network == NetworkMode::Bridge
            && !e.removing
            && !e.meta.auto_remove
            && e.finished().is_some()
    });
    if !exited || !layout::net_state_in(&dir).exists() {
        return;
    }
    if let Err(e) = teardown_locked(&dir, id).await {
        log::warn!("container {id}: releasing its network after the exit: {e}");
    }
}

/// Before an exited container runs again (`start`, `restart`, a restart
/// policy): a bridge container gets its ports checked against the other
/// containers again and, when its network was released at the exit (or
/// its namespace is gone after a reboot), its network set up anew;
/// `container:<name>` joins that container's namespace as it is now (its
/// process has another PID after a restart), so the OCI config is pointed
/// at it again.
pub async fn prepare_rerun(d: &Daemon, id: &str) -> Result<(), RpcError> {
    let Some(entry) = d.registry.get(id) else {
        return Ok(());
    };
    let o = &entry.meta.options;
    let paths = d.root.container(id);
    let dir = paths.dir().to_path_buf();
    match &o.network {
        NetworkMode::Bridge => {
            let _guard = net_lock(&dir).await;
            // Another container may have taken a port while this one was
            // exited, even if its network was not released yet.
            let releasing = check_published(&d.root, &d.registry.lock(), o, Some(id))?;
            release(d, releasing).await?;
            if net::netns::is_mounted(&paths.netns()) {
                return Ok(());
            }
            teardown_locked(&dir, id)
                .await
                .map_err(|e| RpcError::new(ErrorCode::Internal, e))?;
            let hostname = hostname_of(&paths, &entry)?;
            setup_locked(d, id, &hostname, o, &Plan { join: None }).await?;
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
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
            rewrite_files_after_reboot(d, id, &entry, &plan).await
        }
        NetworkMode::None | NetworkMode::Host => {
            rewrite_files_after_reboot(d, id, &entry, &Plan { join: None }).await
        }
    }
}

/// The /etc files the OCI config bind-mounts live in the runtime
/// directory, which a reboot empties: written again (with their record)
/// when they are gone. A bridge container's are, with its namespace.
async fn rewrite_files_after_reboot(
    d: &Daemon,
    id: &str,
    entry: &Entry,
    plan: &Plan,
) -> Result<(), RpcError> {
    let paths = d.root.container(id);
    let _guard = net_lock(paths.dir()).await;
    if net::read_state(paths.dir()).is_some() {
        return Ok(());
    }
    let hostname = hostname_of(&paths, entry)?;
    setup_locked(d, id, &hostname, &entry.meta.options, plan)
        .await
        .map(drop)
}

/// The container's hostname as its bundle's config says (its name when
/// the config has none), for setting its network up again.
fn hostname_of(
    paths: &runtime_core::layout::ContainerPaths,
    entry: &Entry,
) -> Result<String, RpcError> {
    let spec = runtime_core::spec::load_bundle_config(&paths.bundle())
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(spec
        .hostname()
        .clone()
        .unwrap_or_else(|| entry.meta.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::meta::ContainerMeta;
    use runtime_core::runopts::PortMapping;

    fn with_port(id: &str, port: &str) -> Entry {
        let mut meta: ContainerMeta = serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "created_at": "", "command": [], "rootfs": "",
            "log": {"max_size": 0, "max_files": 1}, "runtime": "runc",
        }))
        .unwrap();
        meta.options.publish = vec![PortMapping::parse(port).unwrap()];
        Entry::new(meta, Phase::Creating)
    }

    #[test]
    fn a_reserved_port_is_refused_to_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mut entries = HashMap::new();
        let a = with_port("a", "8080:80");
        let o = a.meta.options.clone();
        assert!(check_published(&root, &entries, &o, None).is_ok());
        entries.insert("a".to_string(), Box::new(a));
        let e = check_published(&root, &entries, &o, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(
            e.message.contains("already published by container a"),
            "{}",
            e.message
        );
        // The container itself, running again, does not conflict with itself.
        assert!(check_published(&root, &entries, &o, Some("a")).is_ok());
    }

    #[test]
    fn an_exited_container_frees_its_port_only_once_its_network_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mut a = with_port("a", "8080:80");
        a.phase = Phase::Gone {
            exit: None,
            reason: None,
        };
        let o = a.meta.options.clone();
        let entries = HashMap::from([("a".to_string(), Box::new(a))]);
        // Its network released: the port is free, nothing to wait for.
        let free = check_published(&root, &entries, &o, None).unwrap();
        assert_eq!(free, Releasing::default());
        // Its network (port mappings) still recorded: released first.
        let a_dir = root.container("a").dir().to_path_buf();
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::write(root.container("a").net_state(), "{}").unwrap();
        let releasing = check_published(&root, &entries, &o, None).unwrap();
        assert_eq!(releasing, Releasing(vec!["a".to_string()]));
        // Another port is not held up by it.
        let mut other = o.clone();
        other.publish = vec![PortMapping::parse("8081:80").unwrap()];
        let free = check_published(&root, &entries, &other, None).unwrap();
        assert_eq!(free, Releasing::default());
    }

    #[test]
    fn io_failures_are_internal_not_the_users() {
        let e = rpc_error(net::NetError::State {
            path: "/x/net.json".into(),
            source: runtime_core::Error::Other("no space left on device".into()),
        });
        assert_eq!(e.code, ErrorCode::Internal);
        let e = rpc_error(net::NetError::PortInUse("0.0.0.0:80/tcp".into()));
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
}
