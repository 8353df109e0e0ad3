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

//!
//! The hub owns its listener and clients and nothing else: what clients
//! ask of a process (a handshake, input, EOF, a resize) comes back to the
//! event loop as `AttachEvent`s, and the loop hands output in. A client
//! is attached to one process: the init (`process::INIT`) or an exec.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use runtime_core::attach::{self as proto, AttachReply, AttachRequest};
use runtime_core::exit::ExitRecord;
use runtime_core::frame::{self, Frame};
use runtime_core::logfmt::Stream;
use runtime_core::protocol::PROTOCOL_MAJOR;

use crate::conn::{accept_one, admit, Conn, ReadOutcome, Tokens};
use crate::process::{INIT, STDIN_BUFFER_LIMIT};

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
struct AttachClient {
    conn: Conn,
    request: Option<AttachRequest>,
    /// Exit sent or cut off: nothing more is queued; close once the
    /// queue is flushed.
    closing: bool,
    /// The delay it may still cause by falling behind.
    stall: StallBudget,
    /// When it connected (for the handshake limit).
    accepted: Instant,
    /// The process it attached to (its table key), once it said which.
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

    fn attached_to(&self, target: &str) -> bool {
        self.target.as_deref() == Some(target)
    }
}

/// What a client asks of the process it is attached to; the event loop
/// applies it.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachEvent {
    /// A valid handshake for `target`: the loop answers with
    /// `AttachHub::welcome` (or `refuse`) and releases held output.
    Handshake {
        token: Token,
        target: String,
    },
    Stdin {
        target: String,
        data: Vec<u8>,
    },
    /// The client's EOF: close the process's stdin once its buffer is written.
    StdinEof {
        target: String,
    },
    Resize {
        target: String,
        rows: u16,
        cols: u16,
    },
}

/// The attach socket and its clients.
pub struct AttachHub {
    listener: UnixListener,
    registry: Registry,
    clients: HashMap<Token, AttachClient>,
    /// Clients whose reads stopped early (input budget, or their process's
    /// input buffer full) and must be revisited.
    rereads: HashSet<Token>,
}

