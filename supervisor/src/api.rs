//! The berthd API: what the CLI sends and what it gets back.
//! Framing, request ids, errors and versioning are those of
//! `runtime_core::protocol`; these are the params and results.

use serde::{Deserialize, Serialize};

/// Method names of the berthd API.
pub mod methods {
    pub const HELLO: &str = "hello";
    pub const CREATE: &str = "create";
    pub const START: &str = "start";
    pub const LIST: &str = "list";
    pub const INSPECT: &str = "inspect";
    pub const KILL: &str = "kill";
    pub const WAIT: &str = "wait";
    pub const REMOVE: &str = "remove";
    /// berthd's own facts (`berth info`, `berth version`).
    pub const INFO: &str = "info";
    /// Signal, wait up to a timeout, then SIGKILL (Docker's stop).
    pub const STOP: &str = "stop";
    /// The container's processes (`berth top`).
    pub const TOP: &str = "top";
    /// Freeze a running container.
    pub const PAUSE: &str = "pause";
    /// Thaw a paused container.
    pub const UNPAUSE: &str = "unpause";
    /// A stream: the replay, then new events (see `crate::event`).
    pub const EVENTS: &str = "events";
    /// One resource sample of a running container (`crate::stats`).
    pub const STATS: &str = "stats";
    /// A new restart policy or limits (`crate::policy::UpdateParams`).
    pub const UPDATE: &str = "update";
    /// One more process in a running container (`ExecRequest`).
    pub const EXEC: &str = "exec";
}

/// `exec` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The container (ID, ID prefix or name).
    pub id: String,
    pub command: Vec<String>,
    /// `K=V` entries over the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// NAME|UID[:GROUP|GID], from the container's /etc/passwd.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    /// Nobody attaches; the exit code shows in `inspect` later.
    #[serde(default)]
    pub detach: bool,
}

/// `exec` result: where to attach (the shim's socket, with the exec ID).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    pub exec_id: String,
    pub pid: i32,
    pub attach_socket: String,
    pub tty: bool,
}

/// `create`: everything `berth run` can ask for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateParams {
    #[serde(default)]
    pub name: Option<String>,
    /// Process args; may be empty with `bundle` (the bundle's args are used).
    #[serde(default)]
    pub command: Vec<String>,
    /// An exploded root filesystem (absolute path).
    #[serde(default)]
    pub rootfs: Option<String>,
    /// An image (name, ID or ID prefix) from the store: its layers are the
    /// rootfs, its config the defaults of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// An OCI bundle directory (absolute path).
    #[serde(default)]
    pub bundle: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub auto_remove: bool,
    /// Start at once (one `runc run --detach` in the shim); otherwise the
    /// container stays created until `start`.
    #[serde(default)]
    pub start: bool,
    /// The caller will attach: the shim holds the output (in the pipe, up
    /// to a few seconds) until the first attach client, so none is missed.
    #[serde(default)]
    pub attach: bool,
    #[serde(default)]
    pub log_max_size: Option<u64>,
    #[serde(default)]
    pub log_max_files: Option<u32>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[serde(default)]
    pub restart: Option<String>,
    /// Network, mounts, user, limits, security, init, labels, stop settings.
    #[serde(default)]
    pub options: runtime_core::runopts::RunOptions,
}

/// Params naming one container (by ID, unique ID prefix or name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
}

/// `start` params: a created container is started; an exited one is
/// run again (same ID, config and bundle, a new shim, its log appended).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartParams {
    pub id: String,
    /// The caller attaches right after: hold the output for it (an exited
    /// container's new shim; a created one's output waits in its pipes).
    #[serde(default)]
    pub attach: bool,
}

/// `stop` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopParams {
    pub id: String,
    /// The first signal (SIGTERM by default).
    #[serde(default)]
    pub signal: Option<i32>,
    /// Seconds to wait for the exit before SIGKILL (10 by default).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `top` result: column titles and one row per process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopResult {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// `kill` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillParams {
    pub id: String,
    pub signal: i32,
}

