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
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::layout::{ContainerPaths, ATTACH_SOCK, SHIM_SOCK};
use runtime_core::logfmt::Stream;
use runtime_core::logwrite::LogWriter;
use runtime_core::runc::Runc;
use runtime_core::shimcmd::ShimConfig;

use crate::attach::AttachClient;
use crate::bootstrap::{bind, create_container, detach_from_parent};
use crate::phase::Phase;
use crate::reaper::Reaper;
use crate::stdio::ShimStdio;

pub const SIGNALS: Token = Token(0);
pub const CONTROL_LISTENER: Token = Token(1);
pub const ATTACH_LISTENER: Token = Token(2);
pub const STDOUT: Token = Token(3);
pub const STDERR: Token = Token(4);
pub const STDIN: Token = Token(5);
pub const OOM: Token = Token(6);
const FIRST_CLIENT: usize = 16;

/// How long output is drained after the init exits, in case an escaped
/// process keeps the pipes open.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Largest chunk read from the container at once.
const READ_CHUNK: usize = 128 * 1024;
/// Time spent reading one output pipe per turn of the event loop. A
/// container that writes without pause keeps its pipe readable forever;
/// past this the loop serves its other sources (control, attach, signals)
/// and comes back. Time, not bytes: a chunk of short lines costs twenty
/// times its size in log records.
pub const DRAIN_TURN: Duration = Duration::from_millis(5);
/// How long a deleted shim waits for attach clients to take their output.
pub const LINGER_LIMIT: Duration = Duration::from_secs(2);
/// How long output is held for the first attach client (`--wait-attach`).
pub const HOLD_LIMIT: Duration = Duration::from_secs(5);
/// Pipe capacity asked for: fewer wake-ups, and room for output held
/// while the first client attaches.
pub const PIPE_SIZE: i32 = 1 << 20;
/// Quiet time after which the shim hands back the memory a burst of work
/// touched (see `memory`).
const IDLE_TRIM: Duration = Duration::from_secs(1);
/// First and longest wait between tries to write an exit record that the
/// disk refused (ENOSPC, EIO): soon after space returns, and cheap
/// while it does not.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);
/// Bound on container input buffered while the container is not reading.
pub const STDIN_BUFFER_LIMIT: usize = 1 << 20;

