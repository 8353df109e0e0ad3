//! Watching a container's memory cgroup for OOM kills.
//!
//! The kernel counts OOM kills per memory cgroup: cgroup v1 in
//! `memory.oom_control` (`oom_kill N`, since Linux 4.13), v2 in
//! `memory.events` (`oom_kill N`). The counter is the truth; the
//! notification only says when to look: on v1 an eventfd registered for
//! `memory.oom_control` through `cgroup.event_control`, on v2 inotify on
//! `memory.events` (the kernel sends IN_MODIFY when it changes). So a
//! watcher can also be asked at any moment (`check`), which is how the
//! shim decides at the init's exit, before the runtime's delete removes
//! the cgroup, even if the wake-up has not been read yet: an OOM kill is
//! never missed to a race between the notification and SIGCHLD.
//!
//! The count starts at zero, not at the counter's value when the watch
//! begins: the runtime creates the cgroup for the container, so every
//! kill it counts is the container's, also one that happened between the
//! runtime's create and the watch.
//!
//! The watcher owns one fd (`AsFd`), readable when the kernel has news;
//! the caller puts it in its own event loop.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::{self, Cgroup, CgroupError};

/// What can go wrong setting up or reading a watch.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OomError + 'a {
    move |source| OomError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> OomError + 'a {
    move |source| OomError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The first look again after a wake-up that counted no kill, doubling
/// for each of `RECHECKS` looks (630 ms in all).
const RECHECK_FIRST: Duration = Duration::from_millis(10);
const RECHECKS: u32 = 6;

/// The notification fd.
enum Notify {
    V1(EventFd),
    V2(Inotify),
}

/// An OOM watch on one memory cgroup.
pub struct OomWatcher {
    notify: Notify,
    /// The file holding the `oom_kill` counter.
    counter: PathBuf,
    /// Kills already reported by `check`.
    seen: u64,
    /// A wake-up that counted nothing: when to look again, and how many
    /// looks so far (see [`OomWatcher::wake`]).
    recheck: Option<(Instant, u32)>,
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok())?
    })
}

impl OomWatcher {
    /// Watches the memory cgroup of process `pid` (the container's init;
    /// one that has exited is an error, see `cgroup::of_container_pid`).
    pub fn for_pid(pid: i32) -> Result<OomWatcher, OomError> {
        match cgroup::of_container_pid(pid)? {
            Cgroup::V2(dir) => OomWatcher::v2(&dir),
            cg @ Cgroup::V1(_) => OomWatcher::v1(cg.v1_dir(pid, "memory")?),
        }
    }

    /// Watches the memory cgroup that runc's state file (`state.json` in
    /// its `--root`, `cgroup_paths`) names: for an init that is already
    /// gone (reaped before the watch began), where `/proc` has nothing.
    pub fn for_runc_state(state_json: &Path) -> Result<OomWatcher, OomError> {
        let text = fs::read_to_string(state_json).map_err(io_err("read", state_json))?;
        let bad = |what: &str| OomError::Io {
            op: "find the memory cgroup in",
            path: state_json.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let paths = v
            .get("cgroup_paths")
            .ok_or_else(|| bad("no cgroup_paths"))?;
        // v1: one path per controller; v2: the unified path under "".
        if let Some(dir) = paths.get("memory").and_then(|p| p.as_str()) {
            if Path::new(dir).join("memory.oom_control").exists() {
                return OomWatcher::v1(Path::new(dir));
            }
        }
        let dir = paths
            .get("")
            .and_then(|p| p.as_str())
            .ok_or_else(|| bad("no memory cgroup path"))?;
        OomWatcher::v2(Path::new(dir))
    }

    /// cgroup v1: an eventfd registered for `memory.oom_control`.
    pub fn v1(dir: &Path) -> Result<OomWatcher, OomError> {
        let counter = dir.join("memory.oom_control");
        let control_path = dir.join("cgroup.event_control");
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(sys_err("eventfd for", &counter))?;
        // The kernel takes its own reference on the cgroup at
        // registration; the oom_control file can be closed after.
        let control = File::open(&counter).map_err(io_err("open", &counter))?;
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        fs::write(&control_path, line).map_err(io_err("write", &control_path))?;
        // Fails early, and clearly, on a kernel without the counter (< 4.13).
        read_counter(&counter)?;
        Ok(OomWatcher {
            notify: Notify::V1(efd),
            counter,
            seen: 0,
            recheck: None,
        })
    }

    /// cgroup v2: inotify on `memory.events`.
    pub fn v2(dir: &Path) -> Result<OomWatcher, OomError> {
        let counter = dir.join("memory.events");
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys_err("inotify for", &counter))?;
        ino.add_watch(&counter, AddWatchFlags::IN_MODIFY)
            .map_err(sys_err("watch", &counter))?;
        read_counter(&counter)?;
        Ok(OomWatcher {
            notify: Notify::V2(ino),
            counter,
            seen: 0,
            recheck: None,
        })
    }