impl AttachHub {
    pub fn new(listener: UnixListener, registry: Registry) -> Self {
        AttachHub {
            listener,
            registry,
            clients: HashMap::new(),
            rereads: HashSet::new(),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        self.clients.contains_key(&token)
    }

    pub fn accept(&mut self, tokens: &mut Tokens) {
        while let Some(stream) = accept_one(&self.listener, "attach") {
            if self.clients.len() >= MAX_ATTACH_CLIENTS {
                self.evict_silent();
            }
            let token = tokens.next();
            // Writable events drive output to clients slower than it.
            match admit(
                &self.registry,
                stream,
                (token, Interest::READABLE | Interest::WRITABLE),
                self.clients.len(),
                MAX_ATTACH_CLIENTS,
            ) {
                Ok(stream) => self.add(token, stream),
                Err((stream, why)) => {
                    log::warn!("attach client {why}");
                    let mut c = Conn::new(stream);
                    c.queue_always(proto::TAG_ERROR, why.as_bytes());
                    let _ = c.flush();
                }
            }
        }
    }

    /// Serves a registered connection from now on.
    fn add(&mut self, token: Token, stream: UnixStream) {
        let now = Instant::now();
        let client = AttachClient {
            conn: Conn::new(stream),
            request: None,
            closing: false,
            stall: StallBudget::new(now),
            accepted: now,
            target: None,
        };
        self.clients.insert(token, client);
    }

    /// Makes room by closing the oldest client that never handshook, if any.
    fn evict_silent(&mut self) {
        let victim = self
            .clients
            .iter()
            .filter(|(_, c)| c.request.is_none())
            .min_by_key(|(_, c)| c.accepted)
            .map(|(t, _)| *t);
        if let Some(token) = victim {
            log::warn!("{MAX_ATTACH_CLIENTS} attach clients connected: closing the oldest that never sent a handshake");
            self.remove(token);
        }
    }

    /// The next moment a client must be looked at: a handshake that is
    /// due, or a stall that spends the client's budget.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|c| {
                if c.request.is_none() && !c.closing {
                    Some(c.accepted + HANDSHAKE_LIMIT)
                } else {
                    c.stall.deadline()
                }
            })
            .min()
    }

    /// Closes clients that did not handshake in time.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<Token> = self
            .clients
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

    /// An event on a client's connection. `full(target)` says whether
    /// that process's input buffer is at its bound: such a client's input
    /// is left unread (backpressure) until `resume_readers`.
    pub fn on_event(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        full: &dyn Fn(&str) -> bool,
        events: &mut Vec<AttachEvent>,
    ) {
        if readable {
            self.read(token, full, events);
        }
        if writable {
            self.flush(token);
        }
    }

    fn input_blocked(&self, token: Token, full: &dyn Fn(&str) -> bool) -> bool {
        self.clients
            .get(&token)
            .and_then(|c| c.target.as_deref())
            .is_some_and(full)
    }

    fn read(&mut self, token: Token, full: &dyn Fn(&str) -> bool, events: &mut Vec<AttachEvent>) {
        if self.input_blocked(token, full) {
            self.rereads.insert(token);
            return;
        }
        let mut frames = Vec::new();
        let outcome = match self.clients.get_mut(&token) {
            Some(c) if !c.closing => c.conn.read_frames_bounded(&mut frames, STDIN_BUFFER_LIMIT),
            _ => return,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return self.cut_off(token, &format!("berth: bad attach frame: {e}")),
        };
        for f in frames {
            if !self.clients.contains_key(&token) {
                return;
            }
            self.frame(token, f, events);
        }
        match outcome {
            ReadOutcome::Closed => self.remove(token),
            ReadOutcome::More => {
                self.rereads.insert(token);
            }
            ReadOutcome::Open => {}
        }
    }

    fn frame(&mut self, token: Token, f: Frame, events: &mut Vec<AttachEvent>) {
        let Some(client) = self.clients.get_mut(&token) else {
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
            let target = req.exec_id.clone().unwrap_or_else(|| INIT.to_string());
            client.request = Some(req);
            client.target = Some(target.clone());
            events.push(AttachEvent::Handshake { token, target });
            return;
        }
        let Some(target) = client.target.clone() else {
            return;
        };
        match f.tag {
            proto::TAG_STDIN if client.wants_stdin() => events.push(if f.payload.is_empty() {
                AttachEvent::StdinEof { target }
            } else {
                AttachEvent::Stdin {
                    target,
                    data: f.payload,
                }
            }),
            proto::TAG_STDIN => {}
            proto::TAG_RESIZE => {
                if let Some((rows, cols)) = proto::decode_resize(&f.payload) {
                    events.push(AttachEvent::Resize { target, rows, cols });
                }
            }
            proto::TAG_DETACH => self.remove(token),
            other => self.cut_off(
                token,
                &format!("berth: unexpected attach frame tag {other}"),
            ),
        }
    }

    /// Answers a handshake the loop accepted: the reply, then the exit at
    /// once for a process that has one.
    pub fn welcome(&mut self, token: Token, reply: &AttachReply, exit: Option<&ExitRecord>) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if let Ok(bytes) = serde_json::to_vec(reply) {
            client.conn.queue_always(frame::TAG_JSON, &bytes);
        }
        if let Some(exit) = exit {
            self.send_exit(token, exit);
        }
        self.flush(token);
    }

    /// Refuses a handshake (no such process): the reason, then close.
    pub fn refuse(&mut self, token: Token, why: &str) {
        self.cut_off(token, why);
    }

    /// Sends output to every client of `target` that asked for this stream.
    pub fn broadcast(&mut self, target: &str, stream: Stream, data: &[u8]) {
        let tag = match stream {
            Stream::Stdout => proto::TAG_STDOUT,
            Stream::Stderr => proto::TAG_STDERR,
        };
        let mut gone = Vec::new();
        for (token, client) in self.clients.iter_mut() {
            if client.closing || !client.wants(stream) || !client.attached_to(target) {
                continue;
            }
            // Never drop what was read: a full queue goes over its limit by
            // at most one read, and output is paused (`paused_for`).
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
            self.remove(token);
        }
    }

    /// True while some client still has output queued.
    pub fn output_pending(&self) -> bool {
        self.clients.values().any(|c| c.conn.queued() > 0)
    }

    /// True while some client of `target` is over its queue limit: that
    /// process's output is left in the pipe until it catches up or is cut off.
    pub fn paused_for(&self, target: &str) -> bool {
        self.clients
            .values()
            .any(|c| c.stall.stalled() && c.attached_to(target))
    }

    /// Cuts off clients whose stall outlasted their budget.
    pub fn cut_stalled(&mut self, now: Instant) {
        self.cut_stalled_where(|c| c.stall.deadline().is_some_and(|d| now >= d));
    }

    /// Cuts off every client that holds `target`'s output back.
    pub fn cut_stalled_for(&mut self, target: &str) {
        self.cut_stalled_where(|c| c.stall.stalled() && c.attached_to(target));
    }

    fn cut_stalled_where(&mut self, pick: impl Fn(&AttachClient) -> bool) {
        let stalled: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| pick(c))
            .map(|(t, _)| *t)
            .collect();
        for token in stalled {
            let msg = format!(
                "berth: this client fell {CLIENT_QUEUE_LIMIT} bytes behind the container's output too long or too often (it may hold the output back {STALL_BUDGET_MAX:?} at a time, {STALL_REFILL_PER_SEC:?} per second attached) and was cut off; `berth logs` has everything"
            );
            log::warn!("attach client cut off: too slow");
            self.cut_off(token, &msg);
        }
    }

    /// Queues the exit frame for every client of `target`, after all
    /// their output.
    pub fn announce_exit(&mut self, target: &str, exit: &ExitRecord) {
        let tokens: Vec<Token> = self
            .clients
            .iter()
            // A client that was cut off got its error frame as the last
            // word; an exit after it would contradict it.
            .filter(|(_, c)| c.request.is_some() && !c.closing && c.attached_to(target))
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.send_exit(token, exit);
            self.flush(token);
        }
    }

    fn send_exit(&mut self, token: Token, exit: &ExitRecord) {
        let payload = serde_json::to_vec(exit).unwrap_or_default();
        if let Some(c) = self.clients.get_mut(&token) {
            c.conn.queue_always(proto::TAG_EXIT, &payload);
            c.closing = true;
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        let failed = c.conn.flush().is_err();
        if c.stall.stalled() && c.conn.queued() <= CLIENT_QUEUE_LIMIT {
            // Caught up: the event loop resumes reading the process.
            c.stall.caught_up(Instant::now());
        }
        if failed || (c.closing && c.conn.queued() == 0) {
            self.remove(token);
        }
    }

    /// Stops serving a client: drops its unsent output, queues the reason,
    /// and closes it once that is delivered (or the client goes away).
    /// Such a client holds only the reason and the frame it was in the
    /// middle of receiving.
    fn cut_off(&mut self, token: Token, why: &str) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.conn.discard_unsent_frames();
            c.conn.queue_always(proto::TAG_ERROR, why.as_bytes());
            c.closing = true;
            c.stall.caught_up(Instant::now());
        }
        self.flush(token);
    }

    fn remove(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            log::debug!(
                "attach client {token:?} closed with {} bytes unsent",
                c.conn.queued()
            );
            let _ = self.registry.deregister(&mut c.conn.stream);
        }
        self.rereads.remove(&token);
        if self.clients.is_empty() {
            // The shim idles for the container's whole life: give back
            // what a crowd of clients made the tables grow to.
            self.clients = HashMap::new();
            self.rereads = HashSet::new();
        }
    }

    /// Some client left input unread that its process now has room for.
    pub fn rereads_ready(&self, full: &dyn Fn(&str) -> bool) -> bool {
        self.rereads.iter().any(|t| !self.input_blocked(*t, full))
    }

    /// Reads again from clients whose input was held back.
    pub fn resume_readers(&mut self, full: &dyn Fn(&str) -> bool, events: &mut Vec<AttachEvent>) {
        let tokens: Vec<Token> = self.rereads.drain().collect();
        for token in tokens {
            self.read(token, full, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::frame::{read_frame, write_frame};
    use std::io::Read;
    use std::os::unix::net::UnixStream as StdStream;

    /// A hub with one connected client; the test holds the client's end.
    fn hub_with_client() -> (mio::Poll, AttachHub, Token, StdStream) {
        let poll = mio::Poll::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let mut hub = AttachHub::new(listener, poll.registry().try_clone().unwrap());
        let (ours, theirs) = StdStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut tokens = Tokens::starting_at(100);
        let token = tokens.next();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let stream = admit(
            poll.registry(),
            UnixStream::from_std(ours),
            (token, interest),
            0,
            1,
        )
        .map_err(|(_, why)| why)
        .unwrap();
        hub.add(token, stream);
        (poll, hub, token, theirs)
    }

    fn handshake(peer: &mut StdStream, stdin: bool, exec: Option<&str>) {
        let req = AttachRequest {
            major: PROTOCOL_MAJOR,
            minor: 0,
            stdin,
            stdout: true,
            stderr: true,
            exec_id: exec.map(str::to_string),
        };
        write_frame(peer, frame::TAG_JSON, &serde_json::to_vec(&req).unwrap()).unwrap();
    }

    /// Reads what the client was sent, until the hub closed it (or the
    /// socket has nothing more within a moment).
    fn received(peer: &mut StdStream) -> Vec<Frame> {
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut frames = Vec::new();
        while let Ok(Some(f)) = read_frame(peer) {
            frames.push(f);
        }
        frames
    }

    fn no_room(_: &str) -> bool {
        false
    }

    #[test]
    fn handshake_input_eof_and_resize_come_back_as_events_for_the_target() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, true, Some("e1"));
        write_frame(&mut peer, proto::TAG_STDIN, b"abc").unwrap();
        write_frame(&mut peer, proto::TAG_RESIZE, &proto::encode_resize(24, 80)).unwrap();
        write_frame(&mut peer, proto::TAG_STDIN, b"").unwrap();
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        let t = || "e1".to_string();
        assert_eq!(
            events,
            vec![
                AttachEvent::Handshake { token, target: t() },
                AttachEvent::Stdin {
                    target: t(),
                    data: b"abc".to_vec()
                },
                AttachEvent::Resize {
                    target: t(),
                    rows: 24,
                    cols: 80
                },
                AttachEvent::StdinEof { target: t() },
            ]
        );
    }

    #[test]
    fn input_from_a_client_that_did_not_ask_for_stdin_is_ignored() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, false, None);
        write_frame(&mut peer, proto::TAG_STDIN, b"abc").unwrap();
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        assert_eq!(
            events,
            vec![AttachEvent::Handshake {
                token,
                target: INIT.to_string()
            }]
        );
    }

    #[test]
    fn detach_ends_the_session_and_nothing_after_it_reaches_the_process() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, true, None);
        write_frame(&mut peer, proto::TAG_STDIN, b"before").unwrap();
        write_frame(&mut peer, proto::TAG_DETACH, b"").unwrap();
        write_frame(&mut peer, proto::TAG_STDIN, b"after").unwrap();
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[1],
            AttachEvent::Stdin {
                target: INIT.to_string(),
                data: b"before".to_vec()
            }
        );
        assert!(!hub.owns(token), "the client is gone");
        // The process keeps running: no EOF, no exit went to anyone.
        hub.broadcast(INIT, Stream::Stdout, b"still running");
        let mut rest = Vec::new();
        assert_eq!(
            peer.read_to_end(&mut rest).unwrap(),
            0,
            "closed, nothing sent"
        );
    }

    #[test]
    fn a_full_input_buffer_leaves_the_client_unread_until_there_is_room() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, true, None);
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        events.clear();
        write_frame(&mut peer, proto::TAG_STDIN, b"data").unwrap();
        let full = |_: &str| true;
        hub.on_event(token, true, false, &full, &mut events);
        assert!(events.is_empty(), "not read while the buffer is full");
        assert!(!hub.rereads_ready(&full));
        assert!(hub.rereads_ready(&no_room));
        hub.resume_readers(&no_room, &mut events);
        assert_eq!(
            events,
            vec![AttachEvent::Stdin {
                target: INIT.to_string(),
                data: b"data".to_vec()
            }]
        );
    }

    #[test]
    fn a_slow_client_holds_its_process_back_then_is_cut_off_with_a_reason_and_no_exit() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, false, Some("e1"));
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        let reply = AttachReply {
            error: None,
            tty: false,
            stdin_open: false,
            exited: false,
        };
        hub.welcome(token, &reply, None);
        // The client reads nothing: past its queue limit it stalls e1's
        // output, not the init's.
        let chunk = vec![b'x'; 64 * 1024];
        while !hub.paused_for("e1") {
            hub.broadcast("e1", Stream::Stdout, &chunk);
        }
        assert!(!hub.paused_for(INIT));
        let deadline = hub.deadline().expect("the stall has a deadline");
        hub.cut_stalled(deadline - Duration::from_millis(1));
        assert!(hub.paused_for("e1"), "within its budget it is waited for");
        hub.cut_stalled(deadline);
        assert!(!hub.paused_for("e1"), "cut off: the process goes on");
        let exit: ExitRecord = serde_json::from_value(serde_json::json!({
            "pid": 7, "exit_code": 0, "signal": null, "finished_at": "t"
        }))
        .unwrap();
        hub.announce_exit("e1", &exit);
        // The client reads now: the hub sends what is left as the socket
        // takes it (writable events), then closes it.
        let reader = std::thread::spawn(move || {
            let mut tags = Vec::new();
            while let Ok(Some(f)) = read_frame(&mut peer) {
                tags.push(f.tag);
            }
            tags
        });
        let until = Instant::now() + Duration::from_secs(10);
        while hub.owns(token) && Instant::now() < until {
            hub.on_event(token, false, true, &no_room, &mut events);
            std::thread::sleep(Duration::from_millis(1));
        }
        let tags = reader.join().unwrap();
        assert_eq!(tags.first(), Some(&frame::TAG_JSON), "the reply first");
        assert_eq!(
            tags.last(),
            Some(&proto::TAG_ERROR),
            "the reason last: {:?}",
            &tags[tags.len().saturating_sub(3)..]
        );
        assert!(!tags.contains(&proto::TAG_EXIT), "no exit after the cut");
    }

    #[test]
    fn a_client_that_goes_away_is_dropped_and_holds_nothing_back() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, false, None);
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        drop(peer);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..4 {
            hub.broadcast(INIT, Stream::Stdout, &chunk);
        }
        assert!(!hub.owns(token));
        assert!(!hub.paused_for(INIT));
        assert!(!hub.output_pending());
    }

    #[test]
    fn a_client_of_another_process_gets_none_of_this_ones_output() {
        let (_poll, mut hub, token, mut peer) = hub_with_client();
        handshake(&mut peer, false, Some("e2"));
        let mut events = Vec::new();
        hub.on_event(token, true, false, &no_room, &mut events);
        let reply = AttachReply {
            error: None,
            tty: false,
            stdin_open: false,
            exited: false,
        };
        hub.welcome(token, &reply, None);
        hub.broadcast(INIT, Stream::Stdout, b"init's");
        hub.broadcast("e2", Stream::Stderr, b"e2's");
        let exit: ExitRecord = serde_json::from_value(serde_json::json!({
            "pid": 7, "exit_code": 4, "signal": null, "finished_at": "t"
        }))
        .unwrap();
        hub.announce_exit("e2", &exit);
        let frames = received(&mut peer);
        let got: Vec<(u8, Vec<u8>)> = frames
            .into_iter()
            .skip(1)
            .map(|f| (f.tag, f.payload))
            .collect();
        assert_eq!(got[0], (proto::TAG_STDERR, b"e2's".to_vec()));
        assert_eq!(got[1].0, proto::TAG_EXIT);
        assert_eq!(got.len(), 2, "{got:?}");
    }

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