/// The shim's view of the container.
pub struct Shim {
    pub cfg: ShimConfig,
    pub paths: ContainerPaths,
    pub runc: Runc,
    pub poll: Poll,
    signals: Signals,
    pub reaper: Reaper,
    pub control_listener: UnixListener,
    pub attach_listener: UnixListener,
    pub stdio: ShimStdio,
    /// The pty master, kept for resizes (tty containers only).
    pub pty: Option<OwnedFd>,
    log: LogWriter,
    /// The init's phase (see `phase`).
    pub phase: Phase,
    pub init_pid: i32,
    pub started_at: Option<String>,
    pub controls: HashMap<Token, crate::control::ControlClient>,
    pub attaches: HashMap<Token, AttachClient>,
    /// Control requests (`wait`) to answer when the container exits.
    /// Pending `wait`s: client, request id, and the OOM kill count past
    /// which it is answered early (`WaitParams::oom_kills`).
    pub waiters: Vec<(Token, u64, Option<u64>)>,
    /// Attach clients with unread input (see `attach`).
    pub rereads: crate::attach::Rereads,
    /// Control clients with unread requests (see `control`).
    pub control_rereads: crate::control::ControlRereads,
    pub next_token: usize,
    pub stdin_buf: Vec<u8>,
    pub stdin_close_requested: bool,
    pub read_buf: Vec<u8>,
    /// Output is held (not read) until this deadline or the first attach.
    pub hold_until: Option<Instant>,
    /// Reading stopped for a slow client; resume when it catches up.
    output_was_paused: bool,
    /// Output left in a pipe when its drain budget ran out (stdout, stderr).
    output_more: [bool; 2],
    /// The exit record could not be written (a full disk): when to try
    /// again, and the wait after that. The exit is known and answered
    /// meanwhile (`state`, `wait`, attach); only the file is missing.
    pub record_retry: Option<(Instant, Duration)>,
    /// Something ran since the last quiet second: give memory back at the next.
    pub trim_pending: bool,
    /// Processes started by `exec` (see `exec`).
    pub execs: crate::exec::Execs,
    /// OOM kills in the container's cgroup (see `oom`).
    pub oom: crate::oom::Oom,
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
                init_pid: shim.init_pid,
                control: shim.paths.shim_sock(),
                attach: shim.paths.attach_sock(),
                state: Some(shim.state()),
            };
            match serde_json::to_string(&ready_report) {
                Ok(line) => report(format!("ok {line}\n")),
                Err(e) => report(format!("error encoding the readiness report: {e}\n")),
            }
            drop(ready);
            log::info!(
                "container {} created, init pid {}",
                shim.cfg.id,
                shim.init_pid
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

/// A stream's place in per-stream arrays (stdout, stderr).
fn output_slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The next pending connection on a listener; `None` when there is none
/// (or accept failed, which is logged).
pub fn accept_one(listener: &UnixListener, what: &str) -> Option<mio::net::UnixStream> {
    match listener.accept() {
        Ok((stream, _)) => Some(stream),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            log::warn!("accept {what}: {e}");
            None
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
        let control_listener = bind(&paths, SHIM_SOCK)?;
        let attach_listener = bind(&paths, ATTACH_SOCK)?;
        let mut reaper = Reaper::default();
        let created = crate::mountns::enter(&cfg)
            .and_then(|()| create_container(&cfg, &paths, &runc, &mut reaper));
        let (stdio, pty, init_pid) = match created {
            Ok(v) => v,
            Err(msg) => {
                let _ = fs::remove_file(paths.shim_sock());
                let _ = fs::remove_file(paths.attach_sock());
                let _ = fs::remove_file(paths.shim_pid());
                return Err(msg);
            }
        };
        let log = LogWriter::open(&paths.log(), cfg.log).map_err(|e| e.to_string())?;
        let mut shim = Shim {
            cfg,
            paths,
            runc,
            poll,
            signals,
            reaper,
            control_listener,
            attach_listener,
            stdio,
            pty,
            log,
            phase: Phase::Created,
            init_pid,
            started_at: None,
            controls: HashMap::new(),
            attaches: HashMap::new(),
            waiters: Vec::new(),
            rereads: Default::default(),
            control_rereads: Default::default(),
            next_token: FIRST_CLIENT,
            stdin_buf: Vec::new(),
            stdin_close_requested: false,
            read_buf: vec![0u8; READ_CHUNK],
            hold_until: None,
            output_was_paused: false,
            output_more: [false; 2],
            record_retry: None,
            trim_pending: true,
            execs: Default::default(),
            oom: Default::default(),
        };
        if shim.cfg.start {
            shim.phase = Phase::Running;
            shim.started_at = Some(runtime_core::time::now_rfc3339());
        }
        if shim.cfg.wait_attach {
            shim.hold_until = Some(Instant::now() + HOLD_LIMIT);
        }
        shim.register_sources()
            .map_err(|e| format!("register: {e}"))?;
        let runc_state = shim.runc.root.join(&shim.cfg.id).join("state.json");
        shim.oom
            .watch(shim.poll.registry(), OOM, shim.init_pid, &runc_state);
        // The init may already have died (reaped while runc create ran).
        shim.on_sigchld();
        Ok(shim)
    }

    fn register_sources(&mut self) -> io::Result<()> {
        let reg = self.poll.registry();
        reg.register(
            &mut self.control_listener,
            CONTROL_LISTENER,
            Interest::READABLE,
        )?;
        reg.register(
            &mut self.attach_listener,
            ATTACH_LISTENER,
            Interest::READABLE,
        )?;
        if let Some(r) = self.stdio.stdout.as_mut() {
            reg.register(r, STDOUT, Interest::READABLE)?;
        }
        if let Some(r) = self.stdio.stderr.as_mut() {
            reg.register(r, STDERR, Interest::READABLE)?;
        }
        if let Some(w) = self.stdio.input.as_mut() {
            reg.register(w, STDIN, Interest::WRITABLE)?;
        }
        Ok(())
    }

    /// Checks a new client (peer credentials, client limit) and registers
    /// it with the poll; on refusal, the stream and the reason.
    pub fn admit(
        &mut self,
        mut stream: mio::net::UnixStream,
        connected: usize,
        limit: usize,
    ) -> Result<(Token, mio::net::UnixStream), (mio::net::UnixStream, String)> {
        if let Err(why) = runtime_core::peercred::check(&stream) {
            return Err((stream, format!("refused: {why}")));
        }
        if connected >= limit {
            return Err((
                stream,
                format!("refused: {limit} clients already connected"),
            ));
        }
        let token = self.token();
        match self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Ok(()) => Ok((token, stream)),
            Err(e) => Err((stream, format!("refused: register: {e}"))),
        }
    }

    /// A fresh token for a client connection.
    pub fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// The event loop; returns after `delete`.
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(128);
        loop {
            if let Phase::Lingering { until, .. } = self.phase {
                // Deleted: let attach clients take the output still queued
                // for them (and the exit frame), for a bounded time.
                if !self.attach_output_pending() || Instant::now() >= until {
                    break;
                }
            }
            let now = Instant::now();
            let timeout = if self.rereads_ready()
                || self.output_more.contains(&true)
                || !self.control_rereads.tokens.is_empty()
                || self.exec_output_more()
            {
                Some(Duration::ZERO)
            } else {
                let (exit, linger_until) = match &self.phase {
                    Phase::Draining { deadline, .. } => (Some(*deadline), None),
                    Phase::Lingering { until, .. } => (None, Some(*until)),
                    _ => (None, None),
                };
                let retry = self.record_retry.map(|(at, _)| at);
                [
                    exit,
                    self.hold_until,
                    self.stall_deadline(),
                    linger_until,
                    retry,
                    self.housekeeping_deadline(),
                    self.exec_deadline(),
                    self.oom.recheck_at(),
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now))
            };
            // Nothing else to wait for: wait a quiet second, then trim.
            let trim_wait = timeout.is_none() && self.trim_pending;
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
                    CONTROL_LISTENER => self.accept_controls(),
                    ATTACH_LISTENER => self.accept_attaches(),
                    STDOUT => self.drain_output(Stream::Stdout),
                    STDERR => self.drain_output(Stream::Stderr),
                    STDIN => self.flush_stdin(),
                    OOM if self.oom.wake() => self.answer_oom_waiters(),
                    token if self.execs.sources.contains_key(&token) => self.on_exec_source(token),
                    token if self.controls.contains_key(&token) => self.on_control(token),
                    token if self.attaches.contains_key(&token) => {
                        self.on_attach(token, event.is_readable(), event.is_writable())
                    }
                    _ => {}
                }
            }
            if self.rereads_ready() {
                self.resume_stdin_readers();
            }
            self.resume_control_readers();
            // Edge-triggered: a pipe left readable will not be reported again.
            for stream in [Stream::Stdout, Stream::Stderr] {
                if std::mem::take(&mut self.output_more[output_slot(stream)]) {
                    self.drain_output(stream);
                }
            }
            self.cut_stalled(false);
            if self.output_was_paused && !self.output_paused_for(None) {
                self.output_was_paused = false;
                // Resume output that a slow client held back (edge-triggered:
                // nothing else would tell us there is data waiting).
                self.drain_output(Stream::Stdout);
                self.drain_output(Stream::Stderr);
            }
            if self.hold_until.is_some_and(|d| Instant::now() >= d) {
                log::warn!("no client attached within {HOLD_LIMIT:?}; logging output anyway");
                self.release_output();
            }
            if self.oom.recheck_if_due() {
                self.answer_oom_waiters();
            }
            self.exec_housekeeping();
            self.maybe_finish_exit();
            self.retry_exit_record();
            self.maybe_retire();
            self.housekeeping();
        }
        Ok(())
    }

    /// Some attach client left input unread that its process now has
    /// room for.
    fn rereads_ready(&self) -> bool {
        self.rereads.tokens.iter().any(|t| !self.stdin_full_for(*t))
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

    /// Reaps; when the init is among the dead, starts draining its output.
    fn on_sigchld(&mut self) {
        self.reaper.reap_available();
        // Execs first: what is left after the init is an orphan's status.
        self.reap_execs();
        if self.phase.reaped() {
            self.reaper.forget_others(-1);
            return;
        }
        if let Some(status) = self.reaper.take(self.init_pid) {
            if let Some(mut record) = ExitRecord::from_wait(self.init_pid, status) {
                self.oom.settle(&mut record);
                record.started_at = self.started_at.clone();
                log::info!("init {} exited: {}", self.init_pid, record.exit_code);
                self.phase = Phase::Draining {
                    exit: record,
                    deadline: Instant::now() + DRAIN_LIMIT,
                };
                // Nothing will read input any more.
                self.close_stdin();
                // Pick up what is already in the pipes before checking for EOF.
                self.drain_output(Stream::Stdout);
                self.drain_output(Stream::Stderr);
            }
        }
        self.reaper.forget_others(self.init_pid);
    }

    /// Starts reading output held for the first attach client.
    pub fn release_output(&mut self) {
        if self.hold_until.take().is_none() {
            return;
        }
        if let Phase::Draining { deadline, .. } = &mut self.phase {
            // The drain limit counts from when we start to drain.
            *deadline = Instant::now() + DRAIN_LIMIT;
        }
        self.drain_output(Stream::Stdout);
        self.drain_output(Stream::Stderr);
    }

    /// Reads a pipe until WouldBlock (or its budget for this turn), logging
    /// and broadcasting each chunk.
    pub fn drain_output(&mut self, stream: Stream) {
        if self.hold_until.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let began = Instant::now();
        for reads in 0u32.. {
            if reads > 0 && began.elapsed() >= DRAIN_TURN {
                self.output_more[output_slot(stream)] = true;
                break;
            }
            if self.output_paused_for(None) {
                self.output_was_paused = true;
                break;
            }
            let source = match stream {
                Stream::Stdout => self.stdio.stdout.as_mut(),
                Stream::Stderr => self.stdio.stderr.as_mut(),
            };
            let Some(pipe) = source else { break };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.close_output(stream);
                    break;
                }
                Ok(n) => {
                    if let Err(e) = self.log.write(stream, &buf[..n]) {
                        log::error!("{e}");
                    }
                    self.broadcast(None, stream, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO on a pty master: the last slave end closed.
                Err(_) => {
                    self.close_output(stream);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    fn close_output(&mut self, stream: Stream) {
        let slot = match stream {
            Stream::Stdout => &mut self.stdio.stdout,
            Stream::Stderr => &mut self.stdio.stderr,
        };
        if let Some(mut pipe) = slot.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
    }

    /// Writes buffered input to the container until WouldBlock.
    pub fn flush_stdin(&mut self) {
        let mut written = 0;
        if let Some(w) = self.stdio.input.as_mut() {
            while written < self.stdin_buf.len() {
                match w.write(&self.stdin_buf[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The container closed its stdin: drop what it will never read.
                        written = self.stdin_buf.len();
                        break;
                    }
                }
            }
        }
        self.stdin_buf.drain(..written);
        if self.stdin_buf.is_empty() && self.stdin_close_requested {
            self.close_stdin();
        }
    }

    /// Closes the container's stdin (EOF for it); a pty keeps its master.
    pub fn close_stdin(&mut self) {
        if self.cfg.tty {
            return;
        }
        if let Some(mut w) = self.stdio.input.take() {
            let _ = self.poll.registry().deregister(&mut w);
        }
        self.stdin_buf.clear();
    }

    /// Finishes an exit once output hit EOF or the drain deadline passed:
    /// exit record first, then everyone who waits.
    fn maybe_finish_exit(&mut self) {
        let Phase::Draining { deadline, .. } = &self.phase else {
            return;
        };
        let drained = self.stdio.stdout.is_none() && self.stdio.stderr.is_none();
        if !drained && Instant::now() < *deadline {
            return;
        }
        if !drained {
            log::warn!("output still open {DRAIN_LIMIT:?} after init exit (escaped process?); reporting exit");
            self.cut_stalled(true);
            self.drain_output(Stream::Stdout);
            self.drain_output(Stream::Stderr);
        }
        let record = match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Draining { exit, .. } => exit,
            other => {
                self.phase = other;
                return;
            }
        };
        if let Err(e) = atomic::write_json(&self.paths.exit(), &record) {
            // Most likely a full disk. Waiting for space would leave
            // everyone without the exit; the code is known, so it is
            // answered from memory now and the file is written as soon
            // as the disk lets us (`retry_exit_record`).
            log::error!(
                "writing exit record: {e}; answering from memory and retrying every {RECORD_RETRY_FIRST:?} to {RECORD_RETRY_MAX:?}"
            );
            self.record_retry = Some((Instant::now() + RECORD_RETRY_FIRST, RECORD_RETRY_FIRST));
        }
        self.phase = Phase::Exited(record.clone());
        self.answer_waiters();
        self.announce_exit_to(None, &record);
    }
}

impl Shim {
    /// Tries again to write an exit record that the disk refused.
    fn retry_exit_record(&mut self) {
        let Some((at, wait)) = self.record_retry else {
            return;
        };
        if Instant::now() < at || matches!(self.phase, Phase::Lingering { .. }) {
            return;
        }
        let Some(record) = self.phase.exit() else {
            self.record_retry = None;
            return;
        };
        match atomic::write_json(&self.paths.exit(), record) {
            Ok(()) => {
                log::info!("exit record written after an earlier failure");
                self.record_retry = None;
            }
            Err(e) => {
                let wait = (wait * 2).min(RECORD_RETRY_MAX);
                log::debug!("writing exit record: {e}; next try in {wait:?}");
                self.record_retry = Some((Instant::now() + wait, wait));
            }
        }
    }
}
