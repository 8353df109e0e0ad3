//! The control protocol, spoken CLI -> berthd and berthd -> shim.
//!
//! One JSON message per frame: a request carries an id, a method and params;
//! the reply carries the same id and either a result or an error with a
//! stable code. A `hello` exchange comes first on every connection and
//! carries the protocol version.
//!
//! Compatibility rule (live upgrade): peers speak to each other when their
//! MAJOR versions are equal. A minor bump may add methods and optional
//! fields (unknown fields are ignored, missing ones default); a peer that
//! gets an unknown method answers `unknown_method`, never a guess.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit::ExitRecord;

/// Major version: bumped on any incompatible change.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Minor version: bumped when methods or optional fields are added.
pub const PROTOCOL_MINOR: u32 = 3;

/// A request frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// A reply frame: exactly one of `result` and `error` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// An error reply: a machine-readable code and a message for the user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
}

/// Stable error codes, so clients can react without parsing messages.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or a parameter was bad.
    InvalidArgument,
    /// The method is not known to this peer.
    UnknownMethod,
    /// The named container does not exist.
    NotFound,
    /// The request conflicts with the current state (name taken, running).
    Conflict,
    /// The OCI runtime failed; the message is its own.
    Runtime,
    /// The container's command does not exist in its rootfs (a CLI
    /// exits 127, as a shell does).
    CommandNotFound,
    /// The container's command exists but cannot be executed (126).
    CommandNotExecutable,
    /// The peer speaks an incompatible protocol version.
    VersionMismatch,
    /// Anything else that went wrong on the server.
    Internal,
}

impl RpcError {
    /// Builds an error reply payload.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

impl Response {
    /// A success reply.
    pub fn ok(id: u64, result: Value) -> Self {
        Response {
            id,
            result: Some(result),
            error: None,
        }
    }
    /// An error reply.
    pub fn err(id: u64, error: RpcError) -> Self {
        Response {
            id,
            result: None,
            error: Some(error),
        }
    }
    /// Turns the reply into the result or the peer's error.
    pub fn into_result(self) -> Result<Value, RpcError> {
        match (self.error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }
}

/// Parameters of `hello`, sent by the connecting side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub major: u32,
    pub minor: u32,
    /// Who is speaking, for logs ("berth 0.1.0").
    #[serde(default)]
    pub agent: String,
}

impl Hello {
    /// This build's hello.
    pub fn current(agent: &str) -> Self {
        Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            agent: agent.to_string(),
        }
    }

    /// Checks a peer's hello against ours, per the rule in the module doc.
    pub fn check_compatible(&self) -> Result<(), RpcError> {
        if self.major != PROTOCOL_MAJOR {
            return Err(RpcError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "protocol {}.{} ({}) is incompatible with {}.{}: major versions differ",
                    self.major, self.minor, self.agent, PROTOCOL_MAJOR, PROTOCOL_MINOR
                ),
            ));
        }
        Ok(())
    }
}

/// Shim-side lifecycle of the container.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShimStatus {
    /// runc create done, process waiting for start.
    Created,
    /// Started and not yet reaped.
    Running,
    /// Frozen by `pause` (the runtime's freezer); `resume` thaws it.
    /// Added in protocol 1.1.
    Paused,
    /// Reaped, output drained, exit record written.
    Stopped,
}

/// The shim's answer to `state`: everything berthd needs to reconcile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimState {
    pub id: String,
    pub status: ShimStatus,
    /// The container init's PID on the host.
    pub pid: i32,
    #[serde(default)]
    pub started_at: Option<String>,
    /// Boxed: berthd keeps one `ShimState` per running container, where it
    /// is `None`, and the record is 160 bytes inline.
    #[serde(default)]
    pub exit: Option<Box<ExitRecord>>,
    /// The shim's own PID, so berthd can watch it.
    pub shim_pid: i32,
    /// Processes started by `exec`: running ones and the most recent
    /// exited ones (see the shim's retention). Since protocol 1.2.
    #[serde(default)]
    pub execs: Vec<ExecState>,
    /// OOM kills in the container's memory cgroup during this run, the
    /// init's or any other process's (the kernel's `oom_kill` counter).
    /// Since protocol 1.3.
    #[serde(default)]
    pub oom_kills: u64,
    /// When the shim last saw new OOM kills (RFC 3339). Since 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_at: Option<String>,
}

/// Parameters of shim `wait` (all optional: a bare `wait` waits for the
/// exit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WaitParams {
    /// Also answer (with no exit record) once the OOM kills exceed this
    /// count: how berthd hears of an OOM kill of a process other than the
    /// init while the container runs, as containerd's TaskOOM. Since 1.3;
    /// an older shim ignores it and answers at the exit only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

/// One exec'd process as the shim reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecState {
    pub id: String,
    /// Its command line.
    pub args: Vec<String>,
    /// Its host PID.
    pub pid: i32,
    /// Still running (or its output still draining).
    pub running: bool,
    /// How it ended, once it has.
    #[serde(default)]
    pub exit: Option<ExitRecord>,
}

