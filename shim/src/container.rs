//! The container as the shim holds it: its process table (the init and
//! the execs, one `Process` type, keyed by exec ID with the init under
//! `process::INIT`) and the verbs berthd asks for (start, kill, pause,
//! resume, exec, delete, state). The verbs run the runtime to completion
//! through the reaper and change phases; they know neither the event
//! loop nor the clients (the loop registers a new exec's pipes and
//! answers the clients).

use std::collections::HashMap;
use std::time::Instant;

use runtime_core::layout::ContainerPaths;
use runtime_core::protocol::{ErrorCode, ExecParams, ExecState, RpcError, ShimState};
use runtime_core::runc::Runc;
use runtime_core::shimcmd::ShimConfig;

use crate::exec::{self, MAX_RUNNING_EXECS};
use crate::oom::Oom;
use crate::phase::Phase;
use crate::process::{Process, INIT};
use crate::reaper::Reaper;

/// Exited execs whose exit no `state` reply has carried yet, kept in
/// memory beyond which the oldest are forgotten: their records are on
/// disk, where berthd looks for an exec the shim no longer lists.
pub const MAX_UNREPORTED_EXITS: usize = 256;

/// How long a deleted shim waits for attach clients to take their output.
pub const LINGER_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the shim remembers of an exec besides its process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Retention {
    /// A client attached, or none was expected (detached).
    pub delivered: bool,
    /// A `state` reply carried its exit.
    pub reported: bool,
    /// Order of exit, to forget the oldest first.
    pub exit_seq: u64,
}

/// The init and the execs.
pub struct Table {
    init: Process,
    execs: HashMap<String, (Process, Retention)>,
    next_seq: u64,
}

impl Table {
    pub fn new(init: Process) -> Self {
        Table {
            init,
            execs: HashMap::new(),
            next_seq: 0,
        }
    }

    pub fn init(&self) -> &Process {
        &self.init
    }

    pub fn init_mut(&mut self) -> &mut Process {
        &mut self.init
    }

    pub fn get(&self, key: &str) -> Option<&Process> {
        if key == INIT {
            Some(&self.init)
        } else {
            self.execs.get(key).map(|(p, _)| p)
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Process> {
        if key == INIT {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(key).map(|(p, _)| p)
        }
    }

    /// Every key, the init's first.
    pub fn keys(&self) -> Vec<String> {
        std::iter::once(INIT.to_string())
            .chain(self.execs.keys().cloned())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Process)> {
        std::iter::once((INIT, &self.init))
            .chain(self.execs.iter().map(|(k, (p, _))| (k.as_str(), p)))
    }

    pub fn insert_exec(&mut self, id: String, p: Process, detached: bool) {
        let keep = Retention {
            delivered: detached,
            ..Retention::default()
        };
        self.execs.insert(id, (p, keep));
    }

    /// A client attached to this exec: its exit has a reader.
    pub fn delivered(&mut self, key: &str) {
        if let Some((_, keep)) = self.execs.get_mut(key) {
            keep.delivered = true;
        }
    }

    /// An exec's exit was recorded: it is ordered for forgetting.
    pub fn exec_exited(&mut self, key: &str) {
        if let Some((_, keep)) = self.execs.get_mut(key) {
            keep.exit_seq = self.next_seq;
            self.next_seq += 1;
        }
    }

    /// Every process's exit record is on disk (or it has none yet).
    pub fn all_recorded(&self) -> bool {
        self.iter().all(|(_, p)| p.recorded())
    }

    /// Some exec has not exited (or its exit is not recorded yet).
    pub fn execs_running(&self) -> bool {
        self.execs.values().any(|(p, _)| p.exit().is_none())
    }

    fn running_execs(&self) -> usize {
        self.execs
            .values()
            .filter(|(p, _)| p.exit().is_none())
            .count()
    }

    /// The execs as `state` reports them, in start order of their PIDs;
    /// every exit reported is marked so.
    fn report_execs(&mut self) -> Vec<ExecState> {
        let mut v = Vec::with_capacity(self.execs.len());
        for (id, (p, keep)) in self.execs.iter_mut() {
            if p.exit().is_some() && p.recorded() {
                keep.reported = true;
            }
            v.push(p.state(id));
        }
        v.sort_by_key(|s| s.pid);
        v
    }

    /// Forgets exited execs that need no more remembering: reported to
    /// berthd and had by their client. Past `MAX_UNREPORTED_EXITS` the
    /// oldest go anyway (their records are on disk). Returns the keys
    /// forgotten, whose poll tokens the loop drops.
    pub fn forget_exited(&mut self) -> Vec<String> {
        let mut gone: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, (p, k))| p.exit().is_some() && p.recorded() && k.reported && k.delivered)
            .map(|(id, _)| id.clone())
            .collect();
        let mut waiting: Vec<(u64, String)> = self
            .execs
            .iter()
            .filter(|(id, (p, _))| p.exit().is_some() && p.recorded() && !gone.contains(id))
            .map(|(id, (_, k))| (k.exit_seq, id.clone()))
            .collect();
        if waiting.len() > MAX_UNREPORTED_EXITS {
            waiting.sort();
            let excess = waiting.len() - MAX_UNREPORTED_EXITS;
            gone.extend(waiting.into_iter().take(excess).map(|(_, id)| id));
        }
        for id in &gone {
            self.execs.remove(id);
        }
        if self.execs.is_empty() && self.execs.capacity() > 0 {
            // Give back the table's memory: the shim idles for the
            // container's whole life.
            self.execs = HashMap::new();
        }
        gone
    }
}

