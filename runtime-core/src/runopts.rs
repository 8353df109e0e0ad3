//! The options of `berth run` that make a real service: network, ports,
//! mounts, user, limits, security, init, labels, stop settings.
//!
//! The CLI parses flags into [`RunOptions`] with the parsers here (so a
//! malformed value fails before anything is sent), berthd validates what
//! needs the host or the rootfs and applies the result to the OCI config,
//! and the whole struct is kept in meta.json so `inspect` shows it after a
//! restart.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Everything a malformed option can be; each names the flag and value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct OptError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> OptError {
    OptError {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Which network a container gets (`--network`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetworkMode {
    /// berth's own bridge, through the CNI plugins (Docker's default).
    #[default]
    Bridge,
    /// A network namespace with only `lo`.
    None,
    /// The host's network namespace.
    Host,
    /// Another container's network namespace (by reference).
    Container(String),
}

impl NetworkMode {
    /// Parses `bridge`, `none`, `host` or `container:<name|id>`.
    pub fn parse(s: &str) -> Result<NetworkMode, OptError> {
        match s {
            "bridge" | "default" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => match other.strip_prefix("container:") {
                Some(c) if !c.is_empty() => Ok(NetworkMode::Container(c.to_string())),
                _ => Err(bad(
                    "--network",
                    s,
                    "unknown network mode: use bridge, none, host or container:<name>",
                )),
            },
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Container(c) => write!(f, "container:{c}"),
        }
    }
}

impl TryFrom<String> for NetworkMode {
    type Error = OptError;
    fn try_from(s: String) -> Result<Self, OptError> {
        NetworkMode::parse(&s)
    }
}

impl From<NetworkMode> for String {
    fn from(m: NetworkMode) -> String {
        m.to_string()
    }
}

/// tcp or udp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port (`-p [IP:]HOST:CONTAINER[/tcp|udp]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it listens on; empty means every address.
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// Parses `[IP:]HOST:CONTAINER[/tcp|udp]`. A host port is required
    /// (berth does not pick one).
    pub fn parse(s: &str) -> Result<PortMapping, OptError> {
        let flag = "-p";
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some(_) => return Err(bad(flag, s, "the protocol must be tcp or udp")),
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [host, ctr] => ("", *host, *ctr),
            [ip, host, ctr] => (*ip, *host, *ctr),
            _ => {
                return Err(bad(
                    flag,
                    s,
                    "expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]",
                ))
            }
        };
        if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(bad(flag, s, format!("{ip:?} is not an IPv4 address")));
        }
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(
                flag,
                s,
                format!("{p:?} is not a port number (1-65535)"),
            )),
        };
        Ok(PortMapping {
            host_ip: if ip == "0.0.0.0" {
                String::new()
            } else {
                ip.to_string()
            },
            host_port: port(host)?,
            container_port: port(ctr)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    /// Docker's `port` form: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.protocol, ip, self.host_port
        )
    }
}

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Tmpfs,
}

/// One mount (`-v`, `--mount`, `--tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Host path of a bind mount (absolute).
    #[serde(default)]
    pub source: Option<String>,
    /// Path inside the container (absolute).
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// Extra tmpfs options (`size=64m`, `mode=1777`).
    #[serde(default)]
    pub options: Vec<String>,
}

fn abs_target(flag: &'static str, whole: &str, t: &str) -> Result<String, OptError> {
    if !t.starts_with('/') {
        return Err(bad(
            flag,
            whole,
            format!("container path {t:?} is not absolute"),
        ));
    }
    if t.split('/').any(|c| c == "..") {
        return Err(bad(flag, whole, "container path must not contain \"..\""));
    }
    if t == "/" {
        return Err(bad(flag, whole, "cannot mount over the container's root"));
    }
    Ok(t.to_string())
}

fn abs_source(flag: &'static str, whole: &str, s: &str) -> Result<String, OptError> {
    if !s.starts_with('/') {
        return Err(bad(
            flag,
            whole,
            format!("host path {s:?} is relative: give an absolute path (named volumes are not supported)"),
        ));
    }
    Ok(s.to_string())
}