    /// The file the counter is read from (for messages).
    pub fn counter_file(&self) -> &Path {
        &self.counter
    }

    /// Empties the notification fd (it is edge-triggered for the
    /// caller's loop) and returns the OOM kills counted since the last
    /// call. Call it when the fd is readable, and once more before the
    /// cgroup goes away. A cgroup already removed counts nothing more.
    pub fn check(&mut self) -> Result<u64, OomError> {
        match &self.notify {
            // A v1 eventfd also fires when the cgroup is removed; the
            // counter tells the two apart.
            Notify::V1(efd) => while efd.read().is_ok() {},
            Notify::V2(ino) => while ino.read_events().is_ok_and(|e| !e.is_empty()) {},
        }
        let total = match read_counter(&self.counter) {
            Ok(n) => n,
            Err(OomError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(0)
            }
            Err(e) => return Err(e),
        };
        let new = total.saturating_sub(self.seen);
        self.seen = self.seen.max(total);
        Ok(new)
    }

    /// The fd woke the caller's loop: [`OomWatcher::check`], and when it
    /// counted nothing, look again shortly ([`OomWatcher::recheck_at`]).
    /// The kernel notifies as its OOM handling begins (v1's eventfd, v2's
    /// `oom` line of memory.events), before the kill it ends in is
    /// counted: without the second look a kill would wait for the next
    /// notification (or the exit) to be seen.
    pub fn wake(&mut self) -> Result<u64, OomError> {
        let new = self.check()?;
        self.recheck = (new == 0).then(|| (Instant::now() + RECHECK_FIRST, 0));
        Ok(new)
    }

    /// When the caller must call [`OomWatcher::recheck_if_due`].
    pub fn recheck_at(&self) -> Option<Instant> {
        self.recheck.map(|(at, _)| at)
    }

    /// The look again after a wake-up that counted nothing, once it is
    /// due (10 ms, doubling, `RECHECKS` times at most): new kills.
    pub fn recheck_if_due(&mut self) -> Result<u64, OomError> {
        let Some((at, n)) = self.recheck else {
            return Ok(0);
        };
        if Instant::now() < at {
            return Ok(0);
        }
        self.recheck = None;
        let new = self.check()?;
        if new == 0 && n + 1 < RECHECKS {
            self.recheck = Some((Instant::now() + RECHECK_FIRST * 2u32.pow(n + 1), n + 1));
        }
        Ok(new)
    }

    /// Every OOM kill reported so far.
    pub fn total(&self) -> u64 {
        self.seen
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.notify {
            Notify::V1(efd) => efd.as_fd(),
            Notify::V2(ino) => ino.as_fd(),
        }
    }
}

/// What a shim keeps of one run's OOM kills: the watch, when kills were
/// first and last seen, and the verdict for the exit record. berth-shim
/// and containerd-shim-berth-v2 both keep one, so a wake-up that comes
/// before its kill is counted (`wake`, `recheck_if_due`) and a kill seen
/// late is dated no later than the exit (`settle`) in both the same way.
/// Each `count` method returns the kills new since the last look.
#[derive(Default)]
pub struct OomTally {
    watcher: Option<OomWatcher>,
    /// When kills were first seen (RFC 3339, `time::now_rfc3339`).
    first_at: Option<String>,
    /// When new kills were last seen.
    last_at: Option<String>,
    /// When the notification that has not been counted yet woke the
    /// caller: the kernel notifies as its OOM handling begins, and the
    /// kill it ends in is often counted only by a look 10-630 ms later.
    /// The kill's time is the wake-up's, not the look's: a kill while
    /// berthd was down must not be dated after berthd's return because
    /// the look that counted it came late.
    woke_at: Option<String>,
}

