//! The `berth run` flags that make a real service (network, ports,
//! mounts, user, limits, security, init, labels, stop settings), parsed
//! into `RunOptions` before anything is sent: a malformed value is one
//! line and exit 125, as Docker.

use clap::Args;

use runtime_core::runopts::{self, MountSpec, NetworkMode, PortMapping, RunOptions, Seccomp};

use super::Failure;

#[derive(Args, Debug, Default)]
pub struct ServiceArgs {
    /// Network: bridge (default), none, host or container:<name|id>.
    #[arg(long = "network", visible_alias = "net", default_value = "bridge")]
    network: String,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Bind-mount a host path: HOST_PATH:CONTAINER_PATH[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// A mount: type=bind|tmpfs,source=..,target=..[,readonly][,tmpfs-size=..].
    #[arg(long = "mount")]
    mount: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS].
    #[arg(long = "tmpfs")]
    tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Run as NAME|UID[:GROUP|GID] (names from the container's /etc/passwd).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Add a supplementary group (name or GID).
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Every capability, no seccomp filter, no masked paths, all devices.
    #[arg(long)]
    privileged: bool,
    /// Add a Linux capability (e.g. NET_ADMIN, ALL).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. CHOWN, ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false].
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long = "memory")]
    memory: Option<String>,
    /// Memory plus swap limit, -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPUs (e.g. 0.5).
    #[arg(long = "cpus", allow_hyphen_values = true)]
    cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<String>,
    /// At most this many processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Run an init (tini) as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// A label: KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Signal `stop` sends first (default SIGTERM).
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<String>,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure {
        message: msg.to_string(),
        code: 125,
    }
}

impl ServiceArgs {
    /// The options, and the environment from `--env-file` (before `-e`).
    pub fn parse(&self) -> Result<(RunOptions, Vec<String>), Failure> {
        let mut o = RunOptions {
            network: NetworkMode::parse(&self.network).map_err(usage)?,
            read_only: self.read_only,
            user: self.user.clone(),
            group_add: self.group_add.clone(),
            privileged: self.privileged,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            init: self.init,
            stop_signal: self.stop_signal.clone(),
            ..Default::default()
        };
        for p in &self.publish {
            o.publish.push(PortMapping::parse(p).map_err(usage)?);
        }
        for v in &self.volume {
            o.mounts.push(MountSpec::parse_volume(v).map_err(usage)?);
        }
        for m in &self.mount {
            o.mounts.push(MountSpec::parse_mount(m).map_err(usage)?);
        }
        for t in &self.tmpfs {
            o.mounts.push(MountSpec::parse_tmpfs(t).map_err(usage)?);
        }
        for s in &self.security_opt {
            match s.as_str() {
                "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                    o.no_new_privileges = true
                }
                "no-new-privileges=false" | "no-new-privileges:false" => {
                    o.no_new_privileges = false
                }
                "seccomp=unconfined" | "seccomp:unconfined" => o.seccomp = Seccomp::Unconfined,
                _ => match s.split_once(['=', ':']) {
                    Some(("seccomp", path)) => {
                        let data = std::fs::read_to_string(path).map_err(|e| {
                            usage(format!(
                                "--security-opt seccomp={path}: cannot read the profile: {e}"
                            ))
                        })?;
                        o.seccomp = Seccomp::Profile(data);
                    }
                    _ => {
                        return Err(usage(format!(
                            "invalid --security-opt {s:?}: use seccomp=unconfined|PROFILE or no-new-privileges"
                        )))
                    }
                },
            }
        }
        if let Some(m) = &self.memory {
            o.limits.memory = Some(runopts::parse_memory(m).map_err(usage)?);
        }
        if let Some(m) = &self.memory_swap {
            o.limits.memory_swap = Some(runopts::parse_memory_swap(m).map_err(usage)?);
        }
        if let Some(c) = &self.cpus {
            o.limits.cpus = Some(runopts::parse_cpus(c).map_err(usage)?);
        }
        if let Some(c) = &self.cpu_shares {
            o.limits.cpu_shares = Some(c.parse().map_err(|_| {
                usage(format!(
                    "invalid --cpu-shares {c:?}: must be a positive integer"
                ))
            })?);
        }
        if let Some(p) = &self.pids_limit {
            o.limits.pids_limit =
                Some(p.parse().map_err(|_| {
                    usage(format!("invalid --pids-limit {p:?}: must be an integer"))
                })?);
        }
        if let Some(t) = &self.stop_timeout {
            o.stop_timeout = Some(t.parse().map_err(|_| {
                usage(format!(
                    "invalid --stop-timeout {t:?}: must be whole seconds"
                ))
            })?);
        }
        for l in &self.label {
            let (k, v) = runopts::parse_label(l).map_err(usage)?;
            o.labels.insert(k, v);
        }
        let mut env = Vec::new();
        for f in &self.env_file {
            let data =
                std::fs::read_to_string(f).map_err(|e| usage(format!("--env-file {f}: {e}")))?;
            env.extend(runopts::parse_env_file(&data, |k| std::env::var(k).ok()));
        }
        o.validate().map_err(usage)?;
        Ok((o, env))
    }
}