/// The container: its configuration, runtime, reaper and processes.
pub struct Container {
    pub cfg: ShimConfig,
    pub paths: ContainerPaths,
    pub runc: Runc,
    pub reaper: Reaper,
    pub procs: Table,
    pub started_at: Option<String>,
    /// OOM kills in the container's cgroup (see `oom`).
    pub oom: Oom,
}

fn conflict(msg: String) -> RpcError {
    RpcError::new(ErrorCode::Conflict, msg)
}

impl Container {
    fn phase(&self) -> &Phase {
        &self.procs.init().phase
    }

    fn set_phase(&mut self, phase: Phase) {
        self.procs.init_mut().phase = phase;
    }

    /// The state berthd reconciles against. Exits it carries count as
    /// reported (see `Table::forget_exited`).
    pub fn state(&mut self) -> ShimState {
        let execs = self.procs.report_execs();
        ShimState {
            id: self.cfg.id.clone(),
            status: self.phase().status(),
            pid: self.procs.init().pid,
            started_at: self.started_at.clone(),
            exit: self.phase().exit().cloned().map(Box::new),
            shim_pid: std::process::id() as i32,
            execs,
            oom_kills: self.oom.seen().0,
            oom_at: self.oom.seen().1,
        }
    }

    /// Runs one runtime command to completion through the reaper.
    fn runtime_call(
        &mut self,
        cmd: std::process::Command,
        op: &'static str,
    ) -> Result<(), RpcError> {
        crate::runtime::call(&self.runc, &mut self.reaper, cmd, op)
    }

