//! The shim's control socket: berthd asks for state, start, kill, wait,
//! pause, resume, exec and delete. One JSON request per frame, answered
//! in order; `wait` is a long poll answered when the container has exited.
//!
//! The server owns its listener, clients and parked `wait`s, and nothing
//! of the container: each decoded request goes back to the event loop,
//! which answers it (`reply`) or parks it (`park_wait`).
//!
//! Every client is bounded: what is read from it per turn of the loop,
//! its pending `wait`s, its unsent replies, how long it may take to send
//! its first request and how long it may sit idle. When all slots are
//! taken a new client evicts the least recently active one (idle ones
//! first), so berthd can always get in.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::{Interest, Registry, Token};
use serde_json::Value;

use runtime_core::frame::{self, Frame};
use runtime_core::protocol::{ErrorCode, Request, Response, RpcError};

use crate::conn::{accept_one, admit, Conn, ReadOutcome, Tokens};

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
struct ControlClient {
    conn: Conn,
    /// When it connected, or sent its last request.
    last_active: Instant,
    /// It has sent a request (berthd's first is `hello`).
    greeted: bool,
    /// Its pending `wait` requests.
    waits: usize,
    /// Registered for writable events (see `watch_output`).
    writable: bool,
}

impl ControlClient {
    /// Registers the connection for writable events only while replies
    /// wait to be sent. Registered for them always, the shim was woken
    /// each time berthd read a reply, for nothing: a restarted berthd
    /// adopting thousands of shims woke each once more, and paid a
    /// cross-CPU wake-up in every read.
    fn watch_output(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        let want = self.conn.queued() > 0;
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.conn.stream, token, interest)?;
            self.writable = want;
        }
        Ok(())
    }

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

/// The control socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    registry: Registry,
    clients: HashMap<Token, ControlClient>,
    /// Pending `wait`s: client, request id, and the OOM kill count past
    /// which it is answered early (`WaitParams::oom_kills`).
    waiters: Vec<(Token, u64, Option<u64>)>,
    /// Clients whose input was left unread (read budget).
    rereads: HashSet<Token>,
}

impl ControlServer {
    pub fn new(listener: UnixListener, registry: Registry) -> Self {
        ControlServer {
            listener,
            registry,
            clients: HashMap::new(),
            waiters: Vec::new(),
            rereads: HashSet::new(),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        self.clients.contains_key(&token)
    }

    pub fn accept(&mut self, tokens: &mut Tokens) {
        while let Some(stream) = accept_one(&self.listener, "control") {
            if self.clients.len() >= MAX_CONTROL_CLIENTS {
                self.evict();
            }
            let token = tokens.next();
            match admit(
                &self.registry,
                stream,
                (token, Interest::READABLE),
                self.clients.len(),
                MAX_CONTROL_CLIENTS,
            ) {
                Ok(stream) => {
                    let client = ControlClient {
                        conn: Conn::new(stream),
                        last_active: Instant::now(),
                        greeted: false,
                        waits: 0,
                        writable: false,
                    };
                    self.clients.insert(token, client);
                }
                Err((_, why)) => log::warn!("control client {why}"),
            }
        }
    }

    /// Makes room for one more client: closes the least recently active
    /// one, preferring those that hold no `wait`.
    fn evict(&mut self) {
        let victim = self
            .clients
            .iter()
            .min_by_key(|(_, c)| (c.waits > 0, c.last_active))
            .map(|(t, _)| *t);
        if let Some(token) = victim {
            log::warn!("{MAX_CONTROL_CLIENTS} control clients connected: closing the least recently active one");
            self.drop_client(token);
        }
    }

    /// The next moment a client times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(ControlClient::deadline)
            .min()
    }

