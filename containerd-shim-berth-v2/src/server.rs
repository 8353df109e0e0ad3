//! containerd's ttrpc connections, served from the shim's one thread.
//!
//! The wire format and the method table are the ttrpc crate's and
//! containerd-shim-protos' (frames, `Request`/`Response`, the generated
//! `Task` handlers); only the loop is ours. The ttrpc crate's own server
//! runs a listener thread, a reaper thread and per connection a reader, a
//! writer, a handler and a pool of workers (8 threads for one idle shim
//! with one containerd connection). Here the monitor's poll loop reads the
//! frames and calls the generated handler inline, one request at a time,
//! as berth-shim serves berthd. The one call that blocks for long, `Wait`,
//! is parked instead of run: the loop answers it when the exit has been
//! recorded.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::proto::{
    Codec, MessageHeader, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
    MESSAGE_TYPE_REQUEST,
};
use containerd_shim_protos::ttrpc::{self, Code, MethodHandler, TtrpcContext};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::publish::to_timestamp;
use crate::shim::{Exit, Shim};

/// The generated handlers, by "/service/method".
pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// How long a response may wait for containerd to read (it always does;
/// a peer that does not is dropped rather than stalling the shim).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Sent a frame over ttrpc's size limit: closed once read.
    oversized: bool,
}

/// A Wait not answered yet: the process has not exited.
struct Parked {
    conn: u64,
    stream_id: u32,
    id: String,
    exec_id: String,
}

pub struct Server {
    listener: UnixListener,
    methods: Methods,
    conns: HashMap<u64, Conn>,
    next: u64,
    parked: Vec<Parked>,
    /// What the generated handlers answer into; drained after each call.
    tx: mpsc::Sender<(MessageHeader, Vec<u8>)>,
    rx: mpsc::Receiver<(MessageHeader, Vec<u8>)>,
    conn_ctx: Arc<ttrpc::ConnectionContext>,
}

/// A readiness source of the loop: the listener or one connection.
#[derive(Clone, Copy)]
pub enum Source {
    Listener,
    Conn(u64),
}

