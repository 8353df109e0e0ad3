//! The shim's OOM hook: the container's memory cgroup watched with
//! `runtime_core::oom`, its fd on the event loop's `OOM` token, and the
//! verdict put in the exit record. Kept apart from the event loop so the
//! loop holds only three calls into it.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

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

    /// The watch's fd is readable (or the init exited): count new kills.
    pub fn check(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.check() {
            Ok(0) => {}
            Ok(n) => {
                log::info!("{n} OOM kill(s) in the container ({} so far)", w.total());
                self.first_at
                    .get_or_insert_with(runtime_core::time::now_rfc3339);
            }
            Err(e) => log::warn!("reading OOM kills: {e}"),
        }
    }

    /// The init has exited: a last look at the counter (the cgroup stays
    /// until the runtime's delete, which comes after the exit record),
    /// then the verdict into the record.
    pub fn settle(&mut self, record: &mut ExitRecord) {
        let seen_before = self.first_at.is_some();
        self.check();
        if let Some(at) = &self.first_at {
            record.oom_killed = true;
            // Seen only now (the wake-up not read yet): the kill came
            // before the exit, so it takes the exit's time, not a later one.
            record.oom_at = Some(if seen_before {
                at.clone()
            } else {
                record.finished_at.clone()
            });
        }
    }
}
