//! Processes started by `exec`: `runc exec --detach`, reaped by the shim
//! (it is the subreaper), their stdio owned here and served on the
//! attach socket under the exec's ID. Exec output goes to that exec's
//! attach clients only, never to the container's log (as Docker).
//!
//! Each exec has its own phase, stdio, stdin buffer, held output and exit
//! record; the init's stay in `server`. An exec that is not detached
//! holds its output (reads nothing) until its first client attaches or
//! `HOLD_LIMIT` passes, so a client that connects a moment after the
//! process started loses nothing, not even the exit of a process that
//! was quicker than the client.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use mio::{Interest, Token};
use nix::sys::wait::WaitStatus;

use runtime_core::exit::ExitRecord;
use runtime_core::logfmt::Stream;
use runtime_core::protocol::{
    valid_exec_id, ErrorCode, ExecParams, ExecStarted, ExecState, RpcError,
};
use runtime_core::runc::ExecOpts;
use runtime_core::sockpath;

use crate::phase::Phase;
use crate::runtime::check_status;
use crate::server::{Shim, DRAIN_LIMIT, DRAIN_TURN, HOLD_LIMIT, PIPE_SIZE};
use crate::stdio::{self, ShimStdio};

/// Execs running at once in one container.
pub const MAX_RUNNING_EXECS: usize = 256;
/// Exited execs whose record is kept (for `inspect`) after their client
/// had it or nobody was going to ask; older ones are forgotten, so the
/// shim's memory does not grow with every exec.
pub const KEEP_EXITED: usize = 16;

/// Where an exec is in its life. Impossible combinations (an exit record
/// on a running process, a drain deadline without an exit) cannot be
/// written down.
#[derive(Debug)]
pub enum ExecPhase {
    Running,
    /// Reaped; its output is read until EOF or the deadline.
    Draining {
        exit: ExitRecord,
        deadline: Instant,
    },
    Exited(ExitRecord),
}

/// One source of an exec's stdio in the event loop.
#[derive(Debug, Clone, Copy)]
pub enum ExecSource {
    Output(Stream),
    Input,
}

/// One exec'd process.
pub struct Exec {
    pub args: Vec<String>,
    pub pid: i32,
    pub tty: bool,
    pub stdio: ShimStdio,
    /// The pty master, kept for resizes (`-t` only).
    pub pty: Option<OwnedFd>,
    pub stdin_buf: Vec<u8>,
    pub stdin_close_requested: bool,
    pub phase: ExecPhase,
    /// Output is held (not read) until this deadline or the first client.
    pub hold_until: Option<Instant>,
    /// Output left in a pipe when its turn ran out (stdout, stderr).
    output_more: [bool; 2],
    /// Reading stopped for a slow client; resume when it catches up.
    output_was_paused: bool,
    /// A client attached, or none was expected: once exited, the record
    /// may be forgotten among the oldest.
    delivered: bool,
    /// Order of exit, for forgetting the oldest.
    exit_seq: u64,
}

impl Exec {
    pub fn exit(&self) -> Option<&ExitRecord> {
        match &self.phase {
            ExecPhase::Exited(r) => Some(r),
            _ => None,
        }
    }

