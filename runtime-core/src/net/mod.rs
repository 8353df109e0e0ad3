//! Container networking through the ecosystem's stack: the CNI reference
//! plugins (bridge + host-local IPAM, portmap, firewall; loopback for
//! `lo`), driven by their documented protocol with berth's own network
//! configuration and bridge.
//!
//! Per container (all in its state directory under the runtime root):
//! `net.json` says what was set up (written before anything is made, so
//! whoever finds the directory, after any crash, can tear it down),
//! `netns` is the pinned network namespace the OCI config points at, and
//! `hosts`, `hostname`, `resolv.conf` are bind-mounted into the container.
//!
//! Architecture Invariant: nothing network-related outlives the container
//! directory. [`teardown`] (CNI DEL, then the namespace unmounted) runs
//! before a container directory is removed, whoever removes it, and is
//! idempotent.

mod cni;
pub mod fixed;
mod masq;
pub mod netns;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::layout::{net_state_in, netns_in};
use crate::mounts;
use crate::runopts::{NetworkMode, PortMapping, Protocol};

/// Errors of network setup and teardown.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network namespace {path}: {op}: {message}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("CNI plugin {plugin} ({command}): {message}")]
    Plugin {
        plugin: String,
        command: String,
        message: String,
    },
    #[error("port {0} is already in use on the host")]
    PortInUse(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or encoding `net.json` failed (a full disk, an I/O error):
    /// berth's own failure, never the user's input.
    #[error("network state {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: crate::Error,
    },
    /// A setup thread died (a bug, not bad input).
    #[error("network setup: {0}")]
    Internal(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NetError + 'a {
    move |source| NetError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Files the network setup writes in a container's runtime directory and
/// binds into it (net.json and the netns pin are named in `layout`).
const HOSTS: &str = "hosts";
const HOSTNAME: &str = "hostname";
const RESOLV: &str = "resolv.conf";

/// The CNI network name; its IPAM leases live under `<dir>/ipam/berth`.
const NETWORK_NAME: &str = "berth";

/// berthd's network settings (`--bridge`, `--bridge-subnet`).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The Linux bridge berth's containers attach to (not docker0).
    pub bridge: String,
    /// Its IPv4 subnet, e.g. 10.89.0.0/24; the gateway is its first address.
    pub subnet: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin: PathBuf,
    /// berth's own network directory (IPAM leases), under the runtime root.
    pub dir: PathBuf,
}

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Default bridge subnet.
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
/// Debian's containernetworking-plugins.
pub const DEFAULT_CNI_BIN: &str = "/usr/lib/cni";

impl NetConfig {
    /// Checks the bridge name and subnet.
    pub fn validate(&self) -> Result<(), NetError> {
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(NetError::Config(format!(
                "bridge name {b:?}: 1-15 letters, digits, '-', '_' or '.'"
            )));
        }
        let ok = self.subnet.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| (8..=30).contains(&l))
        });
        if !ok {
            return Err(NetError::Config(format!(
                "subnet {:?}: use an IPv4 CIDR between /8 and /30",
                self.subnet
            )));
        }
        Ok(())
    }

    /// The CNI network configuration list berth uses for `bridge`, for a
    /// container that publishes `ports`. portmap is in it only when there
    /// are ports: without any it does nothing at ADD but cost a process
    /// (and its DEL lists the nat chains). No masquerade and no firewall
    /// plugin per container: the bridge's fixed rules (`fixed`) do both.
    /// The list is recorded in `net.json`, so the teardown runs exactly the
    /// plugins the setup ran (also an older berth's list, with them).
    pub fn conflist(&self, ports: &[PortMapping]) -> Value {
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // The subnet's masquerade is one fixed rule (`fixed`), not a
            // chain per container.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.join("ipam"),
            }
        })];
        if !ports.is_empty() {
            plugins.push(
                json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
            );
        }
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": plugins,
        })
    }
}

fn loopback_list() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "berth-lo",
        "plugins": [{"type": "loopback"}]
    })
}

/// What was set up for a container: `net.json`, and what `inspect` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetState {
    pub mode: NetworkMode,
    /// The CNI configuration used (kept so teardown uses exactly it, even
    /// if berthd's settings changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflist: Option<Value>,
    #[serde(default)]
    pub cni_bin: Option<PathBuf>,
    /// The ADD result, handed to DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub bridge: Option<String>,
}

/// Reads a container's `net.json`, if it has one.
pub fn read_state(container_dir: &Path) -> Option<NetState> {
    crate::atomic::read_json(&net_state_in(container_dir)).ok()
}