impl OomTally {
    /// A watch on the memory cgroup of the container's init: from
    /// `/proc`, or runc's state file when the init is already gone.
    pub fn watch_init(init_pid: i32, runc_state: &Path) -> Result<OomWatcher, OomError> {
        OomWatcher::for_pid(init_pid).or_else(|e| {
            log::debug!("OOM watch from /proc/{init_pid}: {e}; trying runc's state");
            OomWatcher::for_runc_state(runc_state)
        })
    }

    /// Tallies what `watcher` counts from now on.
    pub fn new(watcher: OomWatcher) -> OomTally {
        OomTally {
            watcher: Some(watcher),
            first_at: None,
            last_at: None,
            woke_at: None,
        }
    }

    /// The watch, while there is one (its fd goes in the caller's loop).
    pub fn watcher(&self) -> Option<&OomWatcher> {
        self.watcher.as_ref()
    }

    /// Stops watching (the cgroup is going away); the tally stays.
    pub fn unwatch(&mut self) {
        self.watcher = None;
    }

    /// Counts what `look` finds, with the time it was seen. A read that
    /// fails is logged and counts nothing: the container must not fail
    /// for it.
    fn count(&mut self, look: impl FnOnce(&mut OomWatcher) -> Result<u64, OomError>) -> u64 {
        let Some(w) = self.watcher.as_mut() else {
            return 0;
        };
        match look(w) {
            Ok(0) => {
                // The looks after a wake-up found nothing: it was not a kill.
                if w.recheck_at().is_none() {
                    self.woke_at = None;
                }
                0
            }
            Ok(n) => {
                log::info!("{n} OOM kill(s) in the container ({} so far)", w.total());
                let at = self.woke_at.take().unwrap_or_else(crate::time::now_rfc3339);
                self.first_at.get_or_insert_with(|| at.clone());
                self.last_at = Some(at);
                n
            }
            Err(e) => {
                log::warn!("reading OOM kills: {e}");
                0
            }
        }
    }

    /// A look at the counter now ([`OomWatcher::check`]).
    pub fn check(&mut self) -> u64 {
        self.count(OomWatcher::check)
    }

    /// The watch's fd woke the caller's loop ([`OomWatcher::wake`]).
    pub fn wake(&mut self) -> u64 {
        // The earliest wake-up not counted yet stands for the kill.
        self.woke_at.get_or_insert_with(crate::time::now_rfc3339);
        self.count(OomWatcher::wake)
    }

    /// When the caller must call [`OomTally::recheck_if_due`].
    pub fn recheck_at(&self) -> Option<Instant> {
        self.watcher.as_ref().and_then(OomWatcher::recheck_at)
    }

    /// The look again after a wake-up that counted nothing, when due.
    pub fn recheck_if_due(&mut self) -> u64 {
        self.count(OomWatcher::recheck_if_due)
    }

    /// Kills so far, and when new ones were last seen.
    pub fn seen(&self) -> (u64, Option<String>) {
        let kills = self.watcher.as_ref().map_or(0, OomWatcher::total);
        (kills, self.last_at.clone())
    }

    /// The init has exited: a last look at the counter (the cgroup stays
    /// until the runtime's delete, which comes after the exit record),
    /// then the verdict into the record. Returns the kills new in that
    /// last look.
    pub fn settle(&mut self, record: &mut crate::exit::ExitRecord) -> u64 {
        let new = self.check();
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
        new
    }
}