    pub fn state(&self, id: &str) -> ExecState {
        ExecState {
            id: id.to_string(),
            args: self.args.clone(),
            pid: self.pid,
            running: !matches!(self.phase, ExecPhase::Exited(_)),
            exit: self.exit().cloned(),
        }
    }
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn conflict(msg: String) -> RpcError {
    RpcError::new(ErrorCode::Conflict, msg)
}

fn invalid(msg: String) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

/// The exec table and the routing of its stdio tokens.
#[derive(Default)]
pub struct Execs {
    pub table: HashMap<String, Exec>,
    pub sources: HashMap<Token, (String, ExecSource)>,
    next_seq: u64,
}

impl Shim {
    /// `exec`: starts one more process in the running container.
    pub fn exec(&mut self, p: ExecParams) -> Result<ExecStarted, RpcError> {
        let id = self.cfg.id.clone();
        match self.phase {
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
        if !valid_exec_id(&p.exec_id) {
            return Err(invalid(format!(
                "invalid exec ID {:?}: 1 to 64 of [0-9A-Za-z_-]",
                p.exec_id
            )));
        }
        if self.execs.table.contains_key(&p.exec_id) {
            return Err(conflict(format!("exec ID {} is already in use", p.exec_id)));
        }
        let running = self
            .execs
            .table
            .values()
            .filter(|e| e.exit().is_none())
            .count();
        if running >= MAX_RUNNING_EXECS {
            return Err(conflict(format!(
                "container {id} already runs {MAX_RUNNING_EXECS} exec'd processes"
            )));
        }
        let args: Vec<String> = p
            .process
            .get("args")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default();
        if args.is_empty() {
            return Err(invalid("exec: no command given".to_string()));
        }
        let dir = self.paths.dir().to_path_buf();
        let opts = ExecOpts {
            process: dir.join(format!("exec-{}.json", p.exec_id)),
            pid_file: dir.join(format!("exec-{}.pid", p.exec_id)),
            console_socket: p
                .tty
                .then(|| dir.join(format!("exec-{}.console", p.exec_id))),
        };
        let spawned = self.spawn_exec(&p, &opts);
        for f in [Some(&opts.process), Some(&opts.pid_file)]
            .into_iter()
            .chain([opts.console_socket.as_ref()])
            .flatten()
        {
            let _ = fs::remove_file(f);
        }
        let (stdio, pid) = spawned?;
        let pty = if p.tty {
            stdio
                .stdout
                .as_ref()
                .and_then(|r| r.as_fd().try_clone_to_owned().ok())
        } else {
            None
        };
        let mut exec = Exec {
            args,
            pid,
            tty: p.tty,
            stdio,
            pty,
            stdin_buf: Vec::new(),
            stdin_close_requested: false,
            phase: ExecPhase::Running,
            hold_until: (!p.detach).then(|| Instant::now() + HOLD_LIMIT),
            output_more: [false; 2],
            output_was_paused: false,
            delivered: p.detach,
            exit_seq: 0,
        };
        self.register_exec(&p.exec_id, &mut exec);
        log::info!("exec {} started: pid {pid}", p.exec_id);
        self.execs.table.insert(p.exec_id.clone(), exec);
        // It may have been quick: reaped while runc exec was waited for.
        if let Some(status) = self.reaper.take(pid) {
            self.exec_reaped(&p.exec_id, status);
        }
        self.trim_pending = true;
        Ok(ExecStarted { pid })
    }

    /// Writes the process file, makes the stdio and runs `runc exec`;
    /// the shim's ends of the stdio and the process's PID.
    fn spawn_exec(
        &mut self,
        p: &ExecParams,
        opts: &ExecOpts,
    ) -> Result<(ShimStdio, i32), RpcError> {
        let internal = |m: String| RpcError::new(ErrorCode::Internal, m);
        let text = serde_json::to_vec(&p.process).map_err(|e| internal(e.to_string()))?;
        fs::write(&opts.process, text)
            .map_err(|e| internal(format!("write {}: {e}", opts.process.display())))?;
        let _ = fs::remove_file(&opts.pid_file);
        let mut console = None;
        let mut cmd = self.runc.exec(&self.cfg.id, opts);
        let mut shim_stdio = None;
        if let Some(sock) = &opts.console_socket {
            let _ = fs::remove_file(sock);
            let (short, _h) = sockpath::short(sock).map_err(|e| internal(e.to_string()))?;
            let l = std::os::unix::net::UnixListener::bind(&short)
                .map_err(|e| internal(format!("bind {}: {e}", sock.display())))?;
            console = Some(l);
        } else if p.detach {
            shim_stdio = Some(ShimStdio {
                input: None,
                stdout: None,
                stderr: None,
            });
        } else {
            let (s, c) =
                stdio::pipes(p.stdin, PIPE_SIZE).map_err(|e| internal(format!("pipes: {e}")))?;
            cmd.stdin(c.stdin).stdout(c.stdout).stderr(c.stderr);
            shim_stdio = Some(s);
        }
        let mark = self.runc.log_mark();
        let spawned = cmd.spawn();
        // Drop our copies of the child's ends so EOF means the process closed them.
        drop(cmd);
        let child = spawned.map_err(|e| {
            RpcError::new(
                ErrorCode::Runtime,
                format!("{}: {e}", self.runc.binary.display()),
            )
        })?;
        let status = self.reaper.wait_for(child.id() as i32);
        check_status(&self.runc, mark, status, "exec")
            .map_err(|m| RpcError::new(ErrorCode::Runtime, m))?;
        // The process runs from here on: read its pid first, so that a
        // failure to take its stdio below can end it instead of leaving it
        // running in no table (the reaper collects it as a stranger).
        let pid_text = fs::read_to_string(&opts.pid_file).map_err(|e| {
            internal(format!(
                "runtime wrote no pid file {}: {e}",
                opts.pid_file.display()
            ))
        })?;
        let pid: i32 = pid_text
            .trim()
            .parse()
            .map_err(|e| internal(format!("bad pid file {pid_text:?}: {e}")))?;
        let shim_stdio = match (shim_stdio, &console) {
            (Some(s), _) => Ok(s),
            (None, Some(l)) => stdio::receive_pty(l, p.stdin).map_err(|e| internal(e.to_string())),
            (None, None) => Err(internal("exec: no stdio".to_string())),
        };
        let shim_stdio = match shim_stdio {
            Ok(s) => s,
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(e);
            }
        };
        Ok((shim_stdio, pid))
    }