    /// Closes clients that never spoke or sat idle past their limits.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| now >= d))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            log::debug!("control client {token:?} timed out");
            self.drop_client(token);
        }
    }

    /// Some client's input was left for the next turn.
    pub fn rereads_pending(&self) -> bool {
        !self.rereads.is_empty()
    }

    /// Reads again from clients whose input was left for the next turn.
    pub fn resume_readers(&mut self, requests: &mut Vec<(Token, Request)>) {
        let tokens: Vec<Token> = self.rereads.drain().collect();
        for token in tokens {
            self.on_readable(token, requests);
        }
    }

    /// Reads a client's requests (within its budget); the ones that
    /// decode go to `requests` for the loop to answer, the others are
    /// answered here.
    pub fn on_readable(&mut self, token: Token, requests: &mut Vec<(Token, Request)>) {
        let mut frames = Vec::new();
        let outcome = match self.clients.get_mut(&token) {
            Some(c) => {
                // Replies pile up unread past the bound: the client is dropped.
                if c.conn.flush().is_err() || c.conn.queued() > CONTROL_QUEUE_LIMIT {
                    return self.drop_client(token);
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
                self.drop_client(token);
                return;
            }
        };
        if let Some(c) = self.clients.get_mut(&token) {
            if !frames.is_empty() {
                c.last_active = Instant::now();
                c.greeted = true;
            }
        }
        for f in frames {
            match decode(&f) {
                Ok(req) => requests.push((token, req)),
                Err(err) => self.reply(token, Response::err(0, err)),
            }
        }
        if matches!(outcome, ReadOutcome::Closed) {
            // What it asked for still happens; the replies go nowhere.
            self.drop_client(token);
        } else if matches!(outcome, ReadOutcome::More) {
            self.rereads.insert(token);
        }
    }

    /// After the loop answered a batch (every turn, before it sleeps):
    /// drops clients that went away or do not read their replies, and
    /// watches for room to send what the others left unsent.
    pub fn settle(&mut self) {
        let registry = &self.registry;
        let gone: Vec<Token> = self
            .clients
            .iter_mut()
            .filter_map(|(t, c)| {
                let failed = c.conn.flush().is_err()
                    || c.conn.queued() > CONTROL_QUEUE_LIMIT
                    || c.watch_output(registry, *t).is_err();
                failed.then_some(*t)
            })
            .collect();
        for token in gone {
            self.drop_client(token);
        }
    }

    /// Some client has not yet taken a reply queued for it.
    pub fn output_pending(&self) -> bool {
        self.clients.values().any(|c| c.conn.queued() > 0)
    }

    /// Parks a `wait` until `answer_waiters` (or, with `oom_known`,
    /// `answer_oom_waiters` once the kills pass it); refused past the bound.
    pub fn park_wait(&mut self, token: Token, id: u64, oom_known: Option<u64>) {
        let Some(c) = self.clients.get_mut(&token) else {
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
    }

    /// Answers every pending `wait`.
    pub fn answer_waiters(&mut self, exit: &Value) {
        for c in self.clients.values_mut() {
            c.waits = 0;
        }
        for (token, id, _) in std::mem::take(&mut self.waiters) {
            self.reply(token, Response::ok(id, exit.clone()));
        }
    }

    /// New OOM kills while the container runs (`kills` in all): answers,
    /// with no exit record, the `wait`s that asked to hear of them.
    pub fn answer_oom_waiters(&mut self, kills: u64) {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(_, _, known)| known.is_some_and(|k| kills > k));
        self.waiters = keep;
        for (token, id, _) in due {
            if let Some(c) = self.clients.get_mut(&token) {
                c.waits = c.waits.saturating_sub(1);
            }
            self.reply(token, Response::ok(id, Value::Null));
        }
    }

    pub fn reply(&mut self, token: Token, resp: Response) {
        if let Some(c) = self.clients.get_mut(&token) {
            match serde_json::to_vec(&resp) {
                Ok(bytes) => c.conn.queue_always(frame::TAG_JSON, &bytes),
                Err(e) => log::error!("encode reply: {e}"),
            }
            let _ = c.conn.flush();
        }
    }

    fn drop_client(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = c.conn.flush();
            let _ = self.registry.deregister(&mut c.conn.stream);
        }
        self.waiters.retain(|(t, _, _)| *t != token);
        self.rereads.remove(&token);
        if self.clients.is_empty() {
            // berthd connects per call: give back what a burst grew.
            self.clients = HashMap::new();
            self.waiters = Vec::new();
            self.rereads = HashSet::new();
        }
    }
}

fn decode(f: &Frame) -> Result<Request, RpcError> {
    frame::decode_json(f).map_err(|e| RpcError::new(ErrorCode::InvalidArgument, e.to_string()))
}

/// A request's params, or the error naming the method.
pub fn params<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, RpcError> {
    serde_json::from_value(req.params.clone())
        .map_err(|e| RpcError::new(ErrorCode::InvalidArgument, format!("{}: {e}", req.method)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream as StdStream;

    /// Events for `token` within `ms`.
    fn woken(poll: &mut mio::Poll, token: Token, ms: u64) -> bool {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        events.iter().any(|e| e.token() == token)
    }

    /// Reads one whole frame's worth of bytes (`len` of them).
    fn read_exactly(s: &mut StdStream, len: usize) {
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).unwrap();
    }

    #[test]
    fn a_client_reading_its_replies_wakes_the_shim_only_while_some_wait_to_be_sent() {
        let mut poll = mio::Poll::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut server = ControlServer::new(listener, poll.registry().try_clone().unwrap());
        let mut client = StdStream::connect(&path).unwrap();
        server.accept(&mut Tokens::starting_at(100));
        let token = *server.clients.keys().next().unwrap();
        assert!(!woken(&mut poll, token, 50), "a new, silent client");

        // A reply that fits the socket is sent at once; the client taking
        // it wakes nobody.
        let small = Response::ok(1, Value::String("small".into()));
        let small_len = frame::encode_json(&small).unwrap().len();
        server.reply(token, small);
        server.settle();
        read_exactly(&mut client, small_len);
        assert!(!woken(&mut poll, token, 50), "woken by the client's read");

        // One larger than the socket's buffer: the rest waits, and the
        // client's reads wake the shim to send it, until all is sent.
        let big = Response::ok(2, Value::String("x".repeat(900 * 1024)));
        let big_len = frame::encode_json(&big).unwrap().len();
        server.reply(token, big);
        server.settle();
        assert!(server.output_pending());
        let reader = std::thread::spawn(move || {
            read_exactly(&mut client, big_len);
            client
        });
        while server.output_pending() {
            assert!(
                woken(&mut poll, token, 10_000),
                "never woken to send the rest"
            );
            let mut requests = Vec::new();
            server.on_readable(token, &mut requests);
            server.settle();
        }
        let _client = reader.join().unwrap();
        assert!(!woken(&mut poll, token, 50), "woken with nothing to send");
    }
}