/// Points the spec's network namespace where the mode wants it and bind-
/// mounts the container's /etc/hosts, /etc/hostname and /etc/resolv.conf
/// (written by [`setup`]). `join` is the namespace of `container:<name>`.
pub fn configure_spec(
    spec: &mut Spec,
    mode: &NetworkMode,
    container_dir: &Path,
    join: Option<&Path>,
) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut nss: Vec<LinuxNamespace> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Network)
        .collect();
    let path = match mode {
        NetworkMode::Host => None,
        NetworkMode::None => Some(None),
        NetworkMode::Bridge => Some(Some(netns_in(container_dir))),
        NetworkMode::Container(_) => Some(join.map(Path::to_path_buf)),
    };
    if let Some(path) = path {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Network);
        ns.set_path(path);
        nss.push(ns);
    }
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
    let files = [
        (HOSTS, "/etc/hosts"),
        (HOSTNAME, "/etc/hostname"),
        (RESOLV, "/etc/resolv.conf"),
    ];
    mounts::add(
        spec,
        files
            .iter()
            .map(|(f, t)| mounts::bind(&container_dir.join(f), t, false))
            .collect(),
    );
}

/// Fails when a host port is already taken (a listening socket): portmap
/// would otherwise silently take the traffic from it, or lose it.
pub fn check_ports(ports: &[PortMapping]) -> Result<(), NetError> {
    for p in ports {
        let ip: Ipv4Addr = if p.host_ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            p.host_ip
                .parse()
                .map_err(|_| NetError::Config(format!("host IP {:?}", p.host_ip)))?
        };
        let taken = match p.protocol {
            Protocol::Tcp => TcpListener::bind((ip, p.host_port)).err(),
            Protocol::Udp => UdpSocket::bind((ip, p.host_port)).err(),
        };
        if let Some(e) = taken {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(NetError::PortInUse(format!(
                    "{ip}:{}/{}",
                    p.host_port, p.protocol
                )));
            }
            if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                return Err(NetError::Config(format!(
                    "-p {p}: {ip} is not an address of this host"
                )));
            }
        }
    }
    Ok(())
}

/// What [`setup`] needs.
pub struct Setup<'a> {
    pub config: &'a NetConfig,
    pub container_id: &'a str,
    pub container_dir: &'a Path,
    pub hostname: &'a str,
    pub mode: &'a NetworkMode,
    pub ports: &'a [PortMapping],
    /// For `container:<name>`: that container's directory (its files are copied).
    pub joined_dir: Option<&'a Path>,
}

/// Sets the container's network up: [`prepare`] then [`connect`]. On
/// failure everything made is torn down again before the error returns.
pub fn setup(s: &Setup<'_>) -> Result<NetState, NetError> {
    let state = prepare(s)?;
    connect(s, state)
}

/// The part of the setup the runtime's create needs: records the intent,
/// makes the namespace and writes the /etc files the OCI config
/// bind-mounts (without the address yet). Fast (no plugin runs), so
/// [`connect`] can run beside the runtime's create. On failure everything
/// made is torn down before the error returns.
pub fn prepare(s: &Setup<'_>) -> Result<NetState, NetError> {
    undo_on_error(s, prepare_inner(s))
}

/// The slow part: the CNI chain (address, veth, routes, port mappings)
/// into the namespace [`prepare`] made, then the /etc files rewritten in
/// place (the bind mounts hold their inodes) with the address. The
/// container's process must not start before this returns. On failure
/// everything is torn down before the error returns.
pub fn connect(s: &Setup<'_>, state: NetState) -> Result<NetState, NetError> {
    undo_on_error(s, connect_inner(s, state))
}

fn undo_on_error(s: &Setup<'_>, made: Result<NetState, NetError>) -> Result<NetState, NetError> {
    if made.is_err() {
        if let Err(e) = teardown(s.container_dir, s.container_id) {
            log::error!(
                "container {}: cleaning up after a failed network setup: {e}",
                s.container_id
            );
        }
    }
    made
}

fn prepare_inner(s: &Setup<'_>) -> Result<NetState, NetError> {
    let dir = s.container_dir;
    let mut state = NetState {
        mode: s.mode.clone(),
        ports: s.ports.to_vec(),
        ..Default::default()
    };
    if *s.mode == NetworkMode::Bridge {
        s.config.validate()?;
        check_ports(s.ports)?;
        state.conflist = Some(s.config.conflist(s.ports));
        state.cni_bin = Some(s.config.cni_bin.clone());
        state.bridge = Some(s.config.bridge.clone());
        // The intent first: a crash from here on leaves a record that
        // says what to tear down.
        write_state(dir, &state)?;
        netns::create(&netns_in(dir))?;
    } else {
        write_state(dir, &state)?;
    }
    write_files(s, &state)?;
    Ok(state)
}