    fn register_exec(&mut self, id: &str, exec: &mut Exec) {
        let mut sources = Vec::new();
        if let Some(r) = exec.stdio.stdout.as_mut() {
            sources.push((
                r as &mut dyn mio::event::Source,
                ExecSource::Output(Stream::Stdout),
                Interest::READABLE,
            ));
        }
        if let Some(r) = exec.stdio.stderr.as_mut() {
            sources.push((
                r as &mut dyn mio::event::Source,
                ExecSource::Output(Stream::Stderr),
                Interest::READABLE,
            ));
        }
        if let Some(w) = exec.stdio.input.as_mut() {
            sources.push((
                w as &mut dyn mio::event::Source,
                ExecSource::Input,
                Interest::WRITABLE,
            ));
        }
        for (source, what, interest) in sources {
            let token = Token(self.next_token);
            self.next_token += 1;
            match self.poll.registry().register(source, token, interest) {
                Ok(()) => {
                    self.execs.sources.insert(token, (id.to_string(), what));
                }
                Err(e) => log::error!("exec {id}: register {what:?}: {e}"),
            }
        }
    }

    /// An event on one of an exec's pipes.
    pub fn on_exec_source(&mut self, token: Token) {
        let Some((id, what)) = self.execs.sources.get(&token).cloned() else {
            return;
        };
        match what {
            ExecSource::Output(stream) => self.drain_exec(&id, stream),
            ExecSource::Input => self.flush_exec_stdin(&id),
        }
    }

    /// Takes the exit statuses of execs the reaper collected.
    pub fn reap_execs(&mut self) {
        let running: Vec<(String, i32)> = self
            .execs
            .table
            .iter()
            .filter(|(_, e)| matches!(e.phase, ExecPhase::Running))
            .map(|(id, e)| (id.clone(), e.pid))
            .collect();
        for (id, pid) in running {
            if let Some(status) = self.reaper.take(pid) {
                self.exec_reaped(&id, status);
            }
        }
    }

    fn exec_reaped(&mut self, id: &str, status: WaitStatus) {
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        let Some(record) = ExitRecord::from_wait(e.pid, status) else {
            return;
        };
        log::info!("exec {id} (pid {}) exited: {}", e.pid, record.exit_code);
        e.phase = ExecPhase::Draining {
            exit: record,
            deadline: Instant::now() + DRAIN_LIMIT,
        };
        self.close_exec_stdin(id);
        self.drain_exec(id, Stream::Stdout);
        self.drain_exec(id, Stream::Stderr);
    }

