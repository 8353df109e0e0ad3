//! The init's phase: one value where five flags stood (a status, a
//! pending exit, an exit, a done flag and a linger deadline), so that
//! impossible combinations (an exit record on a running container, a
//! drain deadline without an exit) cannot be written down.

use std::time::Instant;

use runtime_core::exit::ExitRecord;
use runtime_core::protocol::ShimStatus;

/// Where the container's init is in its life, as the shim sees it.
#[derive(Debug, Clone)]
pub enum Phase {
    /// `runc create` done; the process waits for `start`.
    Created,
    Running,
    /// Frozen by `pause` (the runtime's freezer) until `resume`.
    Paused,
    /// Reaped; its output is read until EOF or the deadline, then the
    /// exit is recorded and announced.
    Draining {
        exit: ExitRecord,
        deadline: Instant,
    },
    /// Exit recorded and announced; until its clients are served and the
    /// shim retires (see `retire`), or `delete`.
    Exited(ExitRecord),
    /// Deleted, or retired after the exit: attach clients take what is
    /// queued for them until `until`, then the shim exits. (`exit` is `None` for a container
    /// deleted before it ever ran.)
    Lingering {
        exit: Option<ExitRecord>,
        until: Instant,
    },
}

impl Phase {
    /// The status `state` reports. A draining init still counts as
    /// running: its exit is not known to anyone yet.
    pub fn status(&self) -> ShimStatus {
        match self {
            Phase::Created => ShimStatus::Created,
            Phase::Running | Phase::Draining { .. } => ShimStatus::Running,
            Phase::Paused => ShimStatus::Paused,
            Phase::Exited(_) | Phase::Lingering { .. } => ShimStatus::Stopped,
        }
    }

    /// The exit, once recorded.
    pub fn exit(&self) -> Option<&ExitRecord> {
        match self {
            Phase::Exited(e) => Some(e),
            Phase::Lingering { exit, .. } => exit.as_ref(),
            _ => None,
        }
    }

    /// The init is gone (reaped or deleted): nothing can be started,
    /// signalled, paused or exec'd into, and its PID may be reused.
    pub fn reaped(&self) -> bool {
        matches!(
            self,
            Phase::Draining { .. } | Phase::Exited(_) | Phase::Lingering { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ExitRecord {
        serde_json::from_value(serde_json::json!({
            "pid": 7, "exit_code": 3, "signal": null, "finished_at": "t"
        }))
        .expect("an exit record")
    }

    #[test]
    fn a_draining_init_reports_running_without_an_exit_but_takes_no_signal() {
        let p = Phase::Draining {
            exit: record(),
            deadline: Instant::now(),
        };
        assert_eq!(p.status(), ShimStatus::Running);
        assert!(p.exit().is_none());
        assert!(p.reaped());
    }

    #[test]
    fn only_exited_and_lingering_have_an_exit() {
        assert_eq!(Phase::Exited(record()).exit().map(|e| e.exit_code), Some(3));
        let never_ran = Phase::Lingering {
            exit: None,
            until: Instant::now(),
        };
        assert_eq!(never_ran.status(), ShimStatus::Stopped);
        assert!(never_ran.exit().is_none());
        for p in [Phase::Created, Phase::Running, Phase::Paused] {
            assert!(p.exit().is_none() && !p.reaped(), "{p:?}");
        }
        assert_eq!(Phase::Paused.status(), ShimStatus::Paused);
    }
}