fn connect_inner(s: &Setup<'_>, mut state: NetState) -> Result<NetState, NetError> {
    if *s.mode != NetworkMode::Bridge {
        return Ok(state);
    }
    // Once per berthd (at once after the first time).
    fixed::ensure(s.config)?;
    let dir = s.container_dir;
    let ns = netns_in(dir);
    let lo = loopback_list();
    let none = json!({});
    let lo_call = cni::Call {
        bin_dir: &s.config.cni_bin,
        container_id: s.container_id,
        netns: &ns,
        ifname: "lo",
        runtime_config: &none,
    };
    let rc = port_mappings(s.ports);
    // The list recorded by `prepare`: teardown runs the same one.
    let list = state
        .conflist
        .clone()
        .unwrap_or_else(|| s.config.conflist(s.ports));
    let eth_call = cni::Call {
        bin_dir: &s.config.cni_bin,
        container_id: s.container_id,
        netns: &ns,
        ifname: "eth0",
        runtime_config: &rc,
    };
    // `lo` and the bridge chain touch different interfaces: bring
    // them up side by side (each plugin is a process of its own).
    let (lo_added, result) = std::thread::scope(|scope| {
        let lo_thread = scope.spawn(|| cni::add(&lo, &lo_call));
        let result = cni::add(&list, &eth_call);
        let lo_added = lo_thread.join().unwrap_or_else(|_| {
            Err(NetError::Internal(
                "the loopback setup thread panicked".into(),
            ))
        });
        (lo_added, result)
    });
    let result = result?;
    lo_added?;
    fill_from_result(&mut state, &result);
    state.result = Some(result);
    write_state(dir, &state)?;
    write_files(s, &state)?;
    Ok(state)
}

/// The runtime configuration portmap reads (its `portMappings` capability).
fn port_mappings(ports: &[PortMapping]) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.to_string(),
                "hostIP": p.host_ip,
            })
        })
        .collect();
    json!({ "portMappings": mappings })
}

fn write_state(dir: &Path, state: &NetState) -> Result<(), NetError> {
    let path = net_state_in(dir);
    let fail = |source| NetError::State {
        path: path.clone(),
        source,
    };
    let data = serde_json::to_vec(state).map_err(|e| fail(crate::Error::Other(e.to_string())))?;
    // Means nothing after a reboot (the namespace and rules are gone too).
    crate::atomic::write_until_reboot(&path, &data).map_err(fail)
}

