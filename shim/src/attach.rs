//! The shim's attach socket: clients connect straight to the shim, not
//! through berthd, so a session survives a berthd restart.
//!
//! Every client has a bounded output queue (`CLIENT_QUEUE_LIMIT`). While a
//! client is over it, the shim stops reading the container's output (so a
//! briefly slow reader loses nothing), which delays the container, the log
//! and the other clients. That delay is charged to the client against a
//! stall budget (`StallBudget`): at most `STALL_BUDGET_MAX` at once, refilled
//! at `STALL_REFILL_PER_SEC` per second attached. A client that spends it
//! is cut off, so the total delay one client can cause is bounded, whether
//! it stalls once for long or often for a little. Input from clients is
//! bounded too: past `STDIN_BUFFER_LIMIT` we stop reading from them until
//! the container has consumed what is buffered. A client that does not
//! send its handshake within `HANDSHAKE_LIMIT` is closed, and when all
//! slots are taken the oldest client that has not handshaken makes room.

use std::collections::HashSet;

use std::time::{Duration, Instant};

use mio::Token;

use runtime_core::attach::{self as proto, AttachReply, AttachRequest};
use runtime_core::exit::ExitRecord;
use runtime_core::frame::{self, Frame};
use runtime_core::logfmt::Stream;
use runtime_core::protocol::PROTOCOL_MAJOR;

use crate::conn::{Conn, ReadOutcome};
use crate::server::{accept_one, Shim, STDIN_BUFFER_LIMIT};
use crate::stdio;

/// Output queued for one client before the shim stops reading the
/// container's output to let it catch up.
pub const CLIENT_QUEUE_LIMIT: usize = 4 << 20;
/// The most stall time a client may have in hand: how long one stall may
/// last before the client is cut off.
pub const STALL_BUDGET_MAX: Duration = Duration::from_millis(500);
/// Stall time a client earns per second attached: the share of the
/// container's time a client that keeps falling behind may take.
pub const STALL_REFILL_PER_SEC: Duration = Duration::from_millis(50);
/// Attach clients at once.
pub const MAX_ATTACH_CLIENTS: usize = 128;
/// How long a new client may take to send its handshake.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// The delay one client may still cause: a token bucket of stall time.
#[derive(Debug, Clone, Copy)]
pub struct StallBudget {
    left: Duration,
    /// When `left` was last brought up to date.
    at: Instant,
    /// Since when the client has been holding the output back.
    since: Option<Instant>,
}

impl StallBudget {
    /// A full budget.
    pub fn new(now: Instant) -> Self {
        StallBudget {
            left: STALL_BUDGET_MAX,
            at: now,
            since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned =
            STALL_REFILL_PER_SEC.mul_f64(now.saturating_duration_since(self.at).as_secs_f64());
        self.left = (self.left + earned).min(STALL_BUDGET_MAX);
        self.at = now;
    }

    /// The client started holding the output back.
    pub fn stall(&mut self, now: Instant) {
        if self.since.is_none() {
            self.refill(now);
            self.since = Some(now);
        }
    }

    /// The client caught up: the stall is charged.
    pub fn caught_up(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.left = self
                .left
                .saturating_sub(now.saturating_duration_since(since));
            self.at = now;
        }
    }

    /// True while the client holds the output back.
    pub fn stalled(&self) -> bool {
        self.since.is_some()
    }

    /// When the current stall exhausts the budget.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + self.left)
    }
}

/// One attached client.
pub struct AttachClient {
    conn: Conn,
    request: Option<AttachRequest>,
    /// Exit sent or cut off: nothing more is queued; close once the
    /// queue is flushed.
    closing: bool,
    /// The delay it may still cause by falling behind.
    stall: StallBudget,
    /// When it connected (for the handshake limit).
    accepted: Instant,
    /// The exec it attached to; `None`: the container's init.
    target: Option<String>,
}

impl AttachClient {
    fn wants(&self, stream: Stream) -> bool {
        match (&self.request, stream) {
            (Some(r), Stream::Stdout) => r.stdout,
            (Some(r), Stream::Stderr) => r.stderr,
            (None, _) => false,
        }
    }
    fn wants_stdin(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.stdin)
    }
}

/// Clients whose reads stopped early (input budget) and must be revisited.
#[derive(Default)]
pub struct Rereads {
    pub tokens: HashSet<Token>,
}