    pub fn start(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase(), Phase::Created) {
            return Err(conflict(format!(
                "container {} is not in the created state",
                self.cfg.id
            )));
        }
        self.runtime_call(self.runc.start(&self.cfg.id), "start")?;
        self.set_phase(Phase::Running);
        self.started_at = Some(runtime_core::time::now_rfc3339());
        Ok(())
    }

    /// Signals the init directly: we are its reaper, so its PID cannot be
    /// reused before we have collected it. A created (not started) container
    /// goes through runc, which knows how to stop `runc init`.
    pub fn signal(&mut self, signal: i32) -> Result<(), RpcError> {
        // Real-time signals (SIGRTMIN..SIGRTMAX) too: nix's `Signal` has
        // only the classic 31, so the range is checked here.
        if !(1..=libc::SIGRTMAX()).contains(&signal) {
            return Err(RpcError::new(
                ErrorCode::InvalidArgument,
                format!("invalid signal {signal}"),
            ));
        }
        if self.phase().reaped() {
            return Err(conflict(format!(
                "container {} is not running",
                self.cfg.id
            )));
        }
        if matches!(self.phase(), Phase::Created) {
            return self.runtime_call(self.runc.kill(&self.cfg.id, signal), "kill");
        }
        let pid = self.procs.init().pid;
        send_signal(pid, signal)
            .map_err(|e| RpcError::new(ErrorCode::Internal, format!("kill {pid}: {e}")))?;
        if matches!(self.phase(), Phase::Paused) && signal == libc::SIGKILL {
            // A cgroup v1 freezer holds even SIGKILL until the thaw: thaw,
            // so kill (and stop's final SIGKILL) work on a paused
            // container. Other signals wait for `resume`, as in Docker.
            self.runtime_call(self.runc.resume(&self.cfg.id), "resume")?;
            self.set_phase(Phase::Running);
        }
        Ok(())
    }

    /// Freezes the container (`runc pause`).
    pub fn pause(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase(), Phase::Running) {
            let why = match self.phase() {
                Phase::Paused => "is already paused",
                _ => "is not running",
            };
            return Err(conflict(format!("container {} {why}", self.cfg.id)));
        }
        self.runtime_call(self.runc.pause(&self.cfg.id), "pause")?;
        self.set_phase(Phase::Paused);
        Ok(())
    }

    /// Thaws a paused container (`runc resume`).
    pub fn resume(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase(), Phase::Paused) {
            return Err(conflict(format!("container {} is not paused", self.cfg.id)));
        }
        self.runtime_call(self.runc.resume(&self.cfg.id), "resume")?;
        self.set_phase(Phase::Running);
        Ok(())
    }

    /// Starts one more process in the running container; the caller puts
    /// it in the table (and the loop registers its pipes).
    pub fn exec(&mut self, p: &ExecParams) -> Result<Process, RpcError> {
        let id = &self.cfg.id;
        match self.phase() {
            Phase::Running => {}
            Phase::Paused => {
                return Err(conflict(format!(
                    "container {id} is paused: unpause it before exec"
                )))
            }
            Phase::Created => {
                return Err(conflict(format!(
                    "container {id} is created but not started: start it before exec"
                )))
            }
            _ => return Err(conflict(format!("container {id} is not running"))),
        }
        let args = exec::check(p, |x| self.procs.get(x).is_some())?;
        if self.procs.running_execs() >= MAX_RUNNING_EXECS {
            return Err(conflict(format!(
                "container {id} already runs {MAX_RUNNING_EXECS} exec'd processes"
            )));
        }
        exec::spawn(
            &self.runc,
            &mut self.reaper,
            &self.cfg.id,
            &self.paths,
            p,
            args,
        )
    }

    /// Removes the runtime's state and stops the shim. Only a stopped or
    /// never-started container can be deleted; berthd kills first for -f.
    pub fn delete(&mut self) -> Result<(), RpcError> {
        let force = match self.phase() {
            // Lingering: it exited and the shim is on its way out (see
            // `retire`), or a delete came first; runc's state may remain.
            Phase::Exited(_) | Phase::Lingering { .. } => false,
            Phase::Created => true,
            _ => {
                return Err(conflict(format!(
                    "container {} is running: stop it first",
                    self.cfg.id
                )))
            }
        };
        match self.runtime_call(self.runc.delete(&self.cfg.id, force), "delete") {
            Ok(()) => {}
            // Someone (an operator's `runc delete`) was first: the state we
            // would remove is already gone, which is what delete is for.
            // Decided by looking (runc keeps a container's state in
            // `<runc root>/<id>`), not by reading runc's message.
            Err(e) if !self.runc.root.join(&self.cfg.id).exists() => {
                log::warn!(
                    "runc delete {}: {}; already deleted",
                    self.cfg.id,
                    e.message
                )
            }
            Err(e) => return Err(e),
        }
        crate::mountns::release(self.cfg.overlay.as_ref());
        crate::retire::remove_endpoints(&self.paths);
        let exit = self.phase().exit().cloned();
        self.set_phase(Phase::Lingering {
            exit,
            until: Instant::now() + LINGER_LIMIT,
        });
        Ok(())
    }
}

/// kill(2) with any signal number, real-time ones included.
fn send_signal(pid: i32, signal: i32) -> nix::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, signal) };
    nix::errno::Errno::result(r).map(drop)
}
