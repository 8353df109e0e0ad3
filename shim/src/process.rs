//! One process the shim owns: the container's init or an exec'd process.
//! Both are the same type with the same rules: their own stdio, output
//! pump, stdin buffer, `Phase`, exit record (on disk) and held output.
//!
//! Nothing here knows the event loop or the attach clients: output goes
//! to an `OutputSink` the loop hands in (the log and the attach hub for
//! the init, the attach hub alone for an exec), and the loop routes the
//! poll tokens of each process's pipes to it.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::logfmt::Stream;
use runtime_core::protocol::ExecState;

use crate::phase::Phase;
use crate::stdio::ShimStdio;

/// The table key of the container's init. Exec IDs are 1 to 64 of
/// `[0-9A-Za-z_-]`, so none is empty.
pub const INIT: &str = "";

/// How long output is drained after a process exits, in case an escaped
/// child keeps its pipes open.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long output is held for the first attach client.
pub const HOLD_LIMIT: Duration = Duration::from_secs(5);
/// Time spent reading one output pipe per turn of the event loop. A
/// process that writes without pause keeps its pipe readable forever;
/// past this the loop serves its other sources (control, attach, signals)
/// and comes back. Time, not bytes: a chunk of short lines costs twenty
/// times its size in log records.
pub const DRAIN_TURN: Duration = Duration::from_millis(5);
/// Pipe capacity asked for: fewer wake-ups, and room for output held
/// while the first client attaches.
pub const PIPE_SIZE: i32 = 1 << 20;
/// Bound on input buffered while a process is not reading.
pub const STDIN_BUFFER_LIMIT: usize = 1 << 20;
/// First and longest wait between tries to write an exit record that the
/// disk refused (ENOSPC, EIO): soon after space returns, and cheap
/// while it does not.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// Where a process's output goes.
pub trait OutputSink {
    /// Some reader of this process is too far behind: leave the output in
    /// the pipe until it catches up (or is cut off).
    fn paused(&self) -> bool;
    /// One chunk read from the process.
    fn output(&mut self, stream: Stream, data: &[u8]);
}

/// One of a process's pipes as a source in the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Output(Stream),
    Input,
}

/// Where a process's drain stands (see `Process::drain_state`).
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Not reaped, or its output is held, or still within the deadline.
    Pending,
    /// Reaped and its output at EOF: the exit can be recorded.
    Done,
    /// Reaped and the deadline passed with output still open (a child
    /// that escaped holds the pipe).
    TimedOut,
}

/// A process's exit record on disk: the init's is the container's `exit`
/// (an `ExitRecord`); an exec's is its `ExecState` (ID, command, PID and
/// the same `ExitRecord`), so berthd can list it with no shim to ask.
#[derive(Debug, Clone)]
pub enum Record {
    Init(PathBuf),
    Exec { id: String, path: PathBuf },
}