    /// Reads an exec's pipe until WouldBlock (or its turn runs out) and
    /// sends what it read to the exec's clients.
    pub fn drain_exec(&mut self, id: &str, stream: Stream) {
        if self
            .execs
            .table
            .get(id)
            .is_none_or(|e| e.hold_until.is_some())
        {
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let began = Instant::now();
        for reads in 0u32.. {
            let paused = self.output_paused_for(Some(id));
            let Some(e) = self.execs.table.get_mut(id) else {
                break;
            };
            if reads > 0 && began.elapsed() >= DRAIN_TURN {
                e.output_more[slot(stream)] = true;
                break;
            }
            if paused {
                e.output_was_paused = true;
                break;
            }
            let source = match stream {
                Stream::Stdout => e.stdio.stdout.as_mut(),
                Stream::Stderr => e.stdio.stderr.as_mut(),
            };
            let Some(pipe) = source else { break };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.close_exec_output(id, stream);
                    break;
                }
                Ok(n) => self.broadcast(Some(id), stream, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO on a pty master: the last slave end closed.
                Err(_) => {
                    self.close_exec_output(id, stream);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    fn close_exec_output(&mut self, id: &str, stream: Stream) {
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        let slot = match stream {
            Stream::Stdout => &mut e.stdio.stdout,
            Stream::Stderr => &mut e.stdio.stderr,
        };
        if let Some(mut pipe) = slot.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        self.execs
            .sources
            .retain(|_, (i, w)| !(i == id && matches!(w, ExecSource::Output(s) if *s == stream)));
    }

    /// Writes buffered input to the exec until WouldBlock.
    pub fn flush_exec_stdin(&mut self, id: &str) {
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        let mut written = 0;
        if let Some(w) = e.stdio.input.as_mut() {
            while written < e.stdin_buf.len() {
                match w.write(&e.stdin_buf[written..]) {
                    Ok(n) => written += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The process closed its stdin: drop what it will never read.
                        written = e.stdin_buf.len();
                        break;
                    }
                }
            }
        }
        e.stdin_buf.drain(..written);
        if e.stdin_buf.is_empty() && e.stdin_close_requested {
            self.close_exec_stdin(id);
        }
    }

    /// Closes the exec's stdin (EOF for it); a pty keeps its master.
    pub fn close_exec_stdin(&mut self, id: &str) {
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        if e.tty && matches!(e.phase, ExecPhase::Running) {
            return;
        }
        if let Some(mut w) = e.stdio.input.take() {
            let _ = self.poll.registry().deregister(&mut w);
        }
        e.stdin_buf = Vec::new();
        self.execs
            .sources
            .retain(|_, (i, w)| !(i == id && matches!(w, ExecSource::Input)));
    }

    /// A client attached to this exec: its held output flows from now on.
    pub fn release_exec(&mut self, id: &str) {
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        e.delivered = true;
        if e.hold_until.take().is_none() {
            return;
        }
        if let ExecPhase::Draining { deadline, .. } = &mut e.phase {
            // The drain limit counts from when we start to drain.
            *deadline = Instant::now() + DRAIN_LIMIT;
        }
        self.drain_exec(id, Stream::Stdout);
        self.drain_exec(id, Stream::Stderr);
    }

    /// The earliest moment an exec needs the loop: a drain or hold deadline.
    pub fn exec_deadline(&self) -> Option<Instant> {
        self.execs
            .table
            .values()
            .flat_map(|e| {
                let drain = match &e.phase {
                    ExecPhase::Draining { deadline, .. } if e.hold_until.is_none() => {
                        Some(*deadline)
                    }
                    _ => None,
                };
                [drain, e.hold_until]
            })
            .flatten()
            .min()
    }

    /// An exec's pipe was left readable at the end of its turn.
    pub fn exec_output_more(&self) -> bool {
        self.execs
            .table
            .values()
            .any(|e| e.output_more.contains(&true))
    }

    /// Once per turn of the loop: continues drains cut short, resumes
    /// output a slow client held back, lets go of held output nobody came
    /// for, and finishes execs whose output is drained.
    pub fn exec_housekeeping(&mut self) {
        let now = Instant::now();
        let ids: Vec<String> = self.execs.table.keys().cloned().collect();
        for id in &ids {
            let Some(e) = self.execs.table.get_mut(id) else {
                continue;
            };
            let more = std::mem::take(&mut e.output_more);
            let held_too_long = e.hold_until.is_some_and(|d| now >= d);
            let was_paused = e.output_was_paused;
            if held_too_long {
                log::warn!(
                    "no client attached to exec {id} within {HOLD_LIMIT:?}; discarding its output"
                );
                self.release_exec(id);
            }
            for stream in [Stream::Stdout, Stream::Stderr] {
                if more[slot(stream)] {
                    self.drain_exec(id, stream);
                }
            }
            if was_paused && !self.output_paused_for(Some(id)) {
                if let Some(e) = self.execs.table.get_mut(id) {
                    e.output_was_paused = false;
                }
                self.drain_exec(id, Stream::Stdout);
                self.drain_exec(id, Stream::Stderr);
            }
            self.maybe_finish_exec(id);
        }
    }

    fn maybe_finish_exec(&mut self, id: &str) {
        let Some(e) = self.execs.table.get(id) else {
            return;
        };
        let ExecPhase::Draining { deadline, .. } = &e.phase else {
            return;
        };
        if e.hold_until.is_some() {
            return;
        }
        let drained = e.stdio.stdout.is_none() && e.stdio.stderr.is_none();
        if !drained && Instant::now() < *deadline {
            return;
        }
        if !drained {
            log::warn!("exec {id}: output still open {DRAIN_LIMIT:?} after it exited (a background child?); reporting its exit");
            self.cut_stalled_for(Some(id));
            self.drain_exec(id, Stream::Stdout);
            self.drain_exec(id, Stream::Stderr);
            self.close_exec_output(id, Stream::Stdout);
            self.close_exec_output(id, Stream::Stderr);
        }
        let seq = self.execs.next_seq;
        self.execs.next_seq += 1;
        let Some(e) = self.execs.table.get_mut(id) else {
            return;
        };
        let exit = match std::mem::replace(&mut e.phase, ExecPhase::Running) {
            ExecPhase::Draining { exit, .. } | ExecPhase::Exited(exit) => exit,
            ExecPhase::Running => return,
        };
        e.phase = ExecPhase::Exited(exit.clone());
        e.exit_seq = seq;
        e.pty = None;
        if let Some(mut w) = e.stdio.input.take() {
            let _ = self.poll.registry().deregister(&mut w);
        }
        e.stdin_buf = Vec::new();
        self.execs.sources.retain(|_, (i, _)| i != id);
        self.announce_exit_to(Some(id), &exit);
        self.forget_old_execs();
    }

    /// Keeps the records of the `KEEP_EXITED` most recently exited execs
    /// that were delivered (or never awaited), and every one still awaited.
    fn forget_old_execs(&mut self) {
        let mut done: Vec<(u64, String)> = self
            .execs
            .table
            .iter()
            .filter(|(_, e)| e.exit().is_some() && e.delivered)
            .map(|(id, e)| (e.exit_seq, id.clone()))
            .collect();
        if done.len() <= KEEP_EXITED {
            return;
        }
        done.sort();
        let excess = done.len() - KEEP_EXITED;
        for (_, id) in done.into_iter().take(excess) {
            self.execs.table.remove(&id);
        }
        if self.execs.table.is_empty() {
            // Give back the table's memory: the shim idles for the
            // container's whole life.
            self.execs.table = HashMap::new();
            self.execs.sources = HashMap::new();
        }
    }

    /// The execs as `state` reports them, in start order of their PIDs.
    pub fn exec_states(&self) -> Vec<ExecState> {
        let mut v: Vec<ExecState> = self.execs.table.iter().map(|(id, e)| e.state(id)).collect();
        v.sort_by_key(|s| s.pid);
        v
    }
}
