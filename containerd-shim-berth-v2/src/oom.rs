//! TaskOOM: the init's memory cgroup watched with runtime-core's
//! `OomWatcher` (cgroup v1 eventfd or v2 inotify, the kernel's `oom_kill`
//! counter as the truth). The watch's fd sits in the monitor's poll; the
//! counter is read once more when the init exits, before its exit is
//! recorded and announced, so a kill whose wake-up was not read yet is
//! still reported (TaskOOM before TaskExit, as containerd's shim sends
//! them) and lands in the exit record.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use runtime_core::exit::ExitRecord;
use runtime_core::oom::OomWatcher;

use crate::publish::{self, topic};
use crate::shim::Shim;

/// OOM kills seen in the task's cgroup.
#[derive(Default)]
pub struct Oom {
    watcher: Option<OomWatcher>,
    /// When the first kill was seen (RFC 3339).
    first_at: Option<String>,
}

impl Oom {
    /// Watches the init's cgroup (from /proc, or runc's state file when
    /// the init is already gone). A host without a memory controller is
    /// logged and runs unwatched: the task must not fail for it.
    pub fn watch(pid: i32, runc_state: &Path) -> Oom {
        let watcher = OomWatcher::for_pid(pid).or_else(|e| {
            log::debug!("OOM watch from /proc/{pid}: {e}; trying runc's state");
            OomWatcher::for_runc_state(runc_state)
        });
        match watcher {
            Ok(w) => Oom {
                watcher: Some(w),
                first_at: None,
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
        self.watcher
            .as_ref()
            .and_then(|w| w.as_fd().try_clone_to_owned().ok())
    }
}

/// Counts new kills; publishes a TaskOOM when there are any.
pub fn check(shim: &Shim) {
    let new = {
        let mut st = shim.lock();
        let Some(w) = st.oom.watcher.as_mut() else {
            return;
        };
        let new = match w.check() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("reading OOM kills: {e}");
                0
            }
        };
        if new > 0 {
            st.oom
                .first_at
                .get_or_insert_with(runtime_core::time::now_rfc3339);
        }
        new
    };
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
    check(shim);
    let mut st = shim.lock();
    if let Some(at) = st.oom.first_at.clone() {
        record.oom_killed = true;
        record.oom_at = Some(at);
    }
    // The cgroup goes with the init: nothing more to watch.
    st.oom.watcher = None;
}