impl Shim {
    pub fn accept_attaches(&mut self) {
        while let Some(stream) = accept_one(&self.attach_listener, "attach") {
            if self.attaches.len() >= MAX_ATTACH_CLIENTS {
                self.evict_silent_attach();
            }
            match self.admit(stream, self.attaches.len(), MAX_ATTACH_CLIENTS) {
                Ok((token, stream)) => {
                    let now = Instant::now();
                    let client = AttachClient {
                        conn: Conn::new(stream),
                        request: None,
                        closing: false,
                        stall: StallBudget::new(now),
                        accepted: now,
                        target: None,
                    };
                    self.attaches.insert(token, client);
                }
                Err((stream, why)) => {
                    log::warn!("attach client {why}");
                    let mut c = Conn::new(stream);
                    c.queue_always(proto::TAG_ERROR, why.as_bytes());
                    let _ = c.flush();
                }
            }
        }
    }

    /// Makes room by closing the oldest client that never handshook, if any.
    fn evict_silent_attach(&mut self) {
        let victim = self
            .attaches
            .iter()
            .filter(|(_, c)| c.request.is_none())
            .min_by_key(|(_, c)| c.accepted)
            .map(|(t, _)| *t);
        if let Some(token) = victim {
            log::warn!("{MAX_ATTACH_CLIENTS} attach clients connected: closing the oldest that never sent a handshake");
            self.remove_attach(token);
        }
    }