fn read_counter(path: &Path) -> Result<u64, OomError> {
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    parse_oom_kill(&text).ok_or_else(|| OomError::Io {
        op: "find oom_kill in",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no oom_kill counter"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable(w: &OomWatcher, ms: u16) -> bool {
        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
    }

    #[test]
    fn parses_the_counter_of_both_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(3));
        assert_eq!(parse_oom_kill(v2), Some(2));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn v2_watch_wakes_on_a_changed_counter_and_counts_each_kill_once() {
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("memory.events");
        fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let mut w = OomWatcher::v2(d.path()).unwrap();
        assert!(!readable(&w, 0));
        assert_eq!(w.check().unwrap(), 0);
        fs::write(&events, "oom 2\noom_kill 2\n").unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.check().unwrap(), 2);
        assert!(!readable(&w, 0), "check drains the notification");
        assert_eq!(w.check().unwrap(), 0);
        fs::write(&events, "oom 3\noom_kill 3\n").unwrap();
        assert_eq!(w.check().unwrap(), 1, "asked without waiting for the wake");
        assert_eq!(w.total(), 3);
        fs::remove_file(&events).unwrap();
        assert_eq!(w.check().unwrap(), 0, "a removed cgroup counts nothing");
    }

    #[test]
    fn a_wake_before_the_kill_is_counted_looks_again() {
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("memory.events");
        fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let mut w = OomWatcher::v2(d.path()).unwrap();
        // The kernel's order: `oom` first (the wake-up), the kill after.
        fs::write(&events, "oom 1\noom_kill 0\n").unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.wake().unwrap(), 0);
        assert!(w.recheck_at().is_some(), "a look again is due");
        fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        // However late this thread runs (a look may already have found
        // nothing and re-armed), a later look finds the kill, once.
        let mut found = 0;
        while let Some(at) = w.recheck_at() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            found += w.recheck_if_due().unwrap();
        }
        assert_eq!(
            found, 1,
            "the kill is counted once, and then the looks stop"
        );
        // Nothing ever counted: the looks stop after RECHECKS.
        assert_eq!(w.wake().unwrap(), 0);
        let mut looks = 0;
        while let Some(at) = w.recheck_at() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            assert_eq!(w.recheck_if_due().unwrap(), 0);
            looks += 1;
        }
        assert_eq!(looks, RECHECKS);
    }

    /// A kill counted by a look after the wake-up is dated at the
    /// wake-up, not at the look (which can come hundreds of ms later):
    /// berthd decides by that time whether it was down at the kill.
    #[test]
    fn a_kill_counted_late_takes_the_time_of_the_wake_up() {
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("memory.events");
        fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let mut tally = OomTally::new(OomWatcher::v2(d.path()).unwrap());
        fs::write(&events, "oom 1\noom_kill 0\n").unwrap();
        let before_wake = crate::time::now_rfc3339();
        assert_eq!(tally.wake(), 0);
        std::thread::sleep(Duration::from_millis(30));
        let before_kill = crate::time::now_rfc3339();
        fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        let mut found = 0;
        while let Some(at) = tally.recheck_at() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            found += tally.recheck_if_due();
        }
        assert_eq!(found, 1);
        let (kills, at) = tally.seen();
        let at = at.unwrap();
        assert_eq!(kills, 1);
        assert!(
            before_wake <= at && at < before_kill,
            "{before_wake} {at} {before_kill}"
        );
        // A wake-up whose looks found nothing leaves no time behind.
        fs::write(&events, "oom 2\noom_kill 1\n").unwrap();
        assert_eq!(tally.wake(), 0);
        while let Some(at) = tally.recheck_at() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            assert_eq!(tally.recheck_if_due(), 0);
        }
        std::thread::sleep(Duration::from_millis(5));
        let before_second = crate::time::now_rfc3339();
        fs::write(&events, "oom 2\noom_kill 2\n").unwrap();
        assert_eq!(tally.check(), 1);
        let (_, at) = tally.seen();
        assert!(at.unwrap() >= before_second);
    }

    /// A child cgroup of our own, removed on drop (after its process).
    struct TempCgroup {
        dir: PathBuf,
        child: Option<std::process::Child>,
    }

    impl TempCgroup {
        /// `<name>-<pid>` in our own memory cgroup, and that cgroup; `None`
        /// (the test skipped) without root, which CI always has.
        fn under_our_own(name: &str) -> Option<(Cgroup, TempCgroup)> {
            if !nix::unistd::geteuid().is_root() {
                assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
                eprintln!("SKIPPED: needs root to make a cgroup");
                return None;
            }
            let me = std::process::id() as i32;
            let own = cgroup::of_pid(me).unwrap();
            let dir = match &own {
                Cgroup::V2(d) => d.join(format!("{name}-{me}")),
                Cgroup::V1(_) => own
                    .v1_dir(me, "memory")
                    .unwrap()
                    .join(format!("{name}-{me}")),
            };
            fs::create_dir(&dir).unwrap();
            Some((own, TempCgroup { dir, child: None }))
        }
    }

    impl Drop for TempCgroup {
        fn drop(&mut self) {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = fs::remove_dir(&self.dir);
        }
    }

    /// The real kernel: a process over its cgroup's memory limit is
    /// OOM-killed, the watch's fd becomes readable and `check` counts it.
    #[test]
    fn the_kernel_reports_a_real_oom_kill() {
        let Some((own, mut cg)) = TempCgroup::under_our_own("oom-test") else {
            return;
        };
        let dir = cg.dir.clone();
        let (limit_file, procs) = match &own {
            Cgroup::V2(_) => ("memory.max", "cgroup.procs"),
            Cgroup::V1(_) => ("memory.limit_in_bytes", "cgroup.procs"),
        };
        fs::write(dir.join(limit_file), "8388608").unwrap();
        let _ = fs::write(dir.join("memory.swap.max"), "0");
        let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), "8388608");
        let mut w = match own {
            Cgroup::V2(_) => OomWatcher::v2(&dir).unwrap(),
            Cgroup::V1(_) => OomWatcher::v1(&dir).unwrap(),
        };
        assert!(!readable(&w, 0));
        assert_eq!(w.check().unwrap(), 0);
        // The shell moves itself in, then doubles a string until killed.
        let script = format!(
            "echo $$ > {}; x=0123456789abcdef; while :; do x=$x$x; done",
            dir.join(procs).display()
        );
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        assert!(readable(&w, 30_000), "no OOM notification in 30 s");
        let status = child.wait().unwrap();
        cg.child = Some(child);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert_eq!(w.check().unwrap(), 1);
        assert_eq!(w.check().unwrap(), 0);
    }

    /// A container's init that has exited before its watch began: on v1
    /// the kernel lists a zombie in the root cgroups, and the watch must
    /// not land on the host's root memory cgroup (where every OOM kill on
    /// the host would count as the container's). A live process in the
    /// same cgroup is watched there.
    #[test]
    fn an_exited_init_is_not_watched_in_the_root_memory_cgroup() {
        let Some((own, mut cg)) = TempCgroup::under_our_own("zombie-test") else {
            return;
        };
        let dir = cg.dir.clone();
        let in_cgroup = |then: &str| {
            let script = format!(
                "echo $$ > {} && exec {then}",
                dir.join("cgroup.procs").display()
            );
            std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .spawn()
                .unwrap()
        };
        let state = |pid: u32| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()))
        };
        // Alive in the cgroup: watched there.
        let live = in_cgroup("/bin/sleep 30");
        let pid = live.id();
        cg.child = Some(live);
        let moved = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("/bin/sleep"))
        });
        assert!(moved, "the shell did not move itself in and exec sleep");
        let w = OomWatcher::for_pid(pid as i32).unwrap();
        assert_eq!(w.counter_file().parent(), Some(dir.as_path()));
        if let Some(mut c) = cg.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Exited, not yet reaped: a zombie (the guard reaps it).
        let gone = in_cgroup("/bin/true");
        let pid = gone.id();
        cg.child = Some(gone);
        let zombie = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            state(pid) == Some('Z')
        });
        assert!(zombie, "the child did not exit within a second");
        let listed = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let got = OomWatcher::for_pid(pid as i32);
        match got {
            Ok(w) => {
                // v2 keeps a zombie's own cgroup: watched there, not at the root.
                assert!(matches!(own, Cgroup::V2(_)), "{listed}");
                assert_eq!(w.counter_file().parent(), Some(dir.as_path()), "{listed}");
            }
            Err(e) => assert!(
                matches!(e, OomError::Cgroup(cgroup::CgroupError::Exited { .. })),
                "{listed}: {e}"
            ),
        }
    }

    #[test]
    fn runc_state_names_the_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let cg = d.path().join("cg");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("memory.events"), "oom_kill 1\n").unwrap();
        let state = d.path().join("state.json");
        let json =
            serde_json::json!({"id": "x", "cgroup_paths": {"": cg, "memory": "/nonexistent"}});
        fs::write(&state, json.to_string()).unwrap();
        let mut w = OomWatcher::for_runc_state(&state).unwrap();
        assert_eq!(w.counter_file(), cg.join("memory.events"));
        assert_eq!(w.check().unwrap(), 1);
        fs::write(&state, r#"{"id": "x"}"#).unwrap();
        let e = OomWatcher::for_runc_state(&state)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("state.json") && e.contains("cgroup_paths"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_the_counter_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("memory.events"), "oom 0\n").unwrap();
        let e = OomWatcher::v2(d.path()).err().unwrap().to_string();
        assert!(e.contains("memory.events") && e.contains("oom_kill"), "{e}");
        let e = OomWatcher::v2(&d.path().join("nope"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope/memory.events"), "{e}");
    }
}
