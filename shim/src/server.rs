//! `berth-shim serve`: the long-lived shim and its single event loop.
//!
//! One thread, one mio `Poll`, one explicit loop over events: SIGCHLD
//! (signal-hook-mio), the container's output pipes, its input, the control
//! and attach listeners and their clients. Edge-triggered: a source is
//! read or written until WouldBlock, or until its budget for this turn
//! (output pipes: `DRAIN_TURN`; control clients: a byte budget; attach
//! input: the stdin buffer limit) runs out, in which case the loop
//! remembers it and comes back without waiting for a new edge.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use serde_json::{json, Value};
use signal_hook_mio::v1_0::Signals;

use runtime_core::atomic;
use runtime_core::attach::AttachReply;
use runtime_core::exit::ExitRecord;
use runtime_core::layout::{ATTACH_SOCK, SHIM_SOCK};
use runtime_core::logfmt::Stream;
use runtime_core::logwrite::LogWriter;
use runtime_core::protocol::{
    shim_methods as m, ErrorCode, ExecParams, ExecStarted, Hello, KillParams, Request, Response,
    RpcError, WaitParams, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};
use runtime_core::runc::Runc;
use runtime_core::shimcmd::ShimConfig;

use crate::attach::{AttachEvent, AttachHub};
use crate::bootstrap::{bind, create_container, detach_from_parent};
use crate::conn::Tokens;
use crate::container::{Container, Table};
use crate::control::{params, ControlServer};
use crate::phase::Phase;
use crate::process::{Drain, OutputSink, Process, Record, Source, INIT};
use crate::reaper::Reaper;

const SIGNALS: Token = Token(0);
const CONTROL_LISTENER: Token = Token(1);
const ATTACH_LISTENER: Token = Token(2);
const OOM: Token = Token(3);
/// Clients and pipes get tokens from here on.
const FIRST_DYNAMIC: usize = 16;

/// Largest chunk read from a process at once.
const READ_CHUNK: usize = 128 * 1024;
/// Quiet time after which the shim hands back the memory a burst of work
/// touched (see `memory`).
const IDLE_TRIM: Duration = Duration::from_secs(1);

/// The shim: the container and everything that talks to it.
pub struct Shim {
    c: Container,
    poll: Poll,
    signals: Signals,
    control: ControlServer,
    hub: AttachHub,
    /// Which process and which pipe each stdio token is.
    sources: HashMap<Token, (String, Source)>,
    tokens: Tokens,
    /// The container's log: the init's output (never an exec's).
    log: LogWriter,
    /// Where a pump reads into. Above glibc's mmap threshold, so its own
    /// mapping: only pages a read wrote are resident.
    read_buf: Vec<u8>,
    /// Something ran since the last quiet second: give memory back at the next.
    trim_pending: bool,
}

/// A process's output: to its attach clients, and the init's to the log.
struct Sink<'a> {
    hub: &'a mut AttachHub,
    target: &'a str,
    log: Option<&'a mut LogWriter>,
}

impl OutputSink for Sink<'_> {
    fn paused(&self) -> bool {
        self.hub.paused_for(self.target)
    }

    fn output(&mut self, stream: Stream, data: &[u8]) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.write(stream, data) {
                log::error!("{e}");
            }
        }
        self.hub.broadcast(self.target, stream, data);
    }
}