/// The container's address, gateway and MAC from a CNI result.
fn fill_from_result(state: &mut NetState, r: &Value) {
    let ifaces = r["interfaces"].as_array().cloned().unwrap_or_default();
    let ip = r["ips"].as_array().and_then(|ips| {
        ips.iter()
            .find(|ip| {
                ip["interface"]
                    .as_u64()
                    .and_then(|i| ifaces.get(i as usize))
                    .is_some_and(|iface| iface["sandbox"].is_string())
            })
            .or_else(|| ips.first())
            .cloned()
    });
    if let Some(ip) = ip {
        state.ip = ip["address"].as_str().map(str::to_string);
        state.gateway = ip["gateway"].as_str().map(str::to_string);
        if let Some(iface) = ip["interface"]
            .as_u64()
            .and_then(|i| ifaces.get(i as usize))
        {
            state.mac = iface["mac"].as_str().map(str::to_string);
        }
    }
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf for the container: the
/// host's resolv.conf as is (what Docker does); for `container:<name>`
/// that container's files.
fn write_files(s: &Setup<'_>, state: &NetState) -> Result<(), NetError> {
    let dir = s.container_dir;
    let hostname = format!("{}\n", s.hostname);
    let copy_from = |name: &str| s.joined_dir.and_then(|d| std::fs::read(d.join(name)).ok());
    let hosts = copy_from(HOSTS).unwrap_or_else(|| {
        let mut h =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        let addr = state.ip.as_deref().and_then(|a| a.split('/').next());
        match (s.mode, addr) {
            (NetworkMode::Host, _) => {
                h = std::fs::read_to_string("/etc/hosts").unwrap_or(h);
            }
            (_, Some(ip)) => h.push_str(&format!("{ip}\t{}\n", s.hostname)),
            _ => {}
        }
        h.into_bytes()
    });
    let resolv = copy_from(RESOLV)
        .or_else(|| std::fs::read("/etc/resolv.conf").ok())
        .unwrap_or_default();
    for (name, data) in [
        (HOSTS, hosts),
        (HOSTNAME, hostname.into_bytes()),
        (RESOLV, resolv),
    ] {
        // In place (truncate, write), never renamed: once the runtime has
        // bind-mounted a file, the container sees its inode.
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(io("write", &path))?;
    }
    Ok(())
}

/// Undoes [`setup`] for a container directory: CNI DEL with the recorded
/// configuration (the plugins release the lease and delete the veth and
/// iptables rules; they tolerate a namespace that is already gone), then
/// the namespace unmounted and removed. Safe to repeat; a directory
/// without `net.json` has nothing to undo but a possible namespace file.
pub fn teardown(container_dir: &Path, container_id: &str) -> Result<(), NetError> {
    let ns = netns_in(container_dir);
    if let Some(state) = read_state(container_dir) {
        if let (Some(list), Some(bin)) = (&state.conflist, &state.cni_bin) {
            let rc = port_mappings(&state.ports);
            // A namespace that is not there (never made, or its file left
            // unmounted by a reboot or a crash mid-create) is passed as
            // empty: the plugins then skip the in-namespace part and still
            // free the host's (a plain file would make them fail).
            let ns_arg = if netns::is_mounted(&ns) {
                ns.clone()
            } else {
                PathBuf::new()
            };
            cni::del(
                list,
                &cni::Call {
                    bin_dir: bin,
                    container_id,
                    netns: &ns_arg,
                    ifname: "eth0",
                    runtime_config: &rc,
                },
                state.result.as_ref(),
            )?;
            if ns_arg.as_os_str().is_empty() {
                masq::remove_leftovers(NETWORK_NAME, container_id);
            }
        }
    }
    netns::remove(&ns)?;
    let state = net_state_in(container_dir);
    match std::fs::remove_file(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::Io {
            what: "remove",
            path: state,
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let mut c = NetConfig {
            bridge: "berth0".into(),
            subnet: "10.210.3.0/24".into(),
            cni_bin: DEFAULT_CNI_BIN.into(),
            dir: "/tmp/x".into(),
        };
        assert!(c.validate().is_ok());
        let l = c.conflist(&[]);
        assert_eq!(l["plugins"][0]["bridge"], "berth0");
        assert_eq!(l["plugins"][0]["ipam"]["dataDir"], "/tmp/x/ipam");
        let types = |l: &Value| -> Vec<String> {
            l["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(types(&l), ["bridge"]);
        let l = c.conflist(&[PortMapping::parse("8080:80").unwrap()]);
        assert_eq!(types(&l), ["bridge", "portmap"]);
        c.bridge = "a-very-long-bridge-name".into();
        assert!(c.validate().is_err());
        c.bridge = "b".into();
        c.subnet = "10.0.0.0".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_state_write_failure_is_not_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("no-such-dir");
        let e = write_state(&gone, &NetState::default()).unwrap_err();
        assert!(matches!(e, NetError::State { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-dir"), "{e}");
    }

    #[test]
    fn result_parsing() {
        let r = json!({
            "interfaces": [{"name": "br"}, {"name": "veth"}, {"name": "eth0", "mac": "aa", "sandbox": "/x"}],
            "ips": [{"address": "10.210.3.2/24", "gateway": "10.210.3.1", "interface": 2}]
        });
        let mut s = NetState::default();
        fill_from_result(&mut s, &r);
        assert_eq!(s.ip.as_deref(), Some("10.210.3.2/24"));
        assert_eq!(s.gateway.as_deref(), Some("10.210.3.1"));
        assert_eq!(s.mac.as_deref(), Some("aa"));
    }

    #[test]
    fn namespace_follows_mode() {
        let dir = Path::new("/c");
        let net_path = |spec: &Spec| {
            spec.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .clone()
                .unwrap()
                .into_iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .map(|n| n.path().clone())
        };
        let mut spec = crate::spec::default_spec();
        configure_spec(&mut spec, &NetworkMode::Bridge, dir, None);
        assert_eq!(net_path(&spec), Some(Some(PathBuf::from("/c/netns"))));
        configure_spec(&mut spec, &NetworkMode::Host, dir, None);
        assert_eq!(net_path(&spec), None);
        configure_spec(&mut spec, &NetworkMode::None, dir, None);
        assert_eq!(net_path(&spec), Some(None));
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m.destination() == Path::new("/etc/hosts"))
                .count(),
            1
        );
    }
}