    /// Handshake deadlines of clients that have not sent one yet.
    pub fn attach_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.attaches
            .values()
            .filter(|c| c.request.is_none() && !c.closing)
            .map(|c| c.accepted + HANDSHAKE_LIMIT)
    }

    /// Closes clients that did not handshake in time.
    pub fn expire_attaches(&mut self, now: Instant) {
        let late: Vec<Token> = self
            .attaches
            .iter()
            .filter(|(_, c)| {
                c.request.is_none() && !c.closing && now >= c.accepted + HANDSHAKE_LIMIT
            })
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            let msg = format!("berth: no attach handshake within {HANDSHAKE_LIMIT:?}");
            self.cut_off(token, &msg);
        }
    }

    pub fn on_attach(&mut self, token: Token, readable: bool, writable: bool) {
        if readable {
            self.read_attach(token);
        }
        if writable {
            self.flush_attach(token);
        }
    }

    /// The process this client feeds has a full input buffer.
    pub fn stdin_full_for(&self, token: Token) -> bool {
        let target = self.attaches.get(&token).and_then(|c| c.target.as_deref());
        let buffered = match target {
            None => self.stdin_buf.len(),
            Some(id) => self.execs.table.get(id).map_or(0, |e| e.stdin_buf.len()),
        };
        buffered >= STDIN_BUFFER_LIMIT
    }

    fn read_attach(&mut self, token: Token) {
        if self.stdin_full_for(token) {
            // Input backpressure: come back when the container has read.
            self.rereads.tokens.insert(token);
            return;
        }
        let mut frames = Vec::new();
        let outcome = match self.attaches.get_mut(&token) {
            Some(c) if !c.closing => c.conn.read_frames_bounded(&mut frames, STDIN_BUFFER_LIMIT),
            _ => return,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return self.cut_off(token, &format!("berth: bad attach frame: {e}")),
        };
        for f in frames {
            if !self.attaches.contains_key(&token) {
                return;
            }
            self.attach_frame(token, f);
        }
        match outcome {
            ReadOutcome::Closed => self.remove_attach(token),
            ReadOutcome::More => {
                self.rereads.tokens.insert(token);
            }
            ReadOutcome::Open => {}
        }
        match self.attaches.get(&token).and_then(|c| c.target.clone()) {
            Some(id) => self.flush_exec_stdin(&id),
            None => self.flush_stdin(),
        }
    }

    fn attach_frame(&mut self, token: Token, f: Frame) {
        let Some(client) = self.attaches.get_mut(&token) else {
            return;
        };
        if client.request.is_none() {
            let req: AttachRequest = match frame::decode_json(&f) {
                Ok(r) => r,
                Err(e) => return self.cut_off(token, &format!("berth: bad attach handshake: {e}")),
            };
            if req.major != PROTOCOL_MAJOR {
                let msg = format!(
                    "berth: attach protocol {} is not supported (shim speaks {PROTOCOL_MAJOR})",
                    req.major
                );
                return self.cut_off(token, &msg);
            }
            if let Some(id) = req.exec_id.clone() {
                return self.attach_exec(token, req, id);
            }
            let stdin_open = self.stdio.input.is_some();
            let reply = AttachReply {
                error: None,
                tty: self.cfg.tty,
                stdin_open,
                exited: self.phase.exit().is_some(),
            };
            client.request = Some(req);
            if let Ok(bytes) = serde_json::to_vec(&reply) {
                client.conn.queue_always(frame::TAG_JSON, &bytes);
            }
            if let Some(exit) = self.phase.exit().cloned() {
                self.send_exit(token, &exit);
            }
            self.flush_attach(token);
            // Output held for this client flows from now on.
            self.release_output();
            return;
        }
        let target = client.target.clone();
        match f.tag {
            proto::TAG_STDIN if client.wants_stdin() => match target {
                Some(id) => {
                    if let Some(e) = self.execs.table.get_mut(&id) {
                        if f.payload.is_empty() {
                            e.stdin_close_requested = true;
                        } else if e.stdio.input.is_some() {
                            e.stdin_buf.extend_from_slice(&f.payload);
                        }
                    }
                }
                None => {
                    if f.payload.is_empty() {
                        self.stdin_close_requested = true;
                    } else if self.stdio.input.is_some() {
                        self.stdin_buf.extend_from_slice(&f.payload);
                    }
                }
            },
            proto::TAG_STDIN => {}
            proto::TAG_RESIZE => {
                let pty = match &target {
                    Some(id) => self.execs.table.get(id).and_then(|e| e.pty.as_ref()),
                    None => self.pty.as_ref(),
                };
                if let (Some(pty), Some((rows, cols))) = (pty, proto::decode_resize(&f.payload)) {
                    if let Err(e) = stdio::resize(pty, rows, cols) {
                        log::warn!("resize: {e}");
                    }
                }
            }
            proto::TAG_DETACH => self.remove_attach(token),
            other => self.cut_off(
                token,
                &format!("berth: unexpected attach frame tag {other}"),
            ),
        }
    }

    /// Handshake of a client of an exec: the exec's own reply, its exit
    /// at once if it has one, and its held output released.
    fn attach_exec(&mut self, token: Token, req: AttachRequest, id: String) {
        let Some(e) = self.execs.table.get(&id) else {
            let msg = format!("berth: no exec {id} in this container (finished long ago?)");
            return self.cut_off(token, &msg);
        };
        let reply = AttachReply {
            error: None,
            tty: e.tty,
            stdin_open: e.stdio.input.is_some(),
            exited: e.exit().is_some(),
        };
        let exit = e.exit().cloned();
        let Some(client) = self.attaches.get_mut(&token) else {
            return;
        };
        client.request = Some(req);
        client.target = Some(id.clone());
        if let Ok(bytes) = serde_json::to_vec(&reply) {
            client.conn.queue_always(frame::TAG_JSON, &bytes);
        }
        if let Some(exit) = exit {
            self.send_exit(token, &exit);
        }
        self.flush_attach(token);
        self.release_exec(&id);
    }

    /// Sends output to every client of `target` (an exec ID, or `None`
    /// for the init) that asked for this stream.
    pub fn broadcast(&mut self, target: Option<&str>, stream: Stream, data: &[u8]) {
        let tag = match stream {
            Stream::Stdout => proto::TAG_STDOUT,
            Stream::Stderr => proto::TAG_STDERR,
        };
        let mut gone = Vec::new();
        for (token, client) in self.attaches.iter_mut() {
            if client.closing || !client.wants(stream) || client.target.as_deref() != target {
                continue;
            }
            // Never drop what was read: a full queue goes over its limit by
            // at most one read, and output is paused (`output_paused`).
            for chunk in data.chunks(proto::MAX_DATA_FRAME) {
                client.conn.queue_always(tag, chunk);
            }
            if client.conn.flush().is_err() {
                gone.push(*token);
            } else if client.conn.queued() > CLIENT_QUEUE_LIMIT {
                client.stall.stall(Instant::now());
            }
        }
        for token in gone {
            self.remove_attach(token);
        }
    }

    /// True while some client still has output queued.
    pub fn attach_output_pending(&self) -> bool {
        self.attaches.values().any(|c| c.conn.queued() > 0)
    }

    /// True while some client of `target` is over its queue limit: that
    /// process's output is left in the pipe until it catches up or is cut off.
    pub fn output_paused_for(&self, target: Option<&str>) -> bool {
        self.attaches
            .values()
            .any(|c| c.stall.stalled() && c.target.as_deref() == target)
    }

    /// The earliest moment a stalled client must be cut off.
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.attaches
            .values()
            .filter_map(|c| c.stall.deadline())
            .min()
    }

    /// Cuts off clients that held the output back too long (or all that
    /// hold the init's back, with `all`); true if any was cut.
    pub fn cut_stalled(&mut self, all: bool) -> bool {
        let now = Instant::now();
        self.cut_stalled_where(|c| {
            c.stall.stalled()
                && (all && c.target.is_none() || c.stall.deadline().is_some_and(|d| now >= d))
        })
    }

    /// Cuts off every client that holds `target`'s output back.
    pub fn cut_stalled_for(&mut self, target: Option<&str>) -> bool {
        self.cut_stalled_where(|c| c.stall.stalled() && c.target.as_deref() == target)
    }

    fn cut_stalled_where(&mut self, pick: impl Fn(&AttachClient) -> bool) -> bool {
        let stalled: Vec<Token> = self
            .attaches
            .iter()
            .filter(|(_, c)| pick(c))
            .map(|(t, _)| *t)
            .collect();
        for token in &stalled {
            let msg = format!(
                "berth: this client fell {CLIENT_QUEUE_LIMIT} bytes behind the container's output too long or too often (it may hold the output back {STALL_BUDGET_MAX:?} at a time, {STALL_REFILL_PER_SEC:?} per second attached) and was cut off; `berth logs` has everything"
            );
            log::warn!("attach client cut off: too slow");
            self.cut_off(*token, &msg);
        }
        !stalled.is_empty()
    }

    /// Queues the exit frame for every client of `target`, after all
    /// their output.
    pub fn announce_exit_to(&mut self, target: Option<&str>, exit: &ExitRecord) {
        let tokens: Vec<Token> = self.attaches.keys().copied().collect();
        for token in tokens {
            // A client that was cut off got its error frame as the last
            // word; an exit after it would contradict it.
            let handshaken = self.attaches.get(&token).is_some_and(|c| {
                c.request.is_some() && !c.closing && c.target.as_deref() == target
            });
            if handshaken {
                self.send_exit(token, exit);
                self.flush_attach(token);
            }
        }
    }

    fn send_exit(&mut self, token: Token, exit: &ExitRecord) {
        let payload = serde_json::to_vec(exit).unwrap_or_default();
        if let Some(c) = self.attaches.get_mut(&token) {
            c.conn.queue_always(proto::TAG_EXIT, &payload);
            c.closing = true;
        }
    }

    fn flush_attach(&mut self, token: Token) {
        let Some(c) = self.attaches.get_mut(&token) else {
            return;
        };
        let failed = c.conn.flush().is_err();
        if c.stall.stalled() && c.conn.queued() <= CLIENT_QUEUE_LIMIT {
            // Caught up: the event loop resumes reading the container.
            c.stall.caught_up(Instant::now());
        }
        if failed || (c.closing && c.conn.queued() == 0) {
            self.remove_attach(token);
        }
    }

    /// Stops serving a client: drops its unsent output, queues the reason,
    /// and closes it once that is delivered (or the client goes away).
    /// Such a client holds only the reason and the frame it was in the
    /// middle of receiving.
    fn cut_off(&mut self, token: Token, why: &str) {
        if let Some(c) = self.attaches.get_mut(&token) {
            c.conn.discard_unsent_frames();
            c.conn.queue_always(proto::TAG_ERROR, why.as_bytes());
            c.closing = true;
            c.stall.caught_up(Instant::now());
        }
        self.flush_attach(token);
    }

    fn remove_attach(&mut self, token: Token) {
        if let Some(mut c) = self.attaches.remove(&token) {
            log::debug!(
                "attach client {token:?} closed with {} bytes unsent",
                c.conn.queued()
            );
            let _ = self.poll.registry().deregister(&mut c.conn.stream);
        }
        self.rereads.tokens.remove(&token);
    }

    /// Reads again from clients whose input was held back.
    pub fn resume_stdin_readers(&mut self) {
        let tokens: Vec<Token> = self.rereads.tokens.drain().collect();
        for token in tokens {
            self.read_attach(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn one_long_stall_gets_the_whole_budget() {
        let t0 = Instant::now();
        let mut b = StallBudget::new(t0);
        b.stall(t0);
        assert_eq!(b.deadline(), Some(t0 + STALL_BUDGET_MAX));
    }

    #[test]
    fn many_short_stalls_add_up_to_a_cut() {
        // The client: falls behind for 300 ms, catches up for an
        // instant, again and again. No single stall reaches 500 ms.
        let t0 = Instant::now();
        let mut b = StallBudget::new(t0);
        let mut now = t0;
        let mut cut_at = None;
        for round in 0..10 {
            b.stall(now);
            let deadline = b.deadline().unwrap();
            if deadline <= now + MS(300) {
                cut_at = Some(round);
                break;
            }
            now += MS(300);
            b.caught_up(now);
            now += MS(1);
        }
        assert_eq!(cut_at, Some(1), "cut off in the second stall");
    }

    #[test]
    fn the_budget_refills_with_time_up_to_its_cap() {
        let t0 = Instant::now();
        let mut b = StallBudget::new(t0);
        b.stall(t0);
        b.caught_up(t0 + MS(400));
        // 100 ms left; two seconds later 100 ms more were earned.
        let later = t0 + MS(2400);
        b.stall(later);
        assert_eq!(
            b.deadline(),
            Some(later + MS(100) + STALL_REFILL_PER_SEC * 2)
        );
        b.caught_up(later);
        // A long quiet time never gives more than the cap.
        let much_later = later + Duration::from_secs(3600);
        b.stall(much_later);
        assert_eq!(b.deadline(), Some(much_later + STALL_BUDGET_MAX));
    }
}
