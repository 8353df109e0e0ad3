//! The shim's control socket: berthd asks for state, start, kill, wait,
//! pause, resume and delete. One JSON request per frame, answered in
//! order; `wait` is a long poll answered when the container has exited.
//!
//! Every client is bounded: what is read from it per turn of the loop,
//! its pending `wait`s, its unsent replies, how long it may take to send
//! its first request and how long it may sit idle. When all slots are
//! taken a new client evicts the least recently active one (idle ones
//! first), so berthd can always get in.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mio::Token;
use serde_json::{json, Value};

use runtime_core::frame::{self, Frame};
use runtime_core::protocol::{
    shim_methods as m, ErrorCode, ExecParams, Hello, KillParams, Request, Response, RpcError,
    ShimState, WaitParams, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};

use crate::conn::{Conn, ReadOutcome};
use crate::phase::Phase;
use crate::server::{accept_one, Shim, LINGER_LIMIT};

/// Unsent replies a control client may accumulate before it is dropped.
const CONTROL_QUEUE_LIMIT: usize = 1 << 20;
/// Control clients at once; berthd needs one or two.
pub const MAX_CONTROL_CLIENTS: usize = 64;
/// `wait` long polls one connection may hold; each costs a reply slot.
pub const MAX_WAITS_PER_CLIENT: usize = 8;
/// Bytes read from one client per turn of the event loop: a client that
/// pours requests in is served a slice at a time, its replies bounded by
/// the queue limit, and the others get their turn.
const CONTROL_READ_BUDGET: usize = 64 * 1024;
/// How long a new client may take to send its first request.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);
/// A client with no pending `wait` and nothing to send is closed after
/// this long without a request (berthd connects per call).
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One control connection.
pub struct ControlClient {
    conn: Conn,
    /// When it connected, or sent its last request.
    last_active: Instant,
    /// It has sent a request (berthd's first is `hello`).
    greeted: bool,
    /// Its pending `wait` requests.
    waits: usize,
}

impl ControlClient {
    /// When this client is closed unless it does something, if ever.
    fn deadline(&self) -> Option<Instant> {
        if !self.greeted {
            Some(self.last_active + HANDSHAKE_LIMIT)
        } else if self.waits == 0 && self.conn.queued() == 0 {
            Some(self.last_active + IDLE_LIMIT)
        } else {
            None
        }
    }
}

/// Control clients whose input was left unread (read budget).
#[derive(Default)]
pub struct ControlRereads {
    pub tokens: HashSet<Token>,
}

impl Shim {
    pub fn accept_controls(&mut self) {
        while let Some(stream) = accept_one(&self.control_listener, "control") {
            if self.controls.len() >= MAX_CONTROL_CLIENTS {
                self.evict_control();
            }
            match self.admit(stream, self.controls.len(), MAX_CONTROL_CLIENTS) {
                Ok((token, stream)) => {
                    let client = ControlClient {
                        conn: Conn::new(stream),
                        last_active: Instant::now(),
                        greeted: false,
                        waits: 0,
                    };
                    self.controls.insert(token, client);
                }
                Err((_, why)) => log::warn!("control client {why}"),
            }
        }
    }

    /// Makes room for one more client: closes the least recently active
    /// one, preferring those that hold no `wait`.
    fn evict_control(&mut self) {
        let victim = self
            .controls
            .iter()
            .min_by_key(|(_, c)| (c.waits > 0, c.last_active))
            .map(|(t, _)| *t);
        if let Some(token) = victim {
            log::warn!("{MAX_CONTROL_CLIENTS} control clients connected: closing the least recently active one");
            self.drop_control(token);
        }
    }

    /// The next moment a control or attach client times out.
    pub fn housekeeping_deadline(&self) -> Option<Instant> {
        let controls = self.controls.values().filter_map(ControlClient::deadline);
        controls.chain(self.attach_deadlines()).min()
    }

