//! TaskOOM: the init's memory cgroup watched with runtime-core's
//! `OomWatcher` (cgroup v1 eventfd or v2 inotify, the kernel's `oom_kill`
//! counter as the truth), tallied by runtime-core's `OomTally` as
//! berth-shim tallies it. The watch's fd sits in the monitor's poll. The
//! kernel wakes the watch as its OOM handling begins, before the kill is
//! counted: a wake-up that counts nothing is looked at again shortly
//! (the tally's `recheck_at` bounds the monitor's poll), so the TaskOOM
//! goes out while the container still runs rather than at its exit. The
//! counter is read once more when the init exits, before its exit is
//! recorded and announced, so a kill whose wake-up was not read yet is
//! still reported (TaskOOM before TaskExit, as containerd's shim sends
//! them) and lands in the exit record.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use nix::poll::PollTimeout;
use runtime_core::exit::ExitRecord;
use runtime_core::oom::OomTally;

use crate::publish::{self, topic};
use crate::shim::Shim;

/// OOM kills seen in the task's cgroup.
#[derive(Default)]
pub struct Oom {
    tally: OomTally,
}

impl Oom {
    /// Watches the init's cgroup (from /proc, or runc's state file when
    /// the init is already gone). A host without a memory controller is
    /// logged and runs unwatched: the task must not fail for it.
    pub fn watch(pid: i32, runc_state: &Path) -> Oom {
        match OomTally::watch_init(pid, runc_state) {
            Ok(w) => Oom {
                tally: OomTally::new(w),
            },
            Err(e) => {
                log::warn!("OOM kills will not be reported: {e}");
                Oom::default()
            }
        }
    }

    /// A copy of the watch's fd for the poll (the state lock is not held
    /// while polling).
    pub fn poll_fd(&self) -> Option<OwnedFd> {
        self.tally
            .watcher()
            .and_then(|w| w.as_fd().try_clone_to_owned().ok())
    }

    /// How long the monitor may sleep in poll: until the look again
    /// after a wake-up that counted nothing, or for ever.
    pub fn poll_timeout(&self) -> PollTimeout {
        match self.tally.recheck_at() {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                // Rounded up: a poll that ends before the look is due
                // would only go round again.
                PollTimeout::try_from(ms.saturating_add(1)).unwrap_or(PollTimeout::MAX)
            }
        }
    }
}

/// The watch's fd woke the monitor: counts new kills (and arms the look
/// again when there are none yet); publishes a TaskOOM when there are.
pub fn wake(shim: &Shim) {
    let new = shim.lock().oom.tally.wake();
    publish_oom(shim, new);
}

/// The look again after a wake-up that counted nothing, when it is due.
pub fn recheck(shim: &Shim) {
    let new = shim.lock().oom.tally.recheck_if_due();
    publish_oom(shim, new);
}

fn publish_oom(shim: &Shim, new: u64) {
    if new > 0 {
        log::info!("{new} OOM kill(s) in task {}", shim.id);
        let mut ev = publish::TaskOOM::new();
        ev.container_id = shim.id.clone();
        shim.publisher.publish(topic::OOM, &ev);
    }
}

/// The init has exited: a last look at the counter (the cgroup stays
/// until runc's delete), then the verdict into its exit record.
pub fn settle(shim: &Shim, record: &mut ExitRecord) {
    let new = {
        let mut st = shim.lock();
        let new = st.oom.tally.settle(record);
        // The cgroup goes with the init: nothing more to watch.
        st.oom.tally.unwatch();
        new
    };
    publish_oom(shim, new);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;

    /// memory.events as a cgroup v2 kernel writes it (Linux 6.1).
    fn events(oom: u64, kills: u64) -> String {
        format!("low 0\nhigh 0\nmax {oom}\noom {oom}\noom_kill {kills}\noom_group_kill 0\n")
    }

    /// A task whose runc state names a v2 cgroup (runc writes the
    /// unified path under ""), watched the way Create watches it, for an
    /// init already gone (no /proc entry), as the v2 path is reached on a
    /// v2 host. This host's memory controller is on v1, so no real v2
    /// OOM kill can be made here (see README); the file is the kernel's.
    fn v2_task(dir: &Path) -> Oom {
        let cg = dir.join("cg");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("memory.events"), events(0, 0)).unwrap();
        let state = dir.join("state.json");
        let json = format!(
            r#"{{"id":"t","cgroup_paths":{{"":"{}","memory":"{}"}}}}"#,
            cg.display(),
            cg.display()
        );
        fs::write(&state, json).unwrap();
        // No pid is this large (pid_max is at most 2^22).
        let oom = Oom::watch(i32::MAX, &state);
        assert!(oom.tally.watcher().is_some(), "the v2 cgroup is watched");
        assert_eq!(
            oom.tally.watcher().unwrap().counter_file(),
            cg.join("memory.events")
        );
        oom
    }

    fn record() -> ExitRecord {
        let status = nix::sys::wait::WaitStatus::Signaled(
            nix::unistd::Pid::from_raw(42),
            nix::sys::signal::Signal::SIGKILL,
            false,
        );
        ExitRecord::from_wait(42, status).unwrap()
    }

    #[test]
    fn a_v2_oom_kill_in_memory_events_lands_in_the_exit_record() {
        let d = tempfile::tempdir().unwrap();
        let mut oom = v2_task(d.path());
        let events_file = d.path().join("cg/memory.events");
        fs::write(&events_file, events(3, 1)).unwrap();
        let mut rec = record();
        assert_eq!(oom.tally.settle(&mut rec), 1, "the last look counts it");
        assert!(rec.oom_killed);
        assert_eq!(rec.oom_kills, Some(1));
        let at = rec.oom_at.clone().unwrap();
        assert!(at <= rec.finished_at, "{at} after {}", rec.finished_at);
        // No kill: the record says so.
        let d = tempfile::tempdir().unwrap();
        let mut oom = v2_task(d.path());
        let mut rec = record();
        assert_eq!(oom.tally.settle(&mut rec), 0);
        assert!(!rec.oom_killed && rec.oom_at.is_none());
    }

    #[test]
    fn a_wake_before_the_kill_is_counted_bounds_the_poll_until_it_is() {
        let d = tempfile::tempdir().unwrap();
        let mut oom = v2_task(d.path());
        let events_file = d.path().join("cg/memory.events");
        assert_eq!(oom.poll_timeout(), PollTimeout::NONE, "nothing due");
        // The kernel's order: `oom` (the wake-up) first, the kill after.
        fs::write(&events_file, events(1, 0)).unwrap();
        assert_eq!(oom.tally.wake(), 0);
        assert_ne!(oom.poll_timeout(), PollTimeout::NONE, "a look is due");
        fs::write(&events_file, events(1, 1)).unwrap();
        // However late this thread runs, a later look (while the task
        // still runs, no exit needed) finds the kill, once.
        let mut found = 0;
        while oom.poll_timeout() != PollTimeout::NONE {
            // (nix 0.29's `PollTimeout::duration` panics on NONE.)
            let ms = i32::from(oom.poll_timeout()).unsigned_abs();
            std::thread::sleep(std::time::Duration::from_millis(ms.into()));
            found += oom.tally.recheck_if_due();
        }
        assert_eq!(found, 1);
        assert_eq!(oom.tally.seen().0, 1);
    }
}