impl Server {
    pub fn new(listener: UnixListener, methods: Methods) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        Ok(Server {
            listener,
            methods,
            conns: HashMap::new(),
            next: 0,
            parked: Vec::new(),
            tx,
            rx,
            conn_ctx: Arc::new(ttrpc::ConnectionContext::default()),
        })
    }

    /// The fds to poll for reading, with what each is.
    pub fn poll_fds(&self) -> Vec<(PollFd<'_>, Source)> {
        let mut v = vec![(
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            Source::Listener,
        )];
        for (id, c) in &self.conns {
            v.push((
                PollFd::new(c.stream.as_fd(), PollFlags::POLLIN),
                Source::Conn(*id),
            ));
        }
        v
    }

    /// Handles what is ready on `src`.
    pub fn ready(&mut self, shim: &Shim, src: Source) {
        match src {
            Source::Listener => self.accept(),
            Source::Conn(id) => self.read(shim, id),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("connection: {e}");
                        continue;
                    }
                    self.next += 1;
                    self.conns.insert(
                        self.next,
                        Conn {
                            stream,
                            buf: Vec::new(),
                            oversized: false,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, id: u64) {
        self.conns.remove(&id);
        self.parked.retain(|p| p.conn != id);
    }

    fn read(&mut self, shim: &Shim, id: u64) {
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        if let Some(c) = self.conns.get_mut(&id) {
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
                // Bounded: at most one whole frame and a read's worth.
                if c.buf.len() >= MESSAGE_HEADER_LENGTH + MESSAGE_LENGTH_MAX {
                    break;
                }
            }
        }
        while let Some((mh, payload)) = self.next_frame(id) {
            if mh.type_ == MESSAGE_TYPE_REQUEST {
                self.request(shim, id, mh, &payload);
            }
        }
        if eof || self.conns.get(&id).is_some_and(|c| c.oversized) {
            self.close(id);
        }
    }

    /// Takes one whole frame off the connection's buffer.
    fn next_frame(&mut self, id: u64) -> Option<(MessageHeader, Vec<u8>)> {
        let c = self.conns.get_mut(&id)?;
        if c.buf.len() < MESSAGE_HEADER_LENGTH {
            return None;
        }
        let mh = MessageHeader::from(&c.buf[..MESSAGE_HEADER_LENGTH]);
        let len = mh.length as usize;
        if len > MESSAGE_LENGTH_MAX {
            log::warn!("a {len}-byte ttrpc frame is over the limit: closing the connection");
            c.oversized = true;
            return None;
        }
        if c.buf.len() < MESSAGE_HEADER_LENGTH + len {
            return None;
        }
        let payload = c.buf[MESSAGE_HEADER_LENGTH..MESSAGE_HEADER_LENGTH + len].to_vec();
        c.buf.drain(..MESSAGE_HEADER_LENGTH + len);
        Some((mh, payload))
    }

    fn request(&mut self, shim: &Shim, conn: u64, mh: MessageHeader, payload: &[u8]) {
        let req = match <Request as Codec>::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                let status = ttrpc::get_status(Code::INVALID_ARGUMENT, format!("bad request: {e}"));
                self.respond(conn, mh.stream_id, ttrpc::Error::RpcStatus(status).into());
                return;
            }
        };
        if req.method == "Wait" && req.service.starts_with("containerd.task.") {
            self.wait(shim, conn, mh.stream_id, &req.payload);
            return;
        }
        let path = format!("/{}/{}", req.service, req.method);
        let Some(handler) = self.methods.get(&path) else {
            let status = ttrpc::get_status(Code::UNIMPLEMENTED, format!("{path} does not exist"));
            self.respond(conn, mh.stream_id, ttrpc::Error::RpcStatus(status).into());
            return;
        };
        let Some(fd) = self.conns.get(&conn).map(|c| c.stream.as_raw_fd()) else {
            return;
        };
        let ctx = TtrpcContext {
            fd,
            cancel_rx: crossbeam_channel::never(),
            mh,
            res_tx: self.tx.clone(),
            metadata: ttrpc::context::from_pb(&req.metadata),
            timeout_nano: req.timeout_nano,
            conn_ctx: self.conn_ctx.clone(),
        };
        if let Err(e) = handler.handler(ctx, req) {
            self.respond(conn, mh.stream_id, e.into());
        }
        while let Ok((mh, buf)) = self.rx.try_recv() {
            self.write(conn, mh, &buf);
        }
    }

    fn wait(&mut self, shim: &Shim, conn: u64, stream_id: u32, payload: &[u8]) {
        let req = match api::WaitRequest::parse_from_bytes(payload) {
            Ok(r) => r,
            Err(e) => {
                let status = ttrpc::get_status(Code::INVALID_ARGUMENT, format!("bad request: {e}"));
                self.respond(conn, stream_id, ttrpc::Error::RpcStatus(status).into());
                return;
            }
        };
        let parked = Parked {
            conn,
            stream_id,
            id: req.id,
            exec_id: req.exec_id,
        };
        if let Some(p) = self.answer(shim, parked) {
            self.parked.push(p);
        }
    }

    /// Answers the Waits whose process has exited (its exit is on disk).
    pub fn answer_waits(&mut self, shim: &Shim) {
        for p in std::mem::take(&mut self.parked) {
            if let Some(p) = self.answer(shim, p) {
                self.parked.push(p);
            }
        }
    }

    /// Answers `p` if it can be; gives it back otherwise.
    fn answer(&mut self, shim: &Shim, p: Parked) -> Option<Parked> {
        let res = match shim.try_wait(&p.id, &p.exec_id) {
            Ok(None) => return Some(p),
            Ok(Some(exit)) => wait_response(exit),
            Err(e) => ttrpc::Error::from(e).into(),
        };
        self.respond(p.conn, p.stream_id, res);
        None
    }

    fn respond(&mut self, conn: u64, stream_id: u32, res: Response) {
        match res.encode() {
            Ok(buf) => {
                let mh = MessageHeader::new_response(stream_id, buf.len() as u32);
                self.write(conn, mh, &buf);
            }
            Err(e) => log::error!("encode a response: {e}"),
        }
    }

    fn write(&mut self, conn: u64, mh: MessageHeader, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut frame: Vec<u8> = mh.into();
        frame.extend_from_slice(payload);
        if let Err(e) = write_all(&mut c.stream, &frame) {
            log::warn!("write a response: {e}; closing the connection");
            self.close(conn);
        }
    }
}

fn wait_response(exit: Exit) -> Response {
    let mut r = api::WaitResponse::new();
    r.exit_status = exit.status;
    r.exited_at = Some(to_timestamp(exit.at)).into();
    match r.write_to_bytes() {
        Ok(payload) => {
            let mut res = Response::new();
            res.set_status(ttrpc::get_status(Code::OK, ""));
            res.payload = payload;
            res
        }
        Err(e) => ttrpc::Error::Others(format!("encode: {e}")).into(),
    }
}

/// Writes all of `buf` to a non-blocking socket, waiting (bounded) while
/// the peer's buffer is full.
fn write_all(stream: &mut UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                let ms = u16::try_from(WRITE_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
                if poll(&mut fds, PollTimeout::from(ms))? == 0 {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