/// `remove` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveParams {
    pub id: String,
    #[serde(default)]
    pub force: bool,
}

/// `list` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    pub all: bool,
}

/// A container as berthd reports it (`ps`, `inspect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub status: ContainerStatus,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the status is what it is, when berthd did not see it directly.
    #[serde(default)]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The kernel's OOM killer killed a process of the container in its
    /// last run (from the exit record: Docker's `State.OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
    pub command: Vec<String>,
    pub rootfs: String,
    pub log_path: String,
    /// The shim's attach socket: clients connect to it directly.
    pub attach_socket: String,
    /// The container's runtime directory (sockets, pid files).
    pub state_dir: String,
    /// The container's data directory (definition, log, exit record);
    /// empty from a berthd before the two roots: `state_dir` has it all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_dir: String,
    pub tty: bool,
    pub stdin: bool,
    pub auto_remove: bool,
    #[serde(default)]
    pub shim_pid: Option<i32>,
    /// Times it was run again after exiting (`berth start`, `restart`).
    #[serde(default)]
    pub restart_count: u32,
    /// The restart policy and its state (inspect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<crate::policy::RestartInfo>,
    /// What `berth run` asked for beyond the process (from meta.json).
    #[serde(default)]
    pub options: runtime_core::runopts::RunOptions,
    /// The network as set up: mode, address, gateway, ports (`inspect` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<runtime_core::net::NetState>,
}

impl ContainerInfo {
    /// The container's paths, as berthd reported them.
    pub fn paths(&self) -> runtime_core::layout::ContainerPaths {
        let data = if self.data_dir.is_empty() {
            &self.state_dir
        } else {
            &self.data_dir
        };
        runtime_core::layout::ContainerPaths::from_dirs(&self.state_dir, data)
    }
}

/// Where a container is, as users see it (`ps`, `inspect`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// berthd is creating it right now.
    Creating,
    /// Found on disk after a berthd restart, its shim not asked yet.
    Restoring,
    /// Created by the runtime, not started.
    Created,
    Running,
    /// Frozen (`pause`), its processes still there.
    Paused,
    Exited,
    /// Its shim cannot be adopted or does not answer (`reason` says why).
    Unknown,
}

impl ContainerStatus {
    /// The status in one entry of berthd's JSON (`list`, `inspect`), for
    /// the CLI code that keeps entries as JSON; `None` when absent or a
    /// word this build does not know.
    pub fn of(entry: &serde_json::Value) -> Option<ContainerStatus> {
        entry
            .get("status")
            .and_then(|s| ContainerStatus::deserialize(s).ok())
    }

    /// Its processes exist (running or frozen): docker's `State.Running`.
    pub fn is_up(self) -> bool {
        matches!(self, ContainerStatus::Running | ContainerStatus::Paused)
    }

    /// The word `ps` shows and the JSON carries.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Restoring => "restoring",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `wait` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitResult {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `info` result: what berthd runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub root: String,
    pub runtime: String,
    pub shim: String,
    pub pid: u32,
}

#[cfg(test)]
mod status_tests {
    use super::ContainerStatus;
    use serde_json::json;

    #[test]
    fn status_is_read_from_json_as_the_enum() {
        assert_eq!(
            ContainerStatus::of(&json!({"status": "paused"})),
            Some(ContainerStatus::Paused)
        );
        assert!(ContainerStatus::of(&json!({"status": "paused"})).is_some_and(|s| s.is_up()));
        assert!(!ContainerStatus::Exited.is_up());
        // A word from a newer berthd, or none at all: not guessed.
        assert_eq!(ContainerStatus::of(&json!({"status": "hibernating"})), None);
        assert_eq!(ContainerStatus::of(&json!({})), None);
        for s in [
            ContainerStatus::Created,
            ContainerStatus::Exited,
            ContainerStatus::Unknown,
        ] {
            assert_eq!(
                ContainerStatus::of(&json!({ "status": s.as_str() })),
                Some(s)
            );
        }
    }
}