impl MountSpec {
    /// Parses `-v HOST:CTR[:ro|rw]`.
    pub fn parse_volume(s: &str) -> Result<MountSpec, OptError> {
        let flag = "-v";
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            _ => return Err(bad(flag, s, "expected HOST_PATH:CONTAINER_PATH[:ro|rw]")),
        };
        let mut readonly = false;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => readonly = true,
                "rw" => readonly = false,
                other => return Err(bad(flag, s, format!("unknown option {other:?} (ro or rw)"))),
            }
        }
        Ok(MountSpec {
            kind: MountKind::Bind,
            source: Some(abs_source(flag, s, src)?),
            target: abs_target(flag, s, dst)?,
            readonly,
            options: Vec::new(),
        })
    }

    /// Parses `--tmpfs /path[:opt,opt]`.
    pub fn parse_tmpfs(s: &str) -> Result<MountSpec, OptError> {
        let (dst, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut readonly = false;
        let mut options = Vec::new();
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => readonly = true,
                "rw" => readonly = false,
                o if tmpfs_option_ok(o) => options.push(o.to_string()),
                other => return Err(bad("--tmpfs", s, format!("unknown option {other:?}"))),
            }
        }
        Ok(MountSpec {
            kind: MountKind::Tmpfs,
            source: None,
            target: abs_target("--tmpfs", s, dst)?,
            readonly,
            options,
        })
    }

    /// Parses `--mount type=bind|tmpfs,src=..,dst=..[,readonly]`.
    pub fn parse_mount(s: &str) -> Result<MountSpec, OptError> {
        let flag = "--mount";
        let mut kind = None;
        let (mut src, mut dst, mut readonly, mut options) = (None, None, false, Vec::new());
        for field in s.split(',') {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (field, None),
            };
            match (k, v) {
                ("type", Some("bind")) => kind = Some(MountKind::Bind),
                ("type", Some("tmpfs")) => kind = Some(MountKind::Tmpfs),
                ("type", _) => return Err(bad(flag, s, "type must be bind or tmpfs")),
                ("source" | "src", Some(v)) => src = Some(v),
                ("target" | "dst" | "destination", Some(v)) => dst = Some(v),
                ("readonly" | "ro", None | Some("true" | "1")) => readonly = true,
                ("readonly" | "ro", Some("false" | "0")) => readonly = false,
                ("tmpfs-size", Some(v)) => {
                    let n = parse_bytes("--mount tmpfs-size", v)?;
                    options.push(format!("size={n}"));
                }
                ("tmpfs-mode", Some(v)) => {
                    if u32::from_str_radix(v, 8).is_err() {
                        return Err(bad(flag, s, format!("tmpfs-mode {v:?} is not octal")));
                    }
                    options.push(format!("mode={v}"));
                }
                _ => return Err(bad(flag, s, format!("unknown field {field:?}"))),
            }
        }
        let kind = kind.ok_or_else(|| bad(flag, s, "type= is required (bind or tmpfs)"))?;
        let dst = dst.ok_or_else(|| bad(flag, s, "target= is required"))?;
        let source = match (kind, src) {
            (MountKind::Bind, Some(v)) => Some(abs_source(flag, s, v)?),
            (MountKind::Bind, None) => {
                return Err(bad(flag, s, "source= is required for a bind mount"))
            }
            (MountKind::Tmpfs, Some(_)) => return Err(bad(flag, s, "a tmpfs mount has no source")),
            (MountKind::Tmpfs, None) => None,
        };
        if kind == MountKind::Bind && !options.is_empty() {
            return Err(bad(flag, s, "tmpfs-* fields apply to type=tmpfs only"));
        }
        Ok(MountSpec {
            kind,
            source,
            target: abs_target(flag, s, dst)?,
            readonly,
            options,
        })
    }
}

fn tmpfs_option_ok(o: &str) -> bool {
    matches!(o, "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev")
        || o.starts_with("size=")
        || o.starts_with("mode=")
        || o.starts_with("uid=")
        || o.starts_with("gid=")
}

/// `--security-opt seccomp=...`: which syscall filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// berth's default profile (Docker's and Podman's).
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in the containers/Docker JSON format (its content).
    Profile(String),
}

/// Resource limits (`--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
/// `--pids-limit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Memory plus swap in bytes, -1 for unlimited (Docker's meaning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    /// CPUs, e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// At most this many processes; -1 or 0 for unlimited (as Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