    /// Closes clients that never spoke or sat idle past their limits.
    pub fn housekeeping(&mut self) {
        let now = Instant::now();
        let expired: Vec<Token> = self
            .controls
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| now >= d))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            log::debug!("control client {token:?} timed out");
            self.drop_control(token);
        }
        self.expire_attaches(now);
    }

    /// Reads again from clients whose input was left for the next turn.
    pub fn resume_control_readers(&mut self) {
        let tokens: Vec<Token> = self.control_rereads.tokens.drain().collect();
        for token in tokens {
            self.on_control(token);
        }
    }

    pub fn on_control(&mut self, token: Token) {
        let mut frames = Vec::new();
        let outcome = match self.controls.get_mut(&token) {
            Some(c) => {
                // Replies pile up unread past the bound: the client is dropped.
                if c.conn.flush().is_err() || c.conn.queued() > CONTROL_QUEUE_LIMIT {
                    return self.drop_control(token);
                }
                c.conn.read_frames_bounded(&mut frames, CONTROL_READ_BUDGET)
            }
            None => return,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // Oversized or broken framing: say so, then hang up.
                self.reply(
                    token,
                    Response::err(0, RpcError::new(ErrorCode::InvalidArgument, e.to_string())),
                );
                self.drop_control(token);
                return;
            }
        };
        if let Some(c) = self.controls.get_mut(&token) {
            if !frames.is_empty() {
                c.last_active = Instant::now();
                c.greeted = true;
            }
        }
        for f in frames {
            self.handle_frame(token, f);
        }
        // A client that sends requests but never reads the replies is dropped
        // once they pile up past the bound.
        let failed = self
            .controls
            .get_mut(&token)
            .is_some_and(|c| c.conn.flush().is_err() || c.conn.queued() > CONTROL_QUEUE_LIMIT);
        if failed || matches!(outcome, ReadOutcome::Closed) {
            self.drop_control(token);
        } else if matches!(outcome, ReadOutcome::More) {
            self.control_rereads.tokens.insert(token);
        }
    }

    fn drop_control(&mut self, token: Token) {
        if let Some(mut c) = self.controls.remove(&token) {
            let _ = c.conn.flush();
            let _ = self.poll.registry().deregister(&mut c.conn.stream);
        }
        self.waiters.retain(|(t, _, _)| *t != token);
        self.control_rereads.tokens.remove(&token);
    }

    fn reply(&mut self, token: Token, resp: Response) {
        if let Some(c) = self.controls.get_mut(&token) {
            match serde_json::to_vec(&resp) {
                Ok(bytes) => c.conn.queue_always(frame::TAG_JSON, &bytes),
                Err(e) => log::error!("encode reply: {e}"),
            }
            let _ = c.conn.flush();
        }
    }

    fn handle_frame(&mut self, token: Token, f: Frame) {
        let req: Request = match frame::decode_json(&f) {
            Ok(r) => r,
            Err(e) => {
                let err = RpcError::new(ErrorCode::InvalidArgument, e.to_string());
                return self.reply(token, Response::err(0, err));
            }
        };
        let id = req.id;
        let oom_known = match req.method == m::WAIT {
            true => serde_json::from_value::<Option<WaitParams>>(req.params.clone())
                .ok()
                .flatten()
                .and_then(|p| p.oom_kills),
            false => None,
        };
        let oom_passed = oom_known.is_some_and(|k| self.oom.seen().0 > k);
        if req.method == m::WAIT && self.phase.exit().is_none() && !oom_passed {
            let Some(c) = self.controls.get_mut(&token) else {
                return;
            };
            if c.waits >= MAX_WAITS_PER_CLIENT {
                let err = RpcError::new(
                    ErrorCode::Conflict,
                    format!("at most {MAX_WAITS_PER_CLIENT} pending waits per connection"),
                );
                return self.reply(token, Response::err(id, err));
            }
            c.waits += 1;
            self.waiters.push((token, id, oom_known));
            return;
        }
        let resp = match self.dispatch(&req) {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(id, e),
        };
        self.reply(token, resp);
    }

    fn dispatch(&mut self, req: &Request) -> Result<Value, RpcError> {
        let bad = |e: serde_json::Error| {
            RpcError::new(ErrorCode::InvalidArgument, format!("{}: {e}", req.method))
        };
        match req.method.as_str() {
            m::HELLO => {
                let hello: Hello = serde_json::from_value(req.params.clone()).map_err(bad)?;
                hello.check_compatible()?;
                Ok(
                    json!({ "major": PROTOCOL_MAJOR, "minor": PROTOCOL_MINOR, "agent": format!("berth-shim {}", env!("CARGO_PKG_VERSION")) }),
                )
            }
            m::STATE => Ok(serde_json::to_value(self.state()).unwrap_or(Value::Null)),
            m::START => self.start().map(|()| Value::Null),
            m::KILL => {
                let p: KillParams = serde_json::from_value(req.params.clone()).map_err(bad)?;
                self.signal(p.signal).map(|()| Value::Null)
            }
            m::WAIT => Ok(serde_json::to_value(self.phase.exit()).unwrap_or(Value::Null)),
            m::DELETE => self.delete().map(|()| Value::Null),
            m::PAUSE => self.pause().map(|()| Value::Null),
            m::RESUME => self.resume().map(|()| Value::Null),
            m::EXEC => {
                let p: ExecParams = serde_json::from_value(req.params.clone()).map_err(bad)?;
                let started = self.exec(p)?;
                Ok(serde_json::to_value(started).unwrap_or(Value::Null))
            }
            other => Err(RpcError::new(
                ErrorCode::UnknownMethod,
                format!("unknown method {other:?}"),
            )),
        }
    }

    /// The state berthd reconciles against.
    pub fn state(&self) -> ShimState {
        ShimState {
            id: self.cfg.id.clone(),
            status: self.phase.status(),
            pid: self.init_pid,
            started_at: self.started_at.clone(),
            exit: self.phase.exit().cloned(),
            shim_pid: std::process::id() as i32,
            execs: self.exec_states(),
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

    /// Reaped (or never runnable again): no signal or start applies.
    pub fn stopped(&self) -> bool {
        self.phase.reaped()
    }

    fn start(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase, Phase::Created) {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("container {} is not in the created state", self.cfg.id),
            ));
        }
        self.runtime_call(self.runc.start(&self.cfg.id), "start")?;
        self.phase = Phase::Running;
        self.started_at = Some(runtime_core::time::now_rfc3339());
        Ok(())
    }

    /// Signals the init directly: we are its reaper, so its PID cannot be
    /// reused before we have collected it. A created (not started) container
    /// goes through runc, which knows how to stop `runc init`.
    fn signal(&mut self, signal: i32) -> Result<(), RpcError> {
        // Real-time signals (SIGRTMIN..SIGRTMAX) too: nix's `Signal` has
        // only the classic 31, so the range is checked here.
        if !(1..=libc::SIGRTMAX()).contains(&signal) {
            return Err(RpcError::new(
                ErrorCode::InvalidArgument,
                format!("invalid signal {signal}"),
            ));
        }
        if self.stopped() {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("container {} is not running", self.cfg.id),
            ));
        }
        if matches!(self.phase, Phase::Created) {
            return self.runtime_call(self.runc.kill(&self.cfg.id, signal), "kill");
        }
        send_signal(self.init_pid, signal).map_err(|e| {
            RpcError::new(ErrorCode::Internal, format!("kill {}: {e}", self.init_pid))
        })?;
        if matches!(self.phase, Phase::Paused) && signal == libc::SIGKILL {
            // A cgroup v1 freezer holds even SIGKILL until the thaw: thaw,
            // so kill (and stop's final SIGKILL) work on a paused
            // container. Other signals wait for `resume`, as in Docker.
            self.runtime_call(self.runc.resume(&self.cfg.id), "resume")?;
            self.phase = Phase::Running;
        }
        Ok(())
    }

    /// Freezes the container (`runc pause`).
    fn pause(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase, Phase::Running) {
            let why = match self.phase {
                Phase::Paused => "is already paused",
                _ => "is not running",
            };
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("container {} {why}", self.cfg.id),
            ));
        }
        self.runtime_call(self.runc.pause(&self.cfg.id), "pause")?;
        self.phase = Phase::Paused;
        Ok(())
    }

    /// Thaws a paused container (`runc resume`).
    fn resume(&mut self) -> Result<(), RpcError> {
        if !matches!(self.phase, Phase::Paused) {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("container {} is not paused", self.cfg.id),
            ));
        }
        self.runtime_call(self.runc.resume(&self.cfg.id), "resume")?;
        self.phase = Phase::Running;
        Ok(())
    }

    /// Removes the runtime's state and stops the shim. Only a stopped or
    /// never-started container can be deleted; berthd kills first for -f.
    fn delete(&mut self) -> Result<(), RpcError> {
        let force = match self.phase {
            // Lingering: it exited and the shim is on its way out (see
            // `retire`), or a delete came first; runc's state may remain.
            Phase::Exited(_) | Phase::Lingering { .. } => false,
            Phase::Created => true,
            _ => {
                return Err(RpcError::new(
                    ErrorCode::Conflict,
                    format!("container {} is running: stop it first", self.cfg.id),
                ))
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
        self.remove_endpoints();
        self.phase = Phase::Lingering {
            exit: self.phase.exit().cloned(),
            until: std::time::Instant::now() + LINGER_LIMIT,
        };
        Ok(())
    }

    /// Some control client has not yet taken a reply queued for it.
    pub fn control_output_pending(&self) -> bool {
        self.controls.values().any(|c| c.conn.queued() > 0)
    }

    /// Answers every pending `wait` with the exit record.
    pub fn answer_waiters(&mut self) {
        let exit = serde_json::to_value(self.phase.exit()).unwrap_or(Value::Null);
        for c in self.controls.values_mut() {
            c.waits = 0;
        }
        for (token, id, _) in std::mem::take(&mut self.waiters) {
            self.reply(token, Response::ok(id, exit.clone()));
        }
    }

    /// New OOM kills while the container runs: answers (with no exit
    /// record) the `wait`s that asked to hear of them.
    pub fn answer_oom_waiters(&mut self) {
        let kills = self.oom.seen().0;
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(_, _, known)| known.is_some_and(|k| kills > k));
        self.waiters = keep;
        for (token, id, _) in due {
            if let Some(c) = self.controls.get_mut(&token) {
                c.waits = c.waits.saturating_sub(1);
            }
            self.reply(token, Response::ok(id, Value::Null));
        }
    }
}

/// kill(2) with any signal number, real-time ones included.
fn send_signal(pid: i32, signal: i32) -> nix::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, signal) };
    nix::errno::Errno::result(r).map(drop)
}
