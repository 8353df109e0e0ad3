//! Task events to containerd, through its ttrpc events service
//! (`containerd.services.events.ttrpc.v1.Events/Forward` on
//! `$TTRPC_ADDRESS`), as containerd 1.6's own shims send them.
//!
//! Events are hints: the truth is the shim's state and the exit record on
//! disk. So publishing never holds anything up: events queue (bounded) for
//! one sender thread that exists only while there is something to send,
//! keeps their order, retries a few times when containerd is away, and
//! then drops the event with a log line. A containerd that was down asks
//! the shim for its state when it comes back.
//!
//! The sender speaks ttrpc on one blocking socket, a request and then its
//! response, with the ttrpc crate's frame and message types: its client
//! would add a reader and a writer thread per connection for the same.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::proto::{
    Codec, MessageHeader, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
    MESSAGE_TYPE_RESPONSE,
};
use containerd_shim_protos::ttrpc::Code;

/// Events waiting to be sent, at most; past that the oldest is dropped.
const QUEUE_MAX: usize = 1024;
/// Attempts per event before it is dropped (100 ms doubling: ~3 s).
const ATTEMPTS: u32 = 5;
/// How long the sender thread (and its connection) outlives the last event.
const LINGER: Duration = Duration::from_secs(2);
/// How long containerd may take to answer one Forward.
const TIMEOUT: Duration = Duration::from_secs(5);
const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

struct Queue {
    events: VecDeque<(&'static str, Any)>,
    sender_running: bool,
    /// An event taken off the queue and not yet sent or dropped.
    sending: bool,
}

/// One ttrpc connection to containerd's events service.
struct Conn {
    stream: UnixStream,
    next_stream_id: u32,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("encode: {0}")]
    Encode(String),
    #[error("bad response: {0}")]
    Response(String),
    #[error("containerd answered {code:?}: {message}")]
    Status { code: Code, message: String },
}

