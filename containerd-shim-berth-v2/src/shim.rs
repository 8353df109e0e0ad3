//! The shim's state: one task (the container's init) and its execs, in one
//! table keyed by exec id ("" is the init), behind one lock.
//!
//! Architecture Invariant: one reaper. Only the shim's serving thread
//! calls waitpid (`monitor::reap`), and with the state lock held. So a
//! process that is not marked `reaped` cannot have been collected, its PID
//! cannot have been reused, and `kill(2)` on it under the lock is safe.
//! Runtime invocations are waited for through the same table (`reaped`,
//! kept while any spawn is in flight), never with `Child::wait`.
//!
//! The lock stays because the state is reached through the `Task` trait's
//! `&self` (and a pty copy thread may run beside the loop); only the one
//! thread ever waits on it for long.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use nix::sys::wait::WaitStatus;
use runtime_core::runc::Runc;

use crate::error::{Error, Result};
use crate::paths::Bundle;
use crate::publish::Publisher;
use crate::stdio;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How a process ended, as recorded on disk.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// One process of the task: the init or an exec.
pub struct Proc {
    pub pid: i32,
    pub phase: Phase,
    /// Collected by waitpid; its exit may not be recorded yet.
    pub reaped: bool,
    pub exit: Option<Exit>,
    pub paths: stdio::Paths,
    /// Read ends of its output fifos (see `stdio`).
    pub held: Vec<OwnedFd>,
    /// Our write end of its stdin fifo, until CloseIO.
    pub stdin_hold: Option<OwnedFd>,
    /// The pty master, with a terminal.
    pub console: Option<OwnedFd>,
    /// Signalled when the terminal's output has all been copied.
    pub output_done: Option<mpsc::Receiver<()>>,
}

impl Proc {
    pub fn new(paths: stdio::Paths) -> Self {
        Proc {
            pid: 0,
            phase: Phase::Created,
            reaped: false,
            exit: None,
            paths,
            held: Vec::new(),
            stdin_hold: None,
            console: None,
            output_done: None,
        }
    }
}

/// A reaped process whose exit is still to be recorded and announced.
pub struct Reaped {
    pub exec_id: String,
    pub pid: i32,
    pub status: WaitStatus,
}

#[derive(Default)]
pub struct State {
    pub procs: HashMap<String, Proc>,
    pub created: bool,
    pub deleted: bool,
    /// Statuses of children nobody has claimed yet (runtime invocations,
    /// a container process reaped before its PID was known).
    pub reaped: HashMap<i32, WaitStatus>,
    /// Runtime invocations in flight: while > 0, unknown statuses are kept.
    pub spawning: usize,
    pub exits: Vec<Reaped>,
    pub oom: crate::oom::Oom,
    pub mounted: bool,
    pub shutdown: bool,
}

/// The shim: what it serves and its state.
pub struct Shim {
    pub id: String,
    pub bundle: Bundle,
    pub runc: Runc,
    pub socket: PathBuf,
    pub publisher: Publisher,
    state: Mutex<State>,
}

/// A runtime invocation's result: its status and captured stdout.
pub struct RunOutput {
    pub status: WaitStatus,
    pub stdout: Vec<u8>,
}

impl Shim {
    pub fn new(id: String, bundle: Bundle, socket: PathBuf, publisher: Publisher) -> Self {
        let runc = Runc {
            binary: find_runtime("runc"),
            root: bundle.runc_root(),
            log: bundle.runc_log(),
        };
        Shim {
            id,
            bundle,
            runc,
            socket,
            publisher,
            state: Mutex::new(State::default()),
        }
    }

    /// The state, whoever panicked while holding it (the data stays usable).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a runtime invocation in flight until the guard drops: keep
    /// it alive until the PIDs it produced are registered.
    pub fn spawning(&self) -> SpawnGuard<'_> {
        self.lock().spawning += 1;
        SpawnGuard { shim: self }
    }

    /// Runs a runtime command to its end through the reaper; `input` goes
    /// to its stdin (piped). The caller holds a [`SpawnGuard`], and is the
    /// serving thread (it reaps).
    pub fn run(&self, mut cmd: Command, input: Option<&[u8]>) -> Result<RunOutput> {
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("run {}", self.runc.binary.display()), e))?;
        let pid = child.id() as i32;
        if let (Some(mut stdin), Some(data)) = (child.stdin.take(), input) {
            // A runtime that exits early closes the pipe: its status says why.
            let _ = stdin.write_all(data);
        }
        let mut stdout = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            // Bounded: a runtime's answer is small; never buffer without end.
            let _ = out.by_ref().take(16 << 20).read_to_end(&mut stdout);
        }
        let status = self.wait_pid(pid);
        // `child` is dropped without a wait: the monitor collected it.
        drop(child);
        Ok(RunOutput { status, stdout })
    }

    /// Runs a runtime command that must succeed; its own message otherwise.
    pub fn run_ok(&self, cmd: Command, op: &str, input: Option<&[u8]>) -> Result<RunOutput> {
        let mark = self.runc.log_mark();
        let out = self.run(cmd, input)?;
        if matches!(out.status, WaitStatus::Exited(_, 0)) {
            return Ok(out);
        }
        let fallback = format!("runc {op} failed ({:?})", out.status);
        Err(Error::Runtime(self.runc.error_since(mark, &fallback)))
    }

    /// Waits for `pid` (a runtime invocation) by reaping: whatever else
    /// exits meanwhile is queued for `monitor::settle` as usual.
    fn wait_pid(&self, pid: i32) -> WaitStatus {
        loop {
            if let Some(s) = self.lock().reaped.remove(&pid) {
                return s;
            }
            if !crate::monitor::reap(self, true) {
                // No child left, so nothing can ever bring its status.
                log::error!("runtime process {pid} vanished without a status");
                return WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 255);
            }
        }
    }

    /// Gives `exec_id` its PID; if the process is already gone (reaped
    /// while the runtime ran), its exit is queued for `monitor::settle`.
    pub fn register(&self, st: &mut State, exec_id: &str, pid: i32) {
        let status = st.reaped.remove(&pid);
        if let Some(p) = st.procs.get_mut(exec_id) {
            p.pid = pid;
            if let Some(status) = status {
                p.reaped = true;
                st.exits.push(Reaped {
                    exec_id: exec_id.to_string(),
                    pid,
                    status,
                });
            }
        }
    }
}

/// See [`Shim::spawning`].
pub struct SpawnGuard<'a> {
    shim: &'a Shim,
}

impl Drop for SpawnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shim.lock();
        st.spawning = st.spawning.saturating_sub(1);
    }
}

/// Reads a PID file written by the runtime.
pub fn read_pid(path: &std::path::Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Runtime(format!("{}: not a PID: {text:?}", path.display())))
}

/// The runtime's path on PATH, looked up once: a bare name would make
/// every invocation try each PATH entry with execve until one works.
fn find_runtime(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}
