//! The shim's attach socket: clients connect straight to the shim, not
//! through berthd, so a session survives a berthd restart.
//!
//! Every client has a bounded output queue (`CLIENT_QUEUE_LIMIT`). A client
//! that stops reading is cut off when its queue is full; the container,
//! the log and the other clients never wait for it. Input from clients is
//! bounded too: past `STDIN_BUFFER_LIMIT` we stop reading from them until
//! the container has consumed what is buffered.

use std::collections::HashSet;

use std::time::{Duration, Instant};

use mio::Token;

use runtime_core::attach::{self as proto, AttachReply, AttachRequest};
use runtime_core::frame::{self, Frame};
use runtime_core::logfmt::Stream;
use runtime_core::protocol::PROTOCOL_MAJOR;

use crate::conn::{Conn, ReadOutcome};
use crate::server::{accept_one, Shim, STDIN_BUFFER_LIMIT};
use crate::stdio;

/// Output queued for one client before the shim stops reading the
/// container's output to let it catch up.
pub const CLIENT_QUEUE_LIMIT: usize = 4 << 20;
/// How long a client may hold the output back (queue over the limit)
/// before it is cut off: a slow client gets every byte, a stuck one
/// delays the container, the log and the others by at most this.
pub const STALL_LIMIT: Duration = Duration::from_millis(500);
/// Attach clients at once.
const MAX_ATTACH_CLIENTS: usize = 128;

/// One attached client.
pub struct AttachClient {
    conn: Conn,
    request: Option<AttachRequest>,
    /// Exit sent: close once the queue is flushed.
    closing: bool,
    /// Since when the queue has been over the limit.
    full_since: Option<Instant>,
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
            match self.admit(stream, self.attaches.len(), MAX_ATTACH_CLIENTS) {
                Ok((token, stream)) => {
                    let client = AttachClient {
                        conn: Conn::new(stream),
                        request: None,
                        closing: false,
                        full_since: None,
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

    pub fn on_attach(&mut self, token: Token, readable: bool, writable: bool) {
        if readable {
            self.read_attach(token);
        }
        if writable {
            self.flush_attach(token);
        }
    }

    fn read_attach(&mut self, token: Token) {
        if self.stdin_buf.len() >= STDIN_BUFFER_LIMIT {
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
        self.flush_stdin();
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
            let stdin_open = self.stdio.input.is_some();
            let reply = AttachReply {
                error: None,
                tty: self.cfg.tty,
                stdin_open,
                exited: self.exit.is_some(),
            };
            client.request = Some(req);
            if let Ok(bytes) = serde_json::to_vec(&reply) {
                client.conn.queue_always(frame::TAG_JSON, &bytes);
            }
            if self.exit.is_some() {
                self.send_exit(token);
            }
            self.flush_attach(token);
            // Output held for this client flows from now on.
            self.release_output();
            return;
        }
        match f.tag {
            proto::TAG_STDIN if client.wants_stdin() => {
                if f.payload.is_empty() {
                    self.stdin_close_requested = true;
                } else if self.stdio.input.is_some() {
                    self.stdin_buf.extend_from_slice(&f.payload);
                }
            }
            proto::TAG_STDIN => {}
            proto::TAG_RESIZE => {
                if let (Some(pty), Some((rows, cols))) =
                    (&self.pty, proto::decode_resize(&f.payload))
                {
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

    /// Sends output to every client that asked for this stream.
    pub fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        let tag = match stream {
            Stream::Stdout => proto::TAG_STDOUT,
            Stream::Stderr => proto::TAG_STDERR,
        };
        let mut gone = Vec::new();
        for (token, client) in self.attaches.iter_mut() {
            if client.closing || !client.wants(stream) {
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
                client.full_since.get_or_insert_with(Instant::now);
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

    /// True while some client is over its queue limit: the container's
    /// output is left in the pipe until it catches up or is cut off.
    pub fn output_paused(&self) -> bool {
        self.attaches.values().any(|c| c.full_since.is_some())
    }

    /// The earliest moment a stalled client must be cut off.
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.attaches
            .values()
            .filter_map(|c| c.full_since)
            .min()
            .map(|t| t + STALL_LIMIT)
    }

    /// Cuts off clients that held the output back too long (or all that
    /// hold it back, with `all`); true if any was cut.
    pub fn cut_stalled(&mut self, all: bool) -> bool {
        let now = Instant::now();
        let stalled: Vec<Token> = self
            .attaches
            .iter()
            .filter(|(_, c)| c.full_since.is_some_and(|t| all || now >= t + STALL_LIMIT))
            .map(|(t, _)| *t)
            .collect();
        for token in &stalled {
            let msg = format!(
                "berth: this client stayed {CLIENT_QUEUE_LIMIT} bytes behind the container's output for {STALL_LIMIT:?} and was cut off; `berth logs` has everything"
            );
            log::warn!("attach client cut off: too slow");
            self.cut_off(*token, &msg);
        }
        !stalled.is_empty()
    }

    /// Queues the exit frame for every client, after all their output.
    pub fn announce_exit(&mut self) {
        let tokens: Vec<Token> = self.attaches.keys().copied().collect();
        for token in tokens {
            let handshaken = self
                .attaches
                .get(&token)
                .is_some_and(|c| c.request.is_some());
            if handshaken {
                self.send_exit(token);
                self.flush_attach(token);
            }
        }
    }

    fn send_exit(&mut self, token: Token) {
        let payload = serde_json::to_vec(&self.exit).unwrap_or_default();
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
        if c.full_since.is_some() && c.conn.queued() <= CLIENT_QUEUE_LIMIT {
            // Caught up: the event loop resumes reading the container.
            c.full_since = None;
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
            c.full_since = None;
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