/// The shim's event publisher.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<(Mutex<Queue>, Condvar)>,
    ttrpc_address: String,
    namespace: String,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    pub fn new(ttrpc_address: String, namespace: String) -> Self {
        Publisher {
            inner: Arc::new((
                Mutex::new(Queue {
                    events: VecDeque::new(),
                    sender_running: false,
                    sending: false,
                }),
                Condvar::new(),
            )),
            ttrpc_address,
            namespace,
        }
    }

    /// Queues `event` for `topic` (`/tasks/exit`, ...).
    pub fn publish<M: Event>(&self, topic: &'static str, event: &M) {
        let value = match event.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                log::error!("encode {topic} event: {e}");
                return;
            }
        };
        let any = Any {
            type_url: M::TYPE_URL.to_string(),
            value,
            ..Default::default()
        };
        if self.ttrpc_address.is_empty() {
            log::warn!("no TTRPC_ADDRESS: {topic} event not sent");
            return;
        }
        let (m, cv) = &*self.inner;
        let mut q = lock(m);
        if q.events.len() >= QUEUE_MAX {
            let (old, _) = q.events.pop_front().unwrap_or(("?", Any::new()));
            log::warn!("event queue full: dropped a {old} event");
        }
        q.events.push_back((topic, any));
        if q.sender_running {
            cv.notify_all();
            return;
        }
        q.sender_running = true;
        drop(q);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("publish".into())
            .stack_size(256 * 1024)
            .spawn(move || me.send_loop());
        if let Err(e) = spawned {
            log::error!("spawn event sender: {e}");
            lock(m).sender_running = false;
        }
    }

    /// Waits (at most `timeout`) until every queued event was sent or
    /// dropped: the shim is about to exit.
    pub fn flush(&self, timeout: Duration) {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut q = lock(m);
        while !q.events.is_empty() || q.sending {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("exiting with {} events unsent", q.events.len());
                return;
            }
            q = cv
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn send_loop(&self) {
        let (m, cv) = &*self.inner;
        let mut conn: Option<Conn> = None;
        loop {
            let mut q = lock(m);
            q.sending = false;
            cv.notify_all();
            while q.events.is_empty() {
                let (g, timeout) = cv
                    .wait_timeout(q, LINGER)
                    .unwrap_or_else(|p| p.into_inner());
                q = g;
                if timeout.timed_out() && q.events.is_empty() {
                    q.sender_running = false;
                    return;
                }
            }
            let Some((topic, any)) = q.events.pop_front() else {
                continue;
            };
            q.sending = true;
            drop(q);
            self.send_one(&mut conn, topic, any);
        }
    }

    fn send_one(&self, conn: &mut Option<Conn>, topic: &'static str, event: Any) {
        let mut req = ForwardRequest::new();
        let mut env = Envelope::new();
        env.timestamp = Some(now()).into();
        env.namespace = self.namespace.clone();
        env.topic = topic.to_string();
        env.event = Some(event).into();
        req.envelope = Some(env).into();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            if conn.is_none() {
                match connect(&self.ttrpc_address) {
                    Ok(c) => *conn = Some(c),
                    Err(e) => log::debug!("connect {}: {e}", self.ttrpc_address),
                }
            }
            if let Some(c) = conn.as_mut() {
                match c.forward(&req) {
                    Ok(()) => return,
                    Err(e) => {
                        log::debug!("forward {topic} (attempt {attempt}): {e}");
                        *conn = None;
                    }
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
        log::warn!(
            "containerd unreachable at {}: {topic} event dropped (the state stays queryable)",
            self.ttrpc_address
        );
    }
}

fn connect(address: &str) -> std::io::Result<Conn> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(Conn {
        stream,
        next_stream_id: 1,
    })
}

impl Conn {
    /// One Forward request and its response.
    fn forward(&mut self, fwd: &ForwardRequest) -> Result<(), SendError> {
        let mut req = Request::new();
        req.service = SERVICE.to_string();
        req.method = "Forward".to_string();
        req.timeout_nano = TIMEOUT.as_nanos() as i64;
        req.payload = fwd
            .write_to_bytes()
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let body = req.encode().map_err(|e| SendError::Encode(e.to_string()))?;
        // Client streams are odd, as the ttrpc client numbers them.
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(2);
        let mut frame: Vec<u8> = MessageHeader::new_request(stream_id, body.len() as u32).into();
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;
        let mut head = [0u8; MESSAGE_HEADER_LENGTH];
        self.stream.read_exact(&mut head)?;
        let mh = MessageHeader::from(head);
        let len = mh.length as usize;
        if mh.type_ != MESSAGE_TYPE_RESPONSE
            || mh.stream_id != stream_id
            || len > MESSAGE_LENGTH_MAX
        {
            return Err(SendError::Response(format!("{mh:?}")));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        let res = <Response as Codec>::decode(&payload)
            .map_err(|e| SendError::Response(e.to_string()))?;
        let status = res.status();
        if status.code() != Code::OK {
            return Err(SendError::Status {
                code: status.code(),
                message: status.message.clone(),
            });
        }
        Ok(())
    }
}

/// Now, as a protobuf timestamp.
pub fn now() -> Timestamp {
    to_timestamp(std::time::SystemTime::now())
}

pub fn to_timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// The topics, as containerd names them.
pub mod topic {
    pub const CREATE: &str = "/tasks/create";
    pub const START: &str = "/tasks/start";
    pub const EXIT: &str = "/tasks/exit";
    pub const OOM: &str = "/tasks/oom";
    pub const EXEC_ADDED: &str = "/tasks/exec-added";
    pub const EXEC_STARTED: &str = "/tasks/exec-started";
    pub const PAUSED: &str = "/tasks/paused";
    pub const RESUMED: &str = "/tasks/resumed";
    pub const DELETE: &str = "/tasks/delete";
}

/// An event message and its type name. The names are constants rather
/// than read from protobuf reflection: building the descriptors costs each
/// shim ~300 KiB of heap for the rest of its life (a test checks them).
pub trait Event: Message {
    const TYPE_URL: &'static str;
}

macro_rules! events {
    ($($t:ident),*) => {
        $(impl Event for ev::$t {
            const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($t));
        })*
    };
}
events!(
    TaskCreate,
    TaskStart,
    TaskExit,
    TaskOOM,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
    TaskDelete
);

pub use ev::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};

#[cfg(test)]
mod tests {
    use super::*;

    use containerd_shim_protos::protobuf::MessageFull;

    fn check<M: Event + MessageFull>() {
        assert_eq!(M::TYPE_URL, M::descriptor().full_name());
    }

    #[test]
    fn events_carry_containerds_type_names() {
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskDelete>();
    }
}