/// A process and everything the shim holds for it.
pub struct Process {
    pub pid: i32,
    /// Its command line (shown for execs).
    pub args: Vec<String>,
    pub tty: bool,
    stdio: ShimStdio,
    /// The pty master, kept for resizes.
    pty: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_close_requested: bool,
    pub phase: Phase,
    /// Output is held (not read) until this deadline or the first client.
    hold_until: Option<Instant>,
    /// Output left in a pipe when its turn ran out (stdout, stderr).
    output_more: [bool; 2],
    /// Reading stopped for a slow client; resume when it catches up.
    output_was_paused: bool,
    /// Where its exit record is written, and as what.
    record: Record,
    /// The exit record could not be written (a full disk): when to try
    /// again, and the wait after that. The exit is known and answered
    /// meanwhile; only the file is missing.
    record_retry: Option<(Instant, Duration)>,
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Process {
    /// A process whose stdio the shim holds; `hold` keeps its output in
    /// the pipes until the first client attaches (at most `HOLD_LIMIT`).
    pub fn new(
        pid: i32,
        args: Vec<String>,
        stdio: ShimStdio,
        pty: Option<OwnedFd>,
        phase: Phase,
        hold: bool,
        record: Record,
    ) -> Self {
        Process {
            pid,
            args,
            tty: pty.is_some(),
            stdio,
            pty,
            stdin_buf: Vec::new(),
            stdin_close_requested: false,
            phase,
            hold_until: hold.then(|| Instant::now() + HOLD_LIMIT),
            output_more: [false; 2],
            output_was_paused: false,
            record,
            record_retry: None,
        }
    }

    /// Registers its pipes with the loop under fresh tokens.
    pub fn register(
        &mut self,
        registry: &Registry,
        mut token: impl FnMut() -> Token,
    ) -> Vec<(Token, Source)> {
        let mut out = Vec::new();
        let mut add = |r: io::Result<()>, t: Token, s: Source| match r {
            Ok(()) => out.push((t, s)),
            Err(e) => log::error!("register {s:?}: {e}"),
        };
        if let Some(r) = self.stdio.stdout.as_mut() {
            let t = token();
            add(
                registry.register(r, t, Interest::READABLE),
                t,
                Source::Output(Stream::Stdout),
            );
        }
        if let Some(r) = self.stdio.stderr.as_mut() {
            let t = token();
            add(
                registry.register(r, t, Interest::READABLE),
                t,
                Source::Output(Stream::Stderr),
            );
        }
        if let Some(w) = self.stdio.input.as_mut() {
            let t = token();
            add(
                registry.register(w, t, Interest::WRITABLE),
                t,
                Source::Input,
            );
        }
        out
    }

    pub fn exit(&self) -> Option<&ExitRecord> {
        self.phase.exit()
    }

    pub fn stdin_open(&self) -> bool {
        self.stdio.input.is_some()
    }

    pub fn pty(&self) -> Option<&OwnedFd> {
        self.pty.as_ref()
    }

    /// Its output is held for a first client that has not come yet.
    pub fn held(&self) -> bool {
        self.hold_until.is_some()
    }

    /// The state `state` reports for an exec.
    pub fn state(&self, id: &str) -> ExecState {
        ExecState {
            id: id.to_string(),
            args: self.args.clone(),
            pid: self.pid,
            running: self.exit().is_none(),
            exit: self.exit().cloned(),
        }
    }

    /// Reads a pipe until WouldBlock, EOF, its turn's time, or a reader
    /// falling behind; each chunk goes to the sink.
    pub fn pump(
        &mut self,
        stream: Stream,
        buf: &mut [u8],
        registry: &Registry,
        sink: &mut dyn OutputSink,
    ) {
        if self.hold_until.is_some() {
            return;
        }
        let began = Instant::now();
        for reads in 0u32.. {
            if reads > 0 && began.elapsed() >= DRAIN_TURN {
                self.output_more[slot(stream)] = true;
                return;
            }
            if sink.paused() {
                self.output_was_paused = true;
                return;
            }
            let source = match stream {
                Stream::Stdout => self.stdio.stdout.as_mut(),
                Stream::Stderr => self.stdio.stderr.as_mut(),
            };
            let Some(pipe) = source else { return };
            match pipe.read(buf) {
                Ok(0) => return self.close_output(stream, registry),
                Ok(n) => sink.output(stream, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO on a pty master: the last slave end closed.
                Err(_) => return self.close_output(stream, registry),
            }
        }
    }

    fn pump_both(&mut self, buf: &mut [u8], registry: &Registry, sink: &mut dyn OutputSink) {
        self.pump(Stream::Stdout, buf, registry, sink);
        self.pump(Stream::Stderr, buf, registry, sink);
    }

    pub fn close_output(&mut self, stream: Stream, registry: &Registry) {
        let pipe = match stream {
            Stream::Stdout => &mut self.stdio.stdout,
            Stream::Stderr => &mut self.stdio.stderr,
        };
        if let Some(mut pipe) = pipe.take() {
            let _ = registry.deregister(&mut pipe);
        }
    }

    /// Its input buffer is at the bound: stop reading from its clients.
    pub fn stdin_full(&self) -> bool {
        self.stdin_buf.len() >= STDIN_BUFFER_LIMIT
    }

    /// Input from a client; dropped when its stdin is closed.
    pub fn push_stdin(&mut self, data: &[u8]) {
        if self.stdio.input.is_some() {
            self.stdin_buf.extend_from_slice(data);
        }
    }

    /// A client's EOF: stdin closes once the buffer is written.
    pub fn stdin_eof(&mut self, registry: &Registry) {
        self.stdin_close_requested = true;
        self.flush_stdin(registry);
    }

    /// Writes buffered input until WouldBlock.
    pub fn flush_stdin(&mut self, registry: &Registry) {
        let mut written = 0;
        if let Some(w) = self.stdio.input.as_mut() {
            while written < self.stdin_buf.len() {
                match w.write(&self.stdin_buf[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // It closed its stdin: drop what it will never read.
                        written = self.stdin_buf.len();
                        break;
                    }
                }
            }
        }
        self.stdin_buf.drain(..written);
        if self.stdin_buf.is_empty() && self.stdin_close_requested {
            self.close_stdin(registry);
        }
    }

    /// Closes its stdin (EOF for it). A running process's pty has no EOF
    /// of its own: its master stays.
    pub fn close_stdin(&mut self, registry: &Registry) {
        if self.tty && !self.phase.reaped() {
            return;
        }
        if let Some(mut w) = self.stdio.input.take() {
            let _ = registry.deregister(&mut w);
        }
        self.stdin_buf = Vec::new();
    }

    /// Reaped: its output is read to EOF (or the deadline), then its exit
    /// is recorded (`finish`).
    pub fn reaped(
        &mut self,
        record: ExitRecord,
        buf: &mut [u8],
        registry: &Registry,
        sink: &mut dyn OutputSink,
    ) {
        self.phase = Phase::Draining {
            exit: record,
            deadline: Instant::now() + DRAIN_LIMIT,
        };
        // Nothing will read input any more.
        self.close_stdin(registry);
        // Pick up what is already in the pipes before checking for EOF.
        self.pump_both(buf, registry, sink);
    }

    /// A client attached (or nobody came in time): held output flows.
    pub fn release(&mut self, buf: &mut [u8], registry: &Registry, sink: &mut dyn OutputSink) {
        if self.hold_until.take().is_none() {
            return;
        }
        if let Phase::Draining { deadline, .. } = &mut self.phase {
            // The drain limit counts from when we start to drain.
            *deadline = Instant::now() + DRAIN_LIMIT;
        }
        self.pump_both(buf, registry, sink);
    }

    /// Once per turn of the loop: lets go of output held too long,
    /// continues drains cut short, and resumes output a slow client held
    /// back (edge-triggered: nothing else would say data waits).
    pub fn turn(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        registry: &Registry,
        sink: &mut dyn OutputSink,
    ) {
        if self.hold_until.is_some_and(|d| now >= d) {
            log::warn!(
                "process {}: no client attached within {HOLD_LIMIT:?}; its output flows on without one",
                self.pid
            );
            self.release(buf, registry, sink);
        }
        let more = std::mem::take(&mut self.output_more);
        for stream in [Stream::Stdout, Stream::Stderr] {
            if more[slot(stream)] {
                self.pump(stream, buf, registry, sink);
            }
        }
        if self.output_was_paused && !sink.paused() {
            self.output_was_paused = false;
            self.pump_both(buf, registry, sink);
        }
    }

    /// Some pipe was left readable when its turn ran out.
    pub fn more(&self) -> bool {
        self.output_more.contains(&true)
    }

    /// Whether its exit can be recorded.
    pub fn drain_state(&self, now: Instant) -> Drain {
        let Phase::Draining { deadline, .. } = &self.phase else {
            return Drain::Pending;
        };
        if self.hold_until.is_some() {
            return Drain::Pending;
        }
        if self.stdio.stdout.is_none() && self.stdio.stderr.is_none() {
            Drain::Done
        } else if now >= *deadline {
            Drain::TimedOut
        } else {
            Drain::Pending
        }
    }

    /// A last read of what is in the pipes after the drain timed out;
    /// with `close`, the pipes are let go (nobody is left to read them).
    pub fn last_read(
        &mut self,
        close: bool,
        buf: &mut [u8],
        registry: &Registry,
        sink: &mut dyn OutputSink,
    ) {
        self.pump_both(buf, registry, sink);
        if close {
            self.close_output(Stream::Stdout, registry);
            self.close_output(Stream::Stderr, registry);
        }
    }

    /// Draining -> Exited: the exit record is written (or retried while
    /// the disk refuses) and returned for announcing.
    pub fn finish(&mut self, registry: &Registry) -> Option<ExitRecord> {
        let exit = match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Draining { exit, .. } => exit,
            other => {
                self.phase = other;
                return None;
            }
        };
        self.phase = Phase::Exited(exit.clone());
        self.close_stdin(registry);
        if self.stdio.stdout.is_none() {
            // Nothing will be resized or read any more.
            self.pty = None;
        }
        if let Err(e) = self.write_record(&exit) {
            // Most likely a full disk. Waiting for space would leave
            // everyone without the exit; the code is known, so it is
            // answered from memory now and the file is written as soon
            // as the disk lets us (`retry_record`).
            log::error!(
                "writing exit record: {e}; answering from memory and retrying every {RECORD_RETRY_FIRST:?} to {RECORD_RETRY_MAX:?}"
            );
            self.record_retry = Some((Instant::now() + RECORD_RETRY_FIRST, RECORD_RETRY_FIRST));
        }
        Some(exit)
    }

    fn write_record(&self, exit: &ExitRecord) -> runtime_core::Result<()> {
        match &self.record {
            Record::Init(path) => atomic::write_json(path, exit),
            Record::Exec { id, path } => {
                let mut state = self.state(id);
                state.running = false;
                state.exit = Some(exit.clone());
                atomic::write_json(path, &state)
            }
        }
    }

    /// Its exit record is on disk (or it has none yet).
    pub fn recorded(&self) -> bool {
        self.record_retry.is_none()
    }

    /// Tries again to write an exit record the disk refused.
    pub fn retry_record(&mut self, now: Instant) {
        let Some((at, wait)) = self.record_retry else {
            return;
        };
        if now < at {
            return;
        }
        let Some(exit) = self.phase.exit().cloned() else {
            self.record_retry = None;
            return;
        };
        match self.write_record(&exit) {
            Ok(()) => {
                log::info!(
                    "exit record of pid {} written after an earlier failure",
                    self.pid
                );
                self.record_retry = None;
            }
            Err(e) => {
                let wait = (wait * 2).min(RECORD_RETRY_MAX);
                log::debug!("writing exit record: {e}; next try in {wait:?}");
                self.record_retry = Some((now + wait, wait));
            }
        }
    }

    /// The earliest moment this process needs the loop: its hold, its
    /// drain deadline, a record to retry.
    pub fn deadline(&self) -> Option<Instant> {
        let drain = match &self.phase {
            Phase::Draining { deadline, .. } if self.hold_until.is_none() => Some(*deadline),
            _ => None,
        };
        [drain, self.hold_until, self.record_retry.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stdio;
    use std::process::Command;

    /// Collects what a process wrote; `pause` plays a reader that fell behind.
    #[derive(Default)]
    struct Collect {
        out: Vec<u8>,
        pause: bool,
    }

    impl OutputSink for Collect {
        fn paused(&self) -> bool {
            self.pause
        }
        fn output(&mut self, _: Stream, data: &[u8]) {
            self.out.extend_from_slice(data);
        }
    }

    fn record(pid: i32) -> ExitRecord {
        serde_json::from_value(serde_json::json!({
            "pid": pid, "exit_code": 0, "signal": null, "finished_at": "t"
        }))
        .expect("an exit record")
    }

    /// Ends the background child a test started, also when it fails.
    struct KillOnDrop(Option<i32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Pumps until `sink` holds `want` or a second passed.
    fn pump_until(p: &mut Process, reg: &Registry, sink: &mut Collect, want: &[u8]) {
        let mut buf = vec![0u8; 4096];
        let until = Instant::now() + Duration::from_secs(5);
        while sink.out != want && Instant::now() < until {
            p.pump(Stream::Stdout, &mut buf, reg, sink);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_background_child_holding_the_pipe_bounds_the_drain_not_blocks_it() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let (shim_end, child_end) = stdio::pipes(false, 64 * 1024).unwrap();
        let pidfile = dir.path().join("bg.pid");
        // The process exits at once; the child it leaves holds stdout.
        let mut sh = Command::new("/bin/sh")
            .args([
                "-c",
                "echo first; sleep 30 & echo $! > \"$0\"",
                pidfile.to_str().unwrap(),
            ])
            .stdin(child_end.stdin)
            .stdout(child_end.stdout)
            .stderr(child_end.stderr)
            .spawn()
            .unwrap();
        let status = sh.wait().unwrap();
        assert!(status.success());
        let bg = KillOnDrop(
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        );
        assert!(bg.0.is_some(), "the background child's pid");
        let record_path = dir.path().join("exec-x.exit");
        let on_exit = Record::Exec {
            id: "x".to_string(),
            path: record_path.clone(),
        };
        let mut p = Process::new(
            1,
            vec!["sh".into()],
            shim_end,
            None,
            Phase::Running,
            false,
            on_exit,
        );
        let mut sink = Collect::default();
        let mut buf = vec![0u8; 4096];
        p.reaped(record(1), &mut buf, poll.registry(), &mut sink);
        pump_until(&mut p, poll.registry(), &mut sink, b"first\n");
        assert_eq!(sink.out, b"first\n");
        let now = Instant::now();
        // The pipe is open (the background child): the drain waits, but
        // only up to its bound.
        assert_eq!(p.drain_state(now), Drain::Pending);
        assert!(p.deadline().is_some_and(|d| d <= now + DRAIN_LIMIT));
        assert_eq!(p.drain_state(now + DRAIN_LIMIT), Drain::TimedOut);
        p.last_read(true, &mut buf, poll.registry(), &mut sink);
        assert_eq!(p.drain_state(now + DRAIN_LIMIT), Drain::Done);
        let exit = p.finish(poll.registry()).expect("the exit");
        assert!(p.recorded());
        let on_disk: ExecState = atomic::read_json(&record_path).unwrap();
        assert_eq!((on_disk.id.as_str(), on_disk.running), ("x", false));
        assert_eq!(on_disk.args, ["sh"]);
        assert_eq!(on_disk.exit.as_ref(), Some(&exit));
        assert!(p.state("x").exit.is_some() && !p.state("x").running);
    }

    #[test]
    fn stdin_eof_reaches_the_process_after_its_buffered_input() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let (shim_end, child_end) = stdio::pipes(true, 64 * 1024).unwrap();
        let mut cat = Command::new("cat")
            .stdin(child_end.stdin)
            .stdout(child_end.stdout)
            .stderr(child_end.stderr)
            .spawn()
            .unwrap();
        let mut p = Process::new(
            1,
            vec![],
            shim_end,
            None,
            Phase::Running,
            false,
            Record::Init(dir.path().join("e")),
        );
        assert!(p.stdin_open());
        p.push_stdin(b"hello ");
        p.push_stdin(b"world");
        p.stdin_eof(poll.registry());
        assert!(!p.stdin_open(), "closed once the buffer was written");
        // cat saw EOF: it wrote everything and exited.
        assert!(cat.wait().unwrap().success());
        let mut sink = Collect::default();
        pump_until(&mut p, poll.registry(), &mut sink, b"hello world");
        assert_eq!(sink.out, b"hello world");
        // Input after EOF goes nowhere.
        p.push_stdin(b"late");
        assert!(!p.stdin_full());
    }

    #[test]
    fn a_reader_behind_leaves_output_in_the_pipe_until_it_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let (shim_end, child_end) = stdio::pipes(false, 64 * 1024).unwrap();
        let mut sh = Command::new("/bin/sh")
            .args(["-c", "echo one"])
            .stdin(child_end.stdin)
            .stdout(child_end.stdout)
            .stderr(child_end.stderr)
            .spawn()
            .unwrap();
        assert!(sh.wait().unwrap().success());
        let mut p = Process::new(
            1,
            vec![],
            shim_end,
            None,
            Phase::Running,
            false,
            Record::Init(dir.path().join("e")),
        );
        let mut sink = Collect {
            pause: true,
            ..Collect::default()
        };
        let mut buf = vec![0u8; 4096];
        p.pump(Stream::Stdout, &mut buf, poll.registry(), &mut sink);
        assert!(
            sink.out.is_empty(),
            "nothing read while the reader is behind"
        );
        sink.pause = false;
        // Edge-triggered: no new event comes; the turn resumes the pump.
        p.turn(Instant::now(), &mut buf, poll.registry(), &mut sink);
        assert_eq!(sink.out, b"one\n");
    }

    #[test]
    fn held_output_waits_for_the_first_client_then_flows() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let (shim_end, child_end) = stdio::pipes(false, 64 * 1024).unwrap();
        let mut sh = Command::new("/bin/sh")
            .args(["-c", "echo held"])
            .stdin(child_end.stdin)
            .stdout(child_end.stdout)
            .stderr(child_end.stderr)
            .spawn()
            .unwrap();
        assert!(sh.wait().unwrap().success());
        let mut p = Process::new(
            1,
            vec![],
            shim_end,
            None,
            Phase::Running,
            true,
            Record::Init(dir.path().join("e")),
        );
        let mut sink = Collect::default();
        let mut buf = vec![0u8; 4096];
        p.reaped(record(1), &mut buf, poll.registry(), &mut sink);
        assert!(sink.out.is_empty());
        // Held: the exit is not recorded before a client had the output.
        assert_eq!(p.drain_state(Instant::now() + DRAIN_LIMIT), Drain::Pending);
        p.release(&mut buf, poll.registry(), &mut sink);
        pump_until(&mut p, poll.registry(), &mut sink, b"held\n");
        assert_eq!(sink.out, b"held\n");
        p.pump(Stream::Stdout, &mut buf, poll.registry(), &mut sink);
        p.pump(Stream::Stderr, &mut buf, poll.registry(), &mut sink);
        assert_eq!(p.drain_state(Instant::now()), Drain::Done);
    }
}
