//! The exit record: how a container ended, written by the shim before it
//! tells anyone, so the exit survives the shim and berthd both.

use serde::{Deserialize, Serialize};

/// How a container's init ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// Host PID of the container init.
    pub pid: i32,
    /// Shell-style status: the exit code, or 128+N for death by signal N.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// When the shim reaped it (RFC 3339).
    pub finished_at: String,
    /// When the shim started it (RFC 3339): the record outlives the shim
    /// (which exits once the record is on disk), so it carries what
    /// `inspect` shows of the run. Absent in records of older shims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Set when the status was not observed directly (e.g. the shim died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kernel's OOM killer killed a process of the container during
    /// this run (Docker's `OOMKilled`), counted in its memory cgroup by
    /// the shim (`oom`). Absent in records of shims that did not watch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// When the shim learned of the first OOM kill (RFC 3339): the time
    /// of the `oom` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_at: Option<String>,
    /// How many OOM kills the run counted (the init's own among them when
    /// it was one), so berthd can journal each kill it did not see live.
    /// Absent in records of older shims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// When new OOM kills were last seen (RFC 3339): the time of the
    /// kills after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_last_at: Option<String>,
}

impl ExitRecord {
    /// Builds a record from a waitpid status.
    pub fn from_wait(pid: i32, status: nix::sys::wait::WaitStatus) -> Option<Self> {
        use nix::sys::wait::WaitStatus;
        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => return None,
        };
        Some(ExitRecord {
            pid,
            exit_code,
            signal,
            finished_at: crate::time::now_rfc3339(),
            started_at: None,
            reason: None,
            oom_killed: false,
            oom_at: None,
            oom_kills: None,
            oom_last_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn signal_death_is_128_plus_n() {
        let r = ExitRecord::from_wait(
            5,
            WaitStatus::Signaled(Pid::from_raw(5), Signal::SIGKILL, false),
        )
        .unwrap();
        assert_eq!(r.exit_code, 137);
        assert_eq!(r.signal, Some(9));
        let r = ExitRecord::from_wait(5, WaitStatus::Exited(Pid::from_raw(5), 3)).unwrap();
        assert_eq!((r.exit_code, r.signal), (3, None));
        assert!(ExitRecord::from_wait(5, WaitStatus::StillAlive).is_none());
    }
}
