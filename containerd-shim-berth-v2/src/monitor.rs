//! The monitor: the shim's one thread once it serves. It polls a signalfd
//! for SIGCHLD (blocked in every thread), the OOM watch (`oom`), containerd's ttrpc listener and connections (`server`); it
//! reaps, records each exit on disk and only then answers the parked
//! Waits and tells containerd.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runtime_core::exit::ExitRecord;

use crate::publish::{self, topic};
use crate::server::{Server, Source};
use crate::shim::{Exit, Phase, Reaped, Shim};

/// How long an exit waits for a terminal's last output to be copied (an
/// escaped process may hold the pty open forever).
const DRAIN: Duration = Duration::from_secs(2);

/// Runs until Shutdown.
pub fn run(shim: &Shim, sigfd: &SignalFd, server: &mut Server) {
    loop {
        // A clone of the Arc: the fd stays open while we poll it.
        let (oom, timeout) = {
            let st = shim.lock();
            (st.oom.poll_fd(), st.oom.poll_timeout())
        };
        let (sig_ready, oom_ready, sources) = {
            let served = server.poll_fds();
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            if let Some(o) = &oom {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
            }
            let first = fds.len();
            let mut kinds = Vec::with_capacity(served.len());
            for (fd, src) in served {
                fds.push(fd);
                kinds.push(src);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => log::error!("poll: {e}"),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let sources: Vec<Source> = fds[first..]
                .iter()
                .zip(kinds)
                .filter(|(f, _)| ready(f))
                .map(|(_, k)| k)
                .collect();
            (ready(&fds[0]), oom.is_some() && ready(&fds[1]), sources)
        };
        if sig_ready {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        settle(shim);
        if oom_ready {
            crate::oom::wake(shim);
        } else {
            crate::oom::recheck(shim);
        }
        for src in sources {
            server.ready(shim, src);
            // A request may have reaped (a runtime run waits through the
            // reaper) or queued exits: record them before the next one.
            settle(shim);
        }
        server.answer_waits(shim);
        if shim.lock().shutdown {
            return;
        }
    }
}

/// Reaps whatever has exited and records every exit found (on disk,
/// then in the table). Called by the loop and by requests that need an
/// exit to be known before they answer.
pub fn settle(shim: &Shim) {
    let _ = reap(shim, false);
    loop {
        let next = {
            let mut st = shim.lock();
            if st.exits.is_empty() {
                None
            } else {
                Some(st.exits.remove(0))
            }
        };
        match next {
            Some(r) => finish_exit(shim, r),
            None => break,
        }
    }
}

/// Collects exited children, with the state lock held (see `shim`):
/// every one that has exited, and with `block` first waits for one.
/// False when it collected nothing and the shim has no child left.
pub fn reap(shim: &Shim, block: bool) -> bool {
    let (mut collected, mut childless) = (false, false);
    let mut st = shim.lock();
    let mut flags = if block {
        WaitPidFlag::empty()
    } else {
        WaitPidFlag::WNOHANG
    };
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(flags)) {
            Ok(WaitStatus::StillAlive) => break,
            Err(Errno::ECHILD) => {
                childless = true;
                break;
            }
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => s,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                break;
            }
        };
        flags = WaitPidFlag::WNOHANG;
        collected = true;
        let Some(pid) = status.pid().map(Pid::as_raw) else {
            continue;
        };
        let owner = st
            .procs
            .iter_mut()
            .find(|(_, p)| p.pid == pid && !p.reaped)
            .map(|(id, p)| {
                p.reaped = true;
                id.clone()
            });
        match owner {
            Some(exec_id) => st.exits.push(Reaped {
                exec_id,
                pid,
                status,
            }),
            None if st.spawning > 0 => {
                st.reaped.insert(pid, status);
            }
            // An orphan of the container nobody will ask about.
            None => {}
        }
    }
    if st.spawning == 0 {
        st.reaped.clear();
    }
    collected || !childless
}

/// Records an exit on disk, then tells the waiters, then containerd.
fn finish_exit(shim: &Shim, r: Reaped) {
    let done = shim
        .lock()
        .procs
        .get_mut(&r.exec_id)
        .and_then(|p| p.output_done.take());
    if let Some(done) = done {
        if done.recv_timeout(DRAIN).is_err() {
            log::warn!(
                "process {}: terminal output still open after {DRAIN:?}; reporting the exit",
                r.pid
            );
        }
    }
    let Some(mut record) = ExitRecord::from_wait(r.pid, r.status) else {
        return;
    };
    if r.exec_id.is_empty() {
        crate::oom::settle(shim, &mut record);
    }
    let path = shim.bundle.exit_record(&r.exec_id);
    if let Err(e) = runtime_core::atomic::write_json(&path, &record) {
        log::error!("record exit of {}: {e}", r.pid);
    }
    let at = humantime::parse_rfc3339_weak(&record.finished_at)
        .unwrap_or_else(|_| std::time::SystemTime::now());
    let status = u32::try_from(record.exit_code).unwrap_or(255);
    {
        let mut st = shim.lock();
        if let Some(p) = st.procs.get_mut(&r.exec_id) {
            p.exit = Some(Exit { status, at });
            p.phase = Phase::Stopped;
            p.stdin_hold = None;
            p.held.clear();
        }
    }
    let mut ev = publish::TaskExit::new();
    ev.container_id = shim.id.clone();
    ev.id = if r.exec_id.is_empty() {
        shim.id.clone()
    } else {
        r.exec_id.clone()
    };
    ev.pid = r.pid as u32;
    ev.exit_status = status;
    ev.exited_at = Some(publish::to_timestamp(at)).into();
    shim.publisher.publish(topic::EXIT, &ev);
}
