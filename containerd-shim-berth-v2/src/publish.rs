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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::EventsClient;

/// Events waiting to be sent, at most; past that the oldest is dropped.
const QUEUE_MAX: usize = 1024;
/// Attempts per event before it is dropped (100 ms doubling: ~3 s).
const ATTEMPTS: u32 = 5;
/// How long the sender thread (and its connection) outlives the last event.
const LINGER: Duration = Duration::from_secs(2);

struct Queue {
    events: VecDeque<(&'static str, Any)>,
    sender_running: bool,
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
            cv.notify_one();
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

    fn send_loop(&self) {
        let (m, cv) = &*self.inner;
        let mut client: Option<EventsClient> = None;
        loop {
            let mut q = lock(m);
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
            drop(q);
            self.send_one(&mut client, topic, any);
        }
    }

    fn send_one(&self, client: &mut Option<EventsClient>, topic: &'static str, event: Any) {
        let mut req = ForwardRequest::new();
        let mut env = Envelope::new();
        env.timestamp = Some(now()).into();
        env.namespace = self.namespace.clone();
        env.topic = topic.to_string();
        env.event = Some(event).into();
        req.envelope = Some(env).into();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            if client.is_none() {
                match ttrpc::Client::connect(&format!("unix://{}", self.ttrpc_address)) {
                    Ok(c) => *client = Some(EventsClient::new(c)),
                    Err(e) => log::debug!("connect {}: {e}", self.ttrpc_address),
                }
            }
            if let Some(c) = client.as_ref() {
                let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
                match c.forward(ctx, &req) {
                    Ok(_) => return,
                    Err(e) => {
                        log::debug!("forward {topic} (attempt {attempt}): {e}");
                        *client = None;
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
