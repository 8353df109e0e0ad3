//! The shim's OOM hook: the container's memory cgroup watched with
//! `runtime_core::oom` (its `OomTally` keeps the count, the times and the
//! exit record's verdict, shared with containerd-shim-berth-v2), its fd
//! on the event loop's `OOM` token. Kept apart from the event loop so the
//! loop holds only a few calls into it.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use runtime_core::exit::ExitRecord;
use runtime_core::oom::OomTally;

/// OOM kills seen in the container's cgroup during this run.
#[derive(Default)]
pub struct Oom {
    tally: OomTally,
}

impl Oom {
    /// Starts watching the init's cgroup (from `/proc`, or runc's state
    /// file when the init is already gone) and registers the watch with
    /// the event loop. A host without a memory controller is logged and
    /// runs unwatched: the container must not fail for it.
    pub fn watch(&mut self, registry: &Registry, token: Token, init_pid: i32, runc_state: &Path) {
        let watcher = match OomTally::watch_init(init_pid, runc_state) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("OOM kills will not be reported: {e}");
                return;
            }
        };
        let fd = watcher.as_fd().as_raw_fd();
        if let Err(e) = registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            log::warn!("OOM kills will not be reported: register the watch: {e}");
            return;
        }
        log::debug!(
            "watching {} for OOM kills",
            watcher.counter_file().display()
        );
        self.tally = OomTally::new(watcher);
    }

    /// The watch's fd woke the loop: count new kills (and look again
    /// shortly when none is counted yet). True when there were new ones.
    pub fn wake(&mut self) -> bool {
        self.tally.wake() > 0
    }

    /// When the loop must call [`Oom::recheck_if_due`].
    pub fn recheck_at(&self) -> Option<Instant> {
        self.tally.recheck_at()
    }

    /// The watcher's look again after a wake-up that counted nothing,
    /// when due. True when there were new kills.
    pub fn recheck_if_due(&mut self) -> bool {
        self.tally.recheck_if_due() > 0
    }

    /// Kills so far, and when new ones were last seen (for `state`).
    pub fn seen(&self) -> (u64, Option<String>) {
        self.tally.seen()
    }

    /// The init has exited: a last look, then the verdict into the record.
    pub fn settle(&mut self, record: &mut ExitRecord) {
        self.tally.settle(record);
    }
}