/// Everything `berth run` asks for beyond the process itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    pub network: NetworkMode,
    pub publish: Vec<PortMapping>,
    pub mounts: Vec<MountSpec>,
    pub read_only: bool,
    /// `-u`: `name|uid[:group|gid]`.
    pub user: Option<String>,
    pub group_add: Vec<String>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
    pub limits: Limits,
    /// Run tini as PID 1.
    pub init: bool,
    pub labels: BTreeMap<String, String>,
    /// Signal `stop` sends first (name or number), Docker's default SIGTERM.
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL, Docker's default 10.
    pub stop_timeout: Option<u32>,
}

/// Parses a byte size: digits with an optional b/k/m/g suffix (Docker's
/// units, powers of 1024).
pub fn parse_bytes(flag: &'static str, s: &str) -> Result<i64, OptError> {
    let lower = s.trim().to_ascii_lowercase();
    // "64mb" means "64m"; a bare "b" means bytes.
    let unit_b = ["kb", "mb", "gb"].iter().any(|u| lower.ends_with(u));
    let lower = if unit_b || lower.ends_with('b') {
        &lower[..lower.len() - 1]
    } else {
        lower.as_str()
    };
    let (num, mult): (&str, f64) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1024.0),
        Some('m') => (&lower[..lower.len() - 1], 1024.0 * 1024.0),
        Some('g') => (&lower[..lower.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (lower, 1.0),
    };
    let digits = !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.');
    let n = match num.parse::<f64>() {
        Ok(n) if digits && n.is_finite() => n * mult,
        _ => {
            return Err(bad(
                flag,
                s,
                "not a size: use bytes or a b/k/m/g suffix, e.g. 64m",
            ))
        }
    };
    if n > i64::MAX as f64 {
        return Err(bad(flag, s, "too large"));
    }
    Ok(n as i64)
}

/// `--memory`: at least 6 MiB, as Docker requires (less cannot start a container).
pub fn parse_memory(s: &str) -> Result<i64, OptError> {
    let n = parse_bytes("--memory", s)?;
    if n < 6 << 20 {
        return Err(bad("--memory", s, "the minimum is 6m"));
    }
    Ok(n)
}

/// `--memory-swap`: a size, or -1 for unlimited swap.
pub fn parse_memory_swap(s: &str) -> Result<i64, OptError> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    parse_bytes("--memory-swap", s)
}

/// `--cpus`: a positive number of CPUs, at most this host's.
pub fn parse_cpus(s: &str) -> Result<f64, OptError> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(bad("--cpus", s, "must be a positive number, e.g. 0.5")),
    }
}