/// Entry point of `serve`.
pub fn serve(config: ShimConfig) -> ExitCode {
    let ready = config.ready_fd.map(|fd| {
        // SAFETY: `start` passed us this fd, open and owned by nobody else here.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            owned.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        fs::File::from(owned)
    });
    detach_from_parent(ready.as_ref().map(|f| f.as_raw_fd()));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let report = |msg: String| {
        if let Some(mut f) = ready.as_ref() {
            let _ = f.write_all(msg.as_bytes());
        }
    };
    match Shim::create(config) {
        Ok(mut shim) => {
            let ready_report = runtime_core::protocol::ShimReady {
                pid: std::process::id() as i32,
                init_pid: shim.c.procs.init().pid,
                control: shim.c.paths.shim_sock(),
                attach: shim.c.paths.attach_sock(),
                state: Some(shim.c.state()),
            };
            // A bare JSON line, as `berth-shim start` printed it before
            // the serving shim reported itself: a berthd of an older
            // release, running this shim during an upgrade, reads it.
            match serde_json::to_string(&ready_report) {
                Ok(line) => report(format!("{line}\n")),
                Err(e) => report(format!("error encoding the readiness report: {e}\n")),
            }
            // berthd's end of file: it has its answer.
            let forked_by_start = ready.is_some();
            drop(ready);
            if forked_by_start {
                // Cosmetic, so after the report: if it fails, ps shows `start`.
                let _ = crate::daemon::show_as_serve();
            }
            log::info!(
                "container {} created, init pid {}",
                shim.c.cfg.id,
                shim.c.procs.init().pid
            );
            match shim.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("event loop failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(msg) => {
            log::error!("create failed: {msg}");
            report(format!("error {msg}\n"));
            ExitCode::from(1)
        }
    }
}

impl Shim {
    /// Sets up sockets and stdio and runs `runc create`; the error is the
    /// message the user sees (the runtime's own, where it gave one).
    fn create(cfg: ShimConfig) -> Result<Shim, String> {
        let paths = cfg.paths();
        let runc = Runc {
            binary: cfg.runtime.clone(),
            root: cfg.runc_root.clone(),
            log: paths.runc_log(),
        };
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        // Subscribe to SIGCHLD before anything is spawned.
        let mut signals =
            Signals::new([SIGCHLD as i32, SIGTERM as i32, SIGINT as i32, SIGHUP as i32])
                .map_err(|e| format!("signals: {e}"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("register signals: {e}"))?;
        // First, so a restarted berthd can tell a shim at work from a
        // container that never got one.
        atomic::write_until_reboot(&paths.shim_pid(), std::process::id().to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reaper = Reaper::default();
        // The sockets, their servers and the log are made while the
        // runtime runs: all exist before the report (berthd connects right
        // after it), and any of them failing fails the start with the
        // runtime's container deleted, nothing left running.
        let own_files = || {
            let mut control_listener = bind(&paths, SHIM_SOCK)?;
            let mut attach_listener = bind(&paths, ATTACH_SOCK)?;
            let log = LogWriter::open(&paths.log(), cfg.log).map_err(|e| e.to_string())?;
            let register = |e: io::Error| format!("register: {e}");
            let reg = poll.registry();
            reg.register(&mut control_listener, CONTROL_LISTENER, Interest::READABLE)
                .map_err(register)?;
            reg.register(&mut attach_listener, ATTACH_LISTENER, Interest::READABLE)
                .map_err(register)?;
            let clone = || reg.try_clone().map_err(register);
            let control = ControlServer::new(control_listener, clone()?);
            let hub = AttachHub::new(attach_listener, clone()?);
            Ok((control, hub, log))
        };
        let created = crate::mountns::enter(&cfg)
            .and_then(|()| create_container(&cfg, &paths, &runc, &mut reaper, own_files));
        let (stdio, pty, init_pid, (control, hub, log)) = match created {
            Ok(v) => v,
            Err(msg) => {
                let _ = fs::remove_file(paths.shim_sock());
                let _ = fs::remove_file(paths.attach_sock());
                let _ = fs::remove_file(paths.shim_pid());
                // Unmounted before the report: berthd, told, may clean
                // up or start the container again with a new shim while
                // this one is still exiting.
                crate::mountns::release(cfg.overlay.as_ref());
                return Err(msg);
            }
        };
        let phase = if cfg.start {
            Phase::Running
        } else {
            Phase::Created
        };
        let started_at = cfg.start.then(runtime_core::time::now_rfc3339);
        let init = Process::new(
            init_pid,
            Vec::new(),
            stdio,
            pty,
            phase,
            cfg.wait_attach,
            Record::Init(paths.exit()),
        );
        let mut shim = Shim {
            c: Container {
                cfg,
                paths,
                runc,
                reaper,
                procs: Table::new(init),
                started_at,
                oom: Default::default(),
            },
            poll,
            signals,
            control,
            hub,
            sources: HashMap::new(),
            tokens: Tokens::starting_at(FIRST_DYNAMIC),
            log,
            read_buf: vec![0u8; READ_CHUNK],
            trim_pending: true,
        };
        shim.register_process(INIT);
        let runc_state = shim.c.runc.root.join(&shim.c.cfg.id).join("state.json");
        let init_pid = shim.c.procs.init().pid;
        shim.c
            .oom
            .watch(shim.poll.registry(), OOM, init_pid, &runc_state);
        // The init may already have died (reaped while runc create ran).
        shim.on_sigchld();
        Ok(shim)
    }

    /// Puts a process's pipes in the poll under fresh tokens.
    fn register_process(&mut self, key: &str) {
        let Shim {
            c,
            poll,
            tokens,
            sources,
            ..
        } = self;
        let Some(p) = c.procs.get_mut(key) else {
            return;
        };
        for (token, source) in p.register(poll.registry(), || tokens.next()) {
            sources.insert(token, (key.to_string(), source));
        }
    }

    /// Runs `f` on a process with what its output needs: the read buffer,
    /// the registry and its sink (its clients; the log for the init).
    fn with_process<R>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut Process, &mut [u8], &Registry, &mut dyn OutputSink) -> R,
    ) -> Option<R> {
        let Shim {
            c,
            poll,
            hub,
            log,
            read_buf,
            ..
        } = self;
        let p = c.procs.get_mut(key)?;
        let log = (key == INIT).then_some(log);
        let mut sink = Sink {
            hub,
            target: key,
            log,
        };
        Some(f(p, read_buf, poll.registry(), &mut sink))
    }

    /// The event loop; returns after `delete`.
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(128);
        let mut requests = Vec::new();
        let mut attach_events = Vec::new();
        loop {
            if let Phase::Lingering { until, .. } = self.c.procs.init().phase {
                // Deleted: let attach clients take the output still queued
                // for them (and the exit frame), for a bounded time.
                if !self.hub.output_pending() || Instant::now() >= until {
                    break;
                }
            }
            let timeout = self.timeout();
            // After work, a quiet second (nothing due sooner) gives its
            // memory back; a far deadline (an idle client's) does not
            // put that off.
            let trim_wait = self.trim_pending && timeout.is_none_or(|t| t > IDLE_TRIM);
            let timeout = if trim_wait { Some(IDLE_TRIM) } else { timeout };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) if events.is_empty() => {
                    if trim_wait {
                        self.trim_pending = false;
                        crate::memory::trim();
                    }
                }
                Ok(()) => self.trim_pending = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(),
                    CONTROL_LISTENER => self.control.accept(&mut self.tokens),
                    ATTACH_LISTENER => self.hub.accept(&mut self.tokens),
                    OOM => {
                        if self.c.oom.wake() {
                            self.control.answer_oom_waiters(self.c.oom.seen().0);
                        }
                    }
                    token => {
                        if let Some((key, source)) = self.sources.get(&token).cloned() {
                            self.on_source(&key, source);
                        } else if self.control.owns(token) {
                            self.control.on_readable(token, &mut requests);
                        } else if self.hub.owns(token) {
                            let procs = &self.c.procs;
                            let full = |k: &str| procs.get(k).is_some_and(Process::stdin_full);
                            self.hub.on_event(
                                token,
                                event.is_readable(),
                                event.is_writable(),
                                &full,
                                &mut attach_events,
                            );
                        }
                    }
                }
                self.apply_attach_events(&mut attach_events);
                self.answer(&mut requests);
            }
            self.turn();
            self.answer(&mut requests);
            self.apply_attach_events(&mut attach_events);
        }
        Ok(())
    }

    /// How long the loop may sleep: not at all while work was left for
    /// the next turn, else until the next deadline.
    fn timeout(&self) -> Option<Duration> {
        let procs = &self.c.procs;
        let full = |k: &str| procs.get(k).is_some_and(Process::stdin_full);
        let more = self.hub.rereads_ready(&full)
            || self.control.rereads_pending()
            || procs.iter().any(|(_, p)| p.more());
        if more {
            return Some(Duration::ZERO);
        }
        let linger = match &procs.init().phase {
            Phase::Lingering { until, .. } => Some(*until),
            _ => None,
        };
        let now = Instant::now();
        procs
            .iter()
            .filter_map(|(_, p)| p.deadline())
            .chain(
                [
                    linger,
                    self.hub.deadline(),
                    self.control.deadline(),
                    self.c.oom.recheck_at(),
                ]
                .into_iter()
                .flatten(),
            )
            .min()
            .map(|d| d.saturating_duration_since(now))
    }

    /// The work of every turn, after the events: input held back,
    /// requests left unread, drains cut short, slow clients, finished
    /// processes, time-outs.
    fn turn(&mut self) {
        let mut requests = Vec::new();
        let mut attach_events = Vec::new();
        {
            let procs = &self.c.procs;
            let full = |k: &str| procs.get(k).is_some_and(Process::stdin_full);
            if self.hub.rereads_ready(&full) {
                self.hub.resume_readers(&full, &mut attach_events);
            }
        }
        self.apply_attach_events(&mut attach_events);
        self.control.resume_readers(&mut requests);
        self.answer(&mut requests);
        if self.c.oom.recheck_if_due() {
            self.control.answer_oom_waiters(self.c.oom.seen().0);
        }
        let now = Instant::now();
        self.hub.cut_stalled(now);
        for key in self.c.procs.keys() {
            self.with_process(&key, |p, buf, reg, sink| p.turn(now, buf, reg, sink));
            self.maybe_finish(&key);
            if let Some(p) = self.c.procs.get_mut(&key) {
                p.retry_record(now);
            }
        }
        self.forget_exited();
        let clients_pending = self.hub.output_pending() || self.control.output_pending();
        crate::retire::maybe_retire(&mut self.c, clients_pending);
        self.control.expire(now);
        self.hub.expire(now);
        self.control.settle();
    }

    /// An event on one of a process's pipes.
    fn on_source(&mut self, key: &str, source: Source) {
        self.with_process(key, |p, buf, reg, sink| match source {
            Source::Output(stream) => p.pump(stream, buf, reg, sink),
            Source::Input => p.flush_stdin(reg),
        });
    }

    fn on_signals(&mut self) {
        let mut child = false;
        for sig in self.signals.pending() {
            if sig == SIGCHLD as i32 {
                child = true;
            } else {
                log::info!("ignoring signal {sig}: the shim stops only on delete or once its container has exited");
            }
        }
        if child {
            self.on_sigchld();
        }
    }

    /// Reaps; every process among the dead starts draining its output.
    fn on_sigchld(&mut self) {
        self.c.reaper.reap_available();
        // Execs first: what is left after the init is an orphan's status.
        let mut keys = self.c.procs.keys();
        keys.rotate_left(1);
        for key in keys {
            self.take_status(&key);
        }
        let init = self.c.procs.init();
        let keep = if init.phase.reaped() { -1 } else { init.pid };
        self.c.reaper.forget_others(keep);
    }

    /// Takes a process's exit status if the reaper collected it.
    fn take_status(&mut self, key: &str) {
        let Some(p) = self.c.procs.get(key) else {
            return;
        };
        if p.phase.reaped() {
            return;
        }
        let pid = p.pid;
        let Some(status) = self.c.reaper.take(pid) else {
            return;
        };
        let Some(mut record) = ExitRecord::from_wait(pid, status) else {
            return;
        };
        if key == INIT {
            self.c.oom.settle(&mut record);
            record.started_at = self.c.started_at.clone();
            log::info!("init {pid} exited: {}", record.exit_code);
        } else {
            log::info!("exec {key} (pid {pid}) exited: {}", record.exit_code);
        }
        self.with_process(key, |p, buf, reg, sink| p.reaped(record, buf, reg, sink));
    }

    /// Records a process's exit once its output is drained (or the drain
    /// timed out): exit record first, then everyone who waits.
    fn maybe_finish(&mut self, key: &str) {
        let now = Instant::now();
        let Some(drain) = self.c.procs.get(key).map(|p| p.drain_state(now)) else {
            return;
        };
        match drain {
            Drain::Pending => return,
            Drain::Done => {}
            Drain::TimedOut => {
                log::warn!(
                    "{}: output still open {:?} after it exited (a background child?); reporting its exit",
                    if key == INIT { "init".to_string() } else { format!("exec {key}") },
                    crate::process::DRAIN_LIMIT
                );
                self.hub.cut_stalled_for(key);
                // The init's pipes stay: the log keeps what an escaped
                // process writes. An exec's have nobody left to read them.
                let close = key != INIT;
                self.with_process(key, |p, buf, reg, sink| p.last_read(close, buf, reg, sink));
            }
        }
        let registry = self.poll.registry();
        let Some(exit) = self.c.procs.get_mut(key).and_then(|p| p.finish(registry)) else {
            return;
        };
        if key == INIT {
            let value = serde_json::to_value(&exit).unwrap_or(Value::Null);
            self.control.answer_waiters(&value);
        } else {
            self.c.procs.exec_exited(key);
            self.sources.retain(|_, (k, _)| k != key);
        }
        self.hub.announce_exit(key, &exit);
    }

    /// Drops exited execs nobody needs in memory any more.
    fn forget_exited(&mut self) {
        let gone = self.c.procs.forget_exited();
        if gone.is_empty() {
            return;
        }
        self.sources.retain(|_, (k, _)| !gone.contains(k));
        if self.sources.capacity() > 4 * self.sources.len().max(4) {
            self.sources.shrink_to_fit();
        }
    }

    /// Applies what attach clients asked of their processes.
    fn apply_attach_events(&mut self, events: &mut Vec<AttachEvent>) {
        for ev in events.drain(..) {
            match ev {
                AttachEvent::Handshake { token, target } => self.welcome(token, &target),
                AttachEvent::Stdin { target, data } => {
                    let reg = self.poll.registry();
                    if let Some(p) = self.c.procs.get_mut(&target) {
                        p.push_stdin(&data);
                        p.flush_stdin(reg);
                    }
                }
                AttachEvent::StdinEof { target } => {
                    let reg = self.poll.registry();
                    if let Some(p) = self.c.procs.get_mut(&target) {
                        p.stdin_eof(reg);
                    }
                }
                AttachEvent::Resize { target, rows, cols } => {
                    let pty = self.c.procs.get(&target).and_then(Process::pty);
                    if let Some(pty) = pty {
                        if let Err(e) = crate::stdio::resize(pty, rows, cols) {
                            log::warn!("resize: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Answers a client's handshake: the process's reply, its exit at
    /// once if it has one, and its held output released.
    fn welcome(&mut self, token: Token, target: &str) {
        let Some(p) = self.c.procs.get(target) else {
            let msg = format!("berth: no exec {target} in this container (finished long ago?)");
            return self.hub.refuse(token, &msg);
        };
        let reply = AttachReply {
            error: None,
            tty: p.tty,
            stdin_open: p.stdin_open(),
            exited: p.exit().is_some(),
        };
        let exit = p.exit().cloned();
        self.hub.welcome(token, &reply, exit.as_ref());
        self.c.procs.delivered(target);
        // Output held for this client flows from now on.
        self.with_process(target, |p, buf, reg, sink| p.release(buf, reg, sink));
    }

    /// Answers the control requests read so far.
    fn answer(&mut self, requests: &mut Vec<(Token, Request)>) {
        for (token, req) in requests.drain(..) {
            if req.method == m::WAIT && self.c.procs.init().exit().is_none() {
                // A bare `wait` waits for the exit; with `oom_kills` it is
                // also answered (no exit record) once the kills pass it.
                let oom_known = serde_json::from_value::<Option<WaitParams>>(req.params.clone())
                    .ok()
                    .flatten()
                    .and_then(|p| p.oom_kills);
                if oom_known.is_none_or(|k| self.c.oom.seen().0 <= k) {
                    self.control.park_wait(token, req.id, oom_known);
                    continue;
                }
            }
            let resp = match self.dispatch(&req) {
                Ok(v) => Response::ok(req.id, v),
                Err(e) => Response::err(req.id, e),
            };
            self.control.reply(token, resp);
        }
    }

    fn dispatch(&mut self, req: &Request) -> Result<Value, RpcError> {
        let c = &mut self.c;
        match req.method.as_str() {
            m::HELLO => {
                params::<Hello>(req)?.check_compatible()?;
                Ok(json!({
                    "major": PROTOCOL_MAJOR,
                    "minor": PROTOCOL_MINOR,
                    "agent": format!("berth-shim {}", env!("CARGO_PKG_VERSION")),
                }))
            }
            m::STATE => Ok(serde_json::to_value(c.state()).unwrap_or(Value::Null)),
            m::START => c.start().map(|()| Value::Null),
            m::KILL => c
                .signal(params::<KillParams>(req)?.signal)
                .map(|()| Value::Null),
            m::WAIT => Ok(serde_json::to_value(c.procs.init().exit()).unwrap_or(Value::Null)),
            m::DELETE => c.delete().map(|()| Value::Null),
            m::PAUSE => c.pause().map(|()| Value::Null),
            m::RESUME => c.resume().map(|()| Value::Null),
            m::EXEC => {
                let p: ExecParams = params(req)?;
                let process = c.exec(&p)?;
                let started = ExecStarted { pid: process.pid };
                c.procs.insert_exec(p.exec_id.clone(), process, p.detach);
                self.register_process(&p.exec_id);
                // It may have been quick: reaped while runc exec was waited for.
                self.take_status(&p.exec_id);
                self.trim_pending = true;
                Ok(serde_json::to_value(started).unwrap_or(Value::Null))
            }
            other => Err(RpcError::new(
                ErrorCode::UnknownMethod,
                format!("unknown method {other:?}"),
            )),
        }
    }
}
