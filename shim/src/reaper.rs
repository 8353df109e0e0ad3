//! The shim's one reaper: a pid-keyed table of exit statuses.
//!
//! The shim is a child subreaper, so `waitpid(-1)` also collects orphans of
//! the container. Everything that waits for a child (runc invocations, the
//! container init) goes through this table, never `Child::wait`, so no
//! status is taken by the wrong waiter.

use std::collections::HashMap;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Exit statuses collected but not yet claimed.
#[derive(Debug, Default)]
pub struct Reaper {
    exits: HashMap<i32, WaitStatus>,
}

impl Reaper {
    /// Collects every child that has exited, without blocking.
    pub fn reap_available(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => self.record(status),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn record(&mut self, status: WaitStatus) {
        if let WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) = status {
            self.exits.insert(pid.as_raw(), status);
        }
    }

    /// Blocks until `pid` has exited, keeping other children's statuses.
    pub fn wait_for(&mut self, pid: i32) -> WaitStatus {
        loop {
            if let Some(status) = self.exits.remove(&pid) {
                return status;
            }
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => self.record(status),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // ECHILD: nobody left to wait for; report it as lost.
                    log::error!("waitpid for {pid}: {e}");
                    return WaitStatus::Exited(Pid::from_raw(pid), 255);
                }
            }
        }
    }

    /// Takes `pid`'s status if it has been collected.
    pub fn take(&mut self, pid: i32) -> Option<WaitStatus> {
        self.exits.remove(&pid)
    }

    /// Forgets statuses of orphans nobody will ask about, except `keep`.
    pub fn forget_others(&mut self, keep: i32) {
        self.exits.retain(|pid, _| *pid == keep);
        if self.exits.is_empty() {
            // A burst of children grew the table; the shim idles long.
            self.exits = HashMap::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    // Runs in one test so no other test's children race our waitpid(-1).
    #[test]
    // The reaper under test collects these children, not Child::wait.
    #[allow(clippy::zombie_processes)]
    fn wait_for_keeps_other_statuses() {
        let a = Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let b = Command::new("/bin/sh")
            .args(["-c", "sleep 0.2; exit 4"])
            .spawn()
            .unwrap();
        let mut r = Reaper::default();
        let sb = r.wait_for(b.id() as i32);
        assert!(matches!(sb, WaitStatus::Exited(_, 4)), "{sb:?}");
        let sa = r
            .take(a.id() as i32)
            .or_else(|| Some(r.wait_for(a.id() as i32)));
        assert!(matches!(sa, Some(WaitStatus::Exited(_, 3))), "{sa:?}");
    }
}
