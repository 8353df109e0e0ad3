//! The shim's OOM hook: the container's memory cgroup watched with
//! `runtime_core::oom`, its fd on the event loop's `OOM` token, and the
//! verdict put in the exit record. Kept apart from the event loop so the
//! loop holds only a few calls into it.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use runtime_core::exit::ExitRecord;
use runtime_core::oom::OomWatcher;

/// OOM kills seen in the container's cgroup during this run.
#[derive(Default)]
pub struct Oom {
    watcher: Option<OomWatcher>,
    /// When the first kill was seen.
    first_at: Option<String>,
    /// When new kills were last seen.
    last_at: Option<String>,
}

impl Oom {
    /// Starts watching the init's cgroup (from `/proc`, or runc's state
    /// file when the init is already gone) and registers the watch with
    /// the event loop. A host without a memory controller is logged and
    /// runs unwatched: the container must not fail for it.
    pub fn watch(&mut self, registry: &Registry, token: Token, init_pid: i32, runc_state: &Path) {
        let watcher = OomWatcher::for_pid(init_pid).or_else(|e| {
            log::debug!("OOM watch from /proc/{init_pid}: {e}; trying runc's state");
            OomWatcher::for_runc_state(runc_state)
        });
        let watcher = match watcher {
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
        self.watcher = Some(watcher);
    }

    /// A last look (the init exited): count new kills. True when there
    /// were new ones.
    pub fn check(&mut self) -> bool {
        self.count(OomWatcher::check)
    }

    /// Counts what `look` finds, with the time it was seen.
    fn count(
        &mut self,
        look: impl FnOnce(&mut OomWatcher) -> Result<u64, runtime_core::oom::OomError>,
    ) -> bool {
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        match look(w) {
            Ok(0) => false,
            Ok(n) => {
                log::info!("{n} OOM kill(s) in the container ({} so far)", w.total());
                let now = runtime_core::time::now_rfc3339();
                self.first_at.get_or_insert_with(|| now.clone());
                self.last_at = Some(now);
                true
            }
            Err(e) => {
                log::warn!("reading OOM kills: {e}");
                false
            }
        }
    }

    /// The watch's fd woke the loop: count new kills (and look again
    /// shortly when none is counted yet). True when there were new ones.
    pub fn wake(&mut self) -> bool {
        self.count(OomWatcher::wake)
    }

    /// When the loop must call [`Oom::recheck_if_due`].
    pub fn recheck_at(&self) -> Option<Instant> {
        self.watcher.as_ref().and_then(OomWatcher::recheck_at)
    }

    /// The watcher's look again after a wake-up that counted nothing,
    /// when due. True when there were new kills.
    pub fn recheck_if_due(&mut self) -> bool {
        self.count(OomWatcher::recheck_if_due)
    }

    /// Kills so far, and when new ones were last seen (for `state`).
    pub fn seen(&self) -> (u64, Option<String>) {
        let kills = self.watcher.as_ref().map_or(0, OomWatcher::total);
        (kills, self.last_at.clone())
    }

    /// The init has exited: a last look at the counter (the cgroup stays
    /// until the runtime's delete, which comes after the exit record),
    /// then the verdict into the record.
    pub fn settle(&mut self, record: &mut ExitRecord) {
        let _ = self.check();
        // Every kill came before the exit (the init's death ends the
        // container's processes): one seen after it (a wake-up read late,
        // or this last look) takes the exit's time, so no `oom` event is
        // dated after the exit it led to. Both are `time::now_rfc3339`'s
        // fixed-width UTC form, which orders as the times do.
        for t in [&mut self.first_at, &mut self.last_at]
            .into_iter()
            .flatten()
        {
            if *t > record.finished_at {
                t.clone_from(&record.finished_at);
            }
        }
        if let Some(at) = &self.first_at {
            record.oom_killed = true;
            record.oom_at = Some(at.clone());
            record.oom_kills = self.watcher.as_ref().map(OomWatcher::total);
            record.oom_last_at.clone_from(&self.last_at);
        }
    }
}