/// The exit records of a container's execs (`exec-<id>.exit`, written by
/// the shim), in PID order: what berthd lists and journals when the shim
/// no longer holds an exec (it forgets those already reported) or is
/// gone. A record that does not parse (a torn write cannot happen: they
/// are atomic) is skipped with a warning.
pub fn exec_records(paths: &crate::layout::ContainerPaths) -> Vec<ExecState> {
    let Ok(dir) = std::fs::read_dir(paths.data_dir()) else {
        return Vec::new();
    };
    let mut records: Vec<ExecState> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = crate::layout::ContainerPaths::exec_id_of_exit(name.to_str()?)?;
            match crate::atomic::read_json::<ExecState>(&entry.path()) {
                Ok(state) if state.id == id => Some(state),
                Ok(_) => None,
                Err(e) => {
                    log::warn!("exec record {}: {e}", entry.path().display());
                    None
                }
            }
        })
        .collect();
    records.sort_by_key(|s| s.pid);
    records
}

/// Parameters of shim `exec` (since protocol 1.2): run one more process
/// in the container with `runc exec --detach`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecParams {
    /// The caller's ID for it: `[0-9A-Za-z_-]`, unique in this container.
    pub exec_id: String,
    /// The OCI `process` object to run (args, env, cwd, user, terminal...).
    pub process: Value,
    /// Give it a pty (the process's `terminal` must say so too).
    #[serde(default)]
    pub tty: bool,
    /// Keep a stdin open for attach clients.
    #[serde(default)]
    pub stdin: bool,
    /// Nobody will attach: its stdio is /dev/null and only its exit is kept.
    #[serde(default)]
    pub detach: bool,
}

/// The shim's answer to `exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecStarted {
    /// The exec'd process's host PID.
    pub pid: i32,
}

/// Checks an exec ID: short, and safe in a file name.
pub fn valid_exec_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The shim's readiness report: the one JSON line the serving shim writes
/// on berthd's pipe once the container is created and the sockets accept
/// (`berth-shim start` printed the same line in earlier releases). One
/// type for both ends (the shim writes it, berthd reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimReady {
    /// The serving shim's PID.
    pub pid: i32,
    /// The container init's PID on the host.
    pub init_pid: i32,
    /// The control socket's path.
    #[serde(default)]
    pub control: std::path::PathBuf,
    /// The attach socket's path.
    #[serde(default)]
    pub attach: std::path::PathBuf,
    /// What a `state` call would answer, so berthd needs no round trip
    /// before it replies to `create` (absent from older shims: then it asks).
    #[serde(default)]
    pub state: Option<ShimState>,
}

/// Parameters of shim `kill`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillParams {
    pub signal: i32,
}

/// Shim method names, in one place for both ends.
pub mod shim_methods {
    pub const HELLO: &str = "hello";
    pub const STATE: &str = "state";
    pub const START: &str = "start";
    pub const KILL: &str = "kill";
    /// Long poll: answered when the container has exited (or, with
    /// `WaitParams::oom_kills`, on a new OOM kill).
    pub const WAIT: &str = "wait";
    /// `runc delete`, then the shim exits.
    pub const DELETE: &str = "delete";
    /// `runc pause`: freezes every process of a running container; the
    /// state says `paused` until `resume`. Since protocol 1.1.
    pub const PAUSE: &str = "pause";
    /// `runc resume`: thaws a paused container. Since protocol 1.1.
    pub const RESUME: &str = "resume";
    /// `runc exec --detach`: one more process in the running container;
    /// its stream is served on the attach socket under its exec ID.
    /// Since protocol 1.2.
    pub const EXEC: &str = "exec";
}

impl ShimStatus {
    /// The container's processes exist (running or frozen): it must be
    /// stopped before it can be removed.
    pub fn is_alive(self) -> bool {
        matches!(self, ShimStatus::Running | ShimStatus::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_missing_params_default() {
        let req: Request =
            serde_json::from_str(r#"{"id":7,"method":"state","future":true}"#).unwrap();
        assert_eq!(req.id, 7);
        assert!(req.params.is_null());
    }

    #[test]
    fn readiness_report_of_an_older_shim_still_reads() {
        let r: ShimReady = serde_json::from_str(r#"{"pid":5,"init_pid":6}"#).unwrap();
        assert_eq!((r.pid, r.init_pid), (5, 6));
        assert!(r.state.is_none());
    }

    #[test]
    fn major_mismatch_is_refused_with_versions_named() {
        let peer = Hello {
            major: 2,
            minor: 0,
            agent: "berthd 9".into(),
        };
        let err = peer.check_compatible().unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch);
        assert!(err.message.contains("2.0"), "{}", err.message);
        Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR + 3,
            agent: String::new(),
        }
        .check_compatible()
        .unwrap();
    }
}