/// `--label k=v` (or `k`, an empty value, as Docker).
pub fn parse_label(s: &str) -> Result<(String, String), OptError> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.is_empty() {
        return Err(bad("--label", s, "the key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Reads an `--env-file`: `K=V` lines, `K` alone copies ours (as Docker),
/// blank lines and `#` comments skipped.
pub fn parse_env_file(content: &str, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    content
        .lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| match l.split_once('=') {
            Some(_) => Some(l.to_string()),
            None => lookup(l.trim_end()).map(|v| format!("{}={v}", l.trim_end())),
        })
        .collect()
}

impl RunOptions {
    /// Checks combinations that no single flag parser can see.
    pub fn validate(&self) -> Result<(), OptError> {
        if !self.publish.is_empty() && self.network != NetworkMode::Bridge {
            return Err(bad(
                "-p",
                &self.publish[0].to_string(),
                format!(
                    "ports can only be published with --network bridge, not {}",
                    self.network
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.publish {
            if !seen.insert((p.host_ip.clone(), p.host_port, p.protocol)) {
                return Err(bad("-p", &p.to_string(), "the host port is given twice"));
            }
        }
        let mut targets = std::collections::HashSet::new();
        for m in &self.mounts {
            if !targets.insert(m.target.trim_end_matches('/')) {
                return Err(bad(
                    "mount",
                    &m.target,
                    "two mounts at the same container path",
                ));
            }
        }
        if let (Some(mem), Some(swap)) = (self.limits.memory, self.limits.memory_swap) {
            if swap != -1 && swap < mem {
                return Err(bad(
                    "--memory-swap",
                    &swap.to_string(),
                    "must be at least --memory (it is memory plus swap), or -1",
                ));
            }
        }
        if self.limits.memory_swap.is_some() && self.limits.memory.is_none() {
            return Err(bad(
                "--memory-swap",
                &format!("{:?}", self.limits.memory_swap),
                "needs --memory as well",
            ));
        }
        if let Some(s) = &self.stop_signal {
            if parse_signal(s).is_none() {
                return Err(bad("--stop-signal", s, "unknown signal"));
            }
        }
        Ok(())
    }
}

/// A signal by name (`TERM`, `SIGTERM`) or number, as `--stop-signal` takes it.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        assert_eq!(p.to_string(), "80/tcp -> 0.0.0.0:8080");
        let p = PortMapping::parse("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(p.host_ip, "127.0.0.1");
        assert_eq!(p.protocol, Protocol::Udp);
        for badp in [
            "80",
            "x:80",
            "8080:80/sctp",
            "1.2.3:80:80",
            "0:80",
            "70000:80",
            "a:b:c:d",
        ] {
            let e = PortMapping::parse(badp).unwrap_err();
            assert_eq!(e.flag, "-p", "{badp}");
        }
    }

    #[test]
    fn volumes_and_mounts() {
        let m = MountSpec::parse_volume("/srv:/www:ro").unwrap();
        assert!(m.readonly);
        assert_eq!(m.source.as_deref(), Some("/srv"));
        let e = MountSpec::parse_volume("srv:/www").unwrap_err();
        assert!(e.reason.contains("relative"), "{e}");
        assert!(MountSpec::parse_volume("/srv:www").is_err());
        assert!(MountSpec::parse_volume("/srv:/www:zz").is_err());
        assert!(MountSpec::parse_volume("/srv:/a/../b").is_err());
        let m = MountSpec::parse_mount("type=bind,src=/data,dst=/data,readonly").unwrap();
        assert!(m.readonly);
        let m = MountSpec::parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m").unwrap();
        assert_eq!(m.options, vec!["size=1048576"]);
        assert!(MountSpec::parse_mount("type=volume,dst=/x").is_err());
        assert!(MountSpec::parse_mount("type=bind,dst=/x").is_err());
        let t = MountSpec::parse_tmpfs("/tmp:size=64m,mode=1777").unwrap();
        assert_eq!(t.options.len(), 2);
        assert!(MountSpec::parse_tmpfs("tmp").is_err());
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("67108864").unwrap(), 64 << 20);
        assert_eq!(parse_memory("64mb").unwrap(), 64 << 20);
        let e = parse_memory("1x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --memory \"1x\": not a size: use bytes or a b/k/m/g suffix, e.g. 64m"
        );
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("-5m").is_err());
        assert_eq!(parse_memory_swap("-1").unwrap(), -1);
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn network_modes_round_trip() {
        for m in ["bridge", "none", "host", "container:web"] {
            let mode = NetworkMode::parse(m).unwrap();
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(serde_json::from_str::<NetworkMode>(&json).unwrap(), mode);
        }
        assert!(NetworkMode::parse("overlay").is_err());
        assert!(NetworkMode::parse("container:").is_err());
    }

    #[test]
    fn env_file() {
        let env = parse_env_file("# c\nA=1\n\nB\nC\n", |k| (k == "B").then(|| "2".into()));
        assert_eq!(env, vec!["A=1", "B=2"]);
    }

    #[test]
    fn combinations() {
        let mut o = RunOptions {
            network: NetworkMode::None,
            publish: vec![PortMapping::parse("80:80").unwrap()],
            ..Default::default()
        };
        assert!(o.validate().is_err());
        o.network = NetworkMode::Bridge;
        assert!(o.validate().is_ok());
        o.limits.memory = Some(64 << 20);
        o.limits.memory_swap = Some(1 << 20);
        assert!(o.validate().is_err());
        o.limits.memory_swap = Some(-1);
        o.stop_signal = Some("SIGNOPE".into());
        assert!(o.validate().is_err());
        o.stop_signal = Some("SIGQUIT".into());
        assert!(o.validate().is_ok());
    }
}
