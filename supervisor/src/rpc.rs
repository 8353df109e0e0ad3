//! An async client for berth's JSON control protocol, used by the CLI to
//! talk to berthd and by berthd to talk to shims.

use std::os::fd::AsRawFd;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use runtime_core::frame::{self, Frame};
use runtime_core::protocol::{ErrorCode, Hello, Request, Response, RpcError};
use runtime_core::sockpath;

/// A connection that sends requests and reads replies in order.
pub struct RpcClient {
    stream: UnixStream,
    next_id: u64,
    /// Bound on each call's round trip, except `long_call`.
    timeout: Option<std::time::Duration>,
    /// Bytes read ahead of the replies taken so far (see
    /// `connect_call_then`); empty, and unallocated, nearly always.
    ahead: Vec<u8>,
}

/// The read buffer for the first replies on a connection: a hello's and a
/// shim's state fit, with room to spare.
const FIRST_REPLIES_BUFFER: usize = 4096;

/// Why a call failed: the transport, or the peer's own error reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Remote(RpcError),
    /// The peer is not root or our own user (SO_PEERCRED).
    #[error("{0}")]
    Untrusted(String),
}

impl CallError {
    /// The peer's error code, if the peer answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Remote(e) => Some(e.code),
            CallError::Transport(_) | CallError::Untrusted(_) => None,
        }
    }
}

impl RpcClient {
    /// Connects (through a short path when needed) and exchanges hellos.
    pub async fn connect(path: &Path, agent: &str) -> Result<Self, CallError> {
        let mut client = Self::open(path).await?;
        let reply: Hello = client.call("hello", &Hello::current(agent)).await?;
        reply.check_compatible().map_err(CallError::Remote)?;
        Ok(client)
    }

    /// Connects and makes a first call, its request written together with
    /// the hello: the peer reads both in one turn and answers both, so it
    /// is woken once, not twice. The call's reply is used only once the
    /// hello's says the versions are compatible; a peer of another major
    /// version answers a request it may not know with an error at worst,
    /// so only methods that change nothing belong here (berthd adopting
    /// its shims at start-up asks `state` this way: thousands of shims,
    /// each woken once less).
    pub async fn connect_and_call<P: Serialize, R: DeserializeOwned>(
        path: &Path,
        agent: &str,
        method: &str,
        params: &P,
    ) -> Result<(Self, R), CallError> {
        let (client, reply) = Self::connect_and_call_frame(path, agent, method, params).await?;
        let result = decode_reply(method, &reply?)?;
        Ok((client, result))
    }

    /// [`RpcClient::connect_and_call`], returning the call's reply frame
    /// (for a caller that decodes it borrowing from it) apart from the
    /// connection's own failures: the outer error is the connect or the
    /// hello's, the inner one the call's.
    pub async fn connect_and_call_frame<P: Serialize>(
        path: &Path,
        agent: &str,
        method: &str,
        params: &P,
    ) -> Result<(Self, Result<Frame, CallError>), CallError> {
        Self::connect_call_then(path, agent, method, params, None::<(&str, &())>).await
    }

    /// [`RpcClient::connect_and_call`], with one more request (`then`)
    /// written in the same write, its reply left for
    /// [`RpcClient::read_long_reply`]: berthd's watcher asks a shim's
    /// `state` and sends its `wait` long poll at once, so each shim is
    /// woken once per adoption, not twice. The same rule holds for `then`
    /// as for the call: it must change nothing, since a peer of another
    /// major version receives it too.
    pub async fn connect_and_call_then<P: Serialize, R: DeserializeOwned, T: Serialize>(
        path: &Path,
        agent: &str,
        (method, params): (&str, &P),
        then: (&str, &T),
    ) -> Result<(Self, R), CallError> {
        let (client, reply) =
            Self::connect_call_then(path, agent, method, params, Some(then)).await?;
        let result = decode_reply(method, &reply?)?;
        Ok((client, result))
    }

    async fn connect_call_then<P: Serialize, T: Serialize>(
        path: &Path,
        agent: &str,
        method: &str,
        params: &P,
        then: Option<(&str, &T)>,
    ) -> Result<(Self, Result<Frame, CallError>), CallError> {
        let mut client = Self::open(path).await?;
        let bytes = first_requests(&mut client.next_id, agent, (method, params), then)?;
        client
            .stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send hello: {e}")))?;
        drop(bytes);
        let reply = client.read_first_replies(method).await?;
        Ok((client, reply))
    }

    /// [`RpcClient::connect_and_call_then`]'s first half, for a blocking
    /// thread: connects without waiting, checks the peer and writes the
    /// hello, the call and `then` in one write. Its replies are read with
    /// [`RpcClient::replies_to`]. berthd's start-up reader sends these to
    /// every shim while its async thread adopts the ones answered: the
    /// connects (a path walk and a wake-up of the shim each) were a fifth
    /// of that thread's work. A peer whose backlog is full is an error
    /// here (the caller connects again the async way), not a wait.
    pub fn connect_and_send<P: Serialize, T: Serialize>(
        path: &Path,
        agent: &str,
        (method, params): (&str, &P),
        then: (&str, &T),
    ) -> Result<Sent, CallError> {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let transport = |what: &str, e: nix::Error| {
            CallError::Transport(format!("{what} {}: {e}", path.display()))
        };
        let (short, _handle) =
            sockpath::short(path).map_err(|e| CallError::Transport(e.to_string()))?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| transport("socket for", e))?;
        let addr = UnixAddr::new(&short).map_err(|e| transport("address", e))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| transport("connect", e))?;
        let mut stream = std::os::unix::net::UnixStream::from(fd);
        check_server(&stream, path)?;
        let mut next_id = 1;
        let bytes = first_requests(&mut next_id, agent, (method, params), Some(then))?;
        // A new connection's buffer takes these few hundred bytes whole; a
        // short write is an error like any other (see above).
        let written = std::io::Write::write(&mut stream, &bytes)
            .map_err(|e| CallError::Transport(format!("send hello: {e}")))?;
        if written != bytes.len() {
            return Err(CallError::Transport("send hello: short write".into()));
        }
        Ok(Sent { stream, next_id })
    }

    /// The replies to what [`RpcClient::connect_and_send`] sent to call
    /// `method`, read here (an async thread) as `connect_and_call_then`
    /// reads them; the connection carries on as this client.
    pub async fn replies_to<R: DeserializeOwned>(
        sent: Sent,
        method: &str,
    ) -> Result<(Self, R), CallError> {
        let stream = UnixStream::from_std(sent.stream)
            .map_err(|e| CallError::Transport(format!("register connection: {e}")))?;
        let mut client = RpcClient {
            stream,
            next_id: sent.next_id,
            timeout: None,
            ahead: Vec::new(),
        };
        let reply = client.read_first_replies(method).await?;
        let result = decode_reply(method, &reply?)?;
        Ok((client, result))
    }

    /// Reads the hello's reply and checks it, then the reply to `method`
    /// (the outer error is the hello's). The replies are written together
    /// and arrive together: read through one small buffer, one read(2)
    /// takes them all, not two (header, then body) per reply. Whatever
    /// was read past them (a `then`'s reply, answered at once) is kept
    /// for the next read.
    async fn read_first_replies(
        &mut self,
        method: &str,
    ) -> Result<Result<Frame, CallError>, CallError> {
        let mut buffered =
            tokio::io::BufReader::with_capacity(FIRST_REPLIES_BUFFER, &mut self.stream);
        let hello = next_frame(&mut buffered, "hello").await?;
        let hello: Hello = decode_reply("hello", &hello)?;
        hello.check_compatible().map_err(CallError::Remote)?;
        let reply = next_frame(&mut buffered, method).await;
        let ahead = buffered.buffer().to_vec();
        self.ahead = ahead;
        Ok(reply)
    }

    /// Connects and checks the peer's credentials.
    async fn open(path: &Path) -> Result<Self, CallError> {
        let (short, _handle) =
            sockpath::short(path).map_err(|e| CallError::Transport(e.to_string()))?;
        let stream = UnixStream::connect(&short)
            .await
            .map_err(|e| CallError::Transport(format!("connect {}: {e}", path.display())))?;
        check_server(&stream, path)?;
        Ok(RpcClient {
            stream,
            next_id: 1,
            timeout: None,
            ahead: Vec::new(),
        })
    }

    /// Bounds every later call (but `long_call`) by `timeout`.
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.timeout = Some(timeout);
    }

    /// A call that may legitimately block for long (`wait`): no timeout.
    pub async fn long_call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, CallError> {
        let saved = self.timeout.take();
        let r = self.call(method, params).await;
        self.timeout = saved;
        r
    }

    /// The reply to a request already sent (the `then` of
    /// [`RpcClient::connect_and_call_then`]), however long it takes.
    pub async fn read_long_reply<R: DeserializeOwned>(
        &mut self,
        method: &str,
    ) -> Result<R, CallError> {
        let frame = self.read_reply(method).await?;
        decode_reply(method, &frame)
    }

    /// Sends one request and waits for its reply.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, CallError> {
        let frame = self.call_frame(method, params).await?;
        decode_reply(method, &frame)
    }

    /// Sends one request and returns its reply's frame, for a caller that
    /// decodes the result borrowing from it ([`decode_reply`]).
    pub async fn call_frame<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Frame, CallError> {
        match self.timeout {
            Some(t) => tokio::time::timeout(t, self.round_trip(method, params))
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Transport(format!(
                        "{method}: no answer within {t:?}"
                    )))
                }),
            None => self.round_trip(method, params).await,
        }
    }

    /// Like `call`, returning the raw JSON result.
    pub async fn call_value<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Value, CallError> {
        self.call(method, params).await
    }

    /// Sends a request without waiting for its reply: the server carries
    /// it out even if we hang up (used where the caller has nothing left
    /// to learn, like `run --rm`'s removal).
    pub async fn send_only<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<(), CallError> {
        let bytes = self.encode_request(method, params)?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send {method}: {e}")))
    }

    /// Reads the next reply of a streaming method (sent with
    /// `send_only`), which answers one request many times.
    pub async fn next_reply(&mut self) -> Result<Value, CallError> {
        let frame = self
            .read_next()
            .await
            .map_err(CallError::Transport)?
            .ok_or_else(|| CallError::Transport("connection closed".into()))?;
        let resp: Response =
            frame::decode_json(&frame).map_err(|e| CallError::Transport(e.to_string()))?;
        resp.into_result().map_err(CallError::Remote)
    }

    /// Sends one request and reads its reply's frame.
    async fn round_trip<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Frame, CallError> {
        // The request is dropped once sent: berthd keeps one `wait` in
        // flight per container, so whatever lives across the reply's await
        // is memory per container.
        let bytes = self.encode_request(method, params)?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send {method}: {e}")))?;
        drop(bytes);
        self.read_reply(method).await
    }

    /// The next request's frame, under the next id.
    fn encode_request<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Vec<u8>, CallError> {
        encode_request(&mut self.next_id, method, params)
    }

    /// Reads the reply to the oldest request not yet answered.
    async fn read_reply(&mut self, method: &str) -> Result<Frame, CallError> {
        let message = self.read_next().await;
        reply_frame(message, method)
    }

    /// The next message, from what was read ahead first.
    async fn read_next(&mut self) -> Result<Option<Frame>, String> {
        if self.ahead.is_empty() {
            return read_message(&mut self.stream).await;
        }
        let ahead = std::mem::take(&mut self.ahead);
        let mut chained = (&ahead[..]).chain(&mut self.stream);
        let message = read_message(&mut chained).await;
        let (rest, _) = chained.into_inner();
        self.ahead = rest.to_vec();
        message
    }
}

/// A connection [`RpcClient::connect_and_send`] made and sent its first
/// requests on, for [`RpcClient::replies_to`].
pub struct Sent {
    stream: std::os::unix::net::UnixStream,
    next_id: u64,
}

/// The server is checked as it checks us: a socket someone else managed
/// to bind at `path` must not get to name the files we open.
fn check_server<F: std::os::fd::AsFd>(stream: &F, path: &Path) -> Result<(), CallError> {
    runtime_core::peercred::check(stream)
        .map(drop)
        .map_err(|why| {
            CallError::Untrusted(format!(
                "refusing to talk to the server at {}: {why}",
                path.display()
            ))
        })
}

/// Request `*next_id`'s frame; the id moves on.
fn encode_request<P: Serialize>(
    next_id: &mut u64,
    method: &str,
    params: &P,
) -> Result<Vec<u8>, CallError> {
    let req = Request {
        id: *next_id,
        method: method.to_string(),
        params: serde_json::to_value(params)
            .map_err(|e| CallError::Transport(format!("encode {method}: {e}")))?,
    };
    *next_id += 1;
    frame::encode_json(&req).map_err(|e| CallError::Transport(e.to_string()))
}

/// The hello, a call and maybe one more request, in one buffer for one
/// write.
fn first_requests<P: Serialize, T: Serialize>(
    next_id: &mut u64,
    agent: &str,
    (method, params): (&str, &P),
    then: Option<(&str, &T)>,
) -> Result<Vec<u8>, CallError> {
    let mut bytes = encode_request(next_id, "hello", &Hello::current(agent))?;
    bytes.extend_from_slice(&encode_request(next_id, method, params)?);
    if let Some((then_method, then_params)) = then {
        bytes.extend_from_slice(&encode_request(next_id, then_method, then_params)?);
    }
    Ok(bytes)
}

/// The reply to `method`, the next message on `r`.
async fn next_frame<R: AsyncReadExt + Unpin>(r: &mut R, method: &str) -> Result<Frame, CallError> {
    reply_frame(read_message(r).await, method)
}

fn reply_frame(message: Result<Option<Frame>, String>, method: &str) -> Result<Frame, CallError> {
    message
        .map_err(|e| CallError::Transport(format!("{method}: {e}")))?
        .ok_or_else(|| CallError::Transport(format!("{method}: connection closed")))
}

/// A reply as `Response` has it, its result decoded straight into `R`:
/// a `list` of thousands of containers decoded into a
/// `serde_json::Value` first and then copied into `R` cost the CLI as
/// much as berthd's whole answer.
#[derive(serde::Deserialize)]
#[serde(bound = "R: serde::Deserialize<'de>")]
struct Reply<R> {
    #[serde(default)]
    result: Option<R>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// The result (or the peer's error) of one reply frame, which `R` may
/// borrow from. A reply with neither is a null result, as
/// [`Response::into_result`] reads it.
pub fn decode_reply<'de, R: serde::Deserialize<'de>>(
    method: &str,
    frame: &'de Frame,
) -> Result<R, CallError> {
    let reply: Reply<R> = frame::decode_json(frame)
        .map_err(|e| CallError::Transport(format!("bad {method} reply: {e}")))?;
    match (reply.error, reply.result) {
        (Some(e), _) => Err(CallError::Remote(e)),
        (None, Some(r)) => Ok(r),
        (None, None) => serde_json::from_str("null")
            .map_err(|e| CallError::Transport(format!("bad {method} reply: {e}"))),
    }
}

/// Tag of a frame that carries part of a JSON message too large for one
/// frame: the message is the payloads of its `TAG_JSON_PART` frames and of
/// the `TAG_JSON` frame that ends it, in order. Only replies use it
/// (berthd's `list` of thousands of containers); requests stay one frame.
pub const TAG_JSON_PART: u8 = 0x10;

/// Largest reply a client accepts: 64 frames' worth (some 90,000
/// containers in a `list`), so a peer can never make it buffer without end.
pub const MAX_MESSAGE: usize = 64 * frame::MAX_PAYLOAD;

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("message of {len} bytes exceeds the limit of {MAX_MESSAGE} bytes")]
    TooLarge { len: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One JSON message, encoded with room for its first frame's header in
/// front, so it goes out without its payload being copied again (at
/// 3,000 containers a `list` reply is ~3 MB). A payload over one frame
/// goes as `TAG_JSON_PART` frames ending with a `TAG_JSON` one.
pub struct Message {
    /// `HEADER_LEN` bytes for the first header, then the payload.
    buf: Vec<u8>,
}

impl Message {
    /// Encodes `value`.
    pub fn encode<T: Serialize>(value: &T) -> Result<Message, SendError> {
        let mut m = Message::with_capacity(128);
        serde_json::to_writer(m.payload(), value)?;
        m.check()?;
        Ok(m)
    }

    /// An empty message whose payload the caller writes (through
    /// [`Message::payload`]), room for `capacity` bytes reserved at once
    /// (what is never written costs no memory, only address space).
    pub fn with_capacity(capacity: usize) -> Message {
        let mut buf = Vec::with_capacity(frame::HEADER_LEN + capacity);
        buf.resize(frame::HEADER_LEN, 0);
        Message { buf }
    }

    /// Where the payload is written.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Refuses a payload over the message limit.
    pub fn check(&self) -> Result<(), SendError> {
        let len = self.buf.len() - frame::HEADER_LEN;
        if len > MAX_MESSAGE {
            return Err(SendError::TooLarge { len });
        }
        Ok(())
    }

    /// The message's bytes on the wire, in pieces: the first frame (its
    /// header filled in front of the payload), then each further frame's
    /// header and payload. `headers` holds the further frames' headers.
    fn pieces<'a>(&'a mut self, headers: &'a mut Vec<[u8; frame::HEADER_LEN]>) -> Vec<&'a [u8]> {
        let header = |tag: u8, len: usize| -> [u8; frame::HEADER_LEN] {
            let [l0, l1, l2, l3] = (len as u32).to_be_bytes();
            [tag, l0, l1, l2, l3]
        };
        let total = self.buf.len() - frame::HEADER_LEN;
        let tag_for = |end: usize| {
            if end < total {
                TAG_JSON_PART
            } else {
                frame::TAG_JSON
            }
        };
        let first = total.min(frame::MAX_PAYLOAD);
        self.buf[..frame::HEADER_LEN].copy_from_slice(&header(tag_for(first), first));
        let (head, rest) = self.buf.split_at(frame::HEADER_LEN + first);
        headers.clear();
        let mut at = first;
        for chunk in rest.chunks(frame::MAX_PAYLOAD) {
            at += chunk.len();
            headers.push(header(tag_for(at), chunk.len()));
        }
        let mut pieces = vec![head];
        for (h, chunk) in headers.iter().zip(rest.chunks(frame::MAX_PAYLOAD)) {
            pieces.push(h);
            pieces.push(chunk);
        }
        pieces
    }

    /// Writes the message.
    pub async fn write_to<W: AsyncWriteExt + Unpin>(mut self, w: &mut W) -> std::io::Result<()> {
        let mut headers = Vec::new();
        for piece in self.pieces(&mut headers) {
            w.write_all(piece).await?;
        }
        Ok(())
    }

    /// The message's bytes on the wire, in one buffer.
    pub fn into_bytes(mut self) -> Vec<u8> {
        let mut headers = Vec::new();
        self.pieces(&mut headers).concat()
    }
}

/// The frames of one JSON message: one frame when it fits, else
/// `TAG_JSON_PART` frames ending with a `TAG_JSON` one.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, SendError> {
    Ok(Message::encode(value)?.into_bytes())
}

/// Writes one JSON message (in parts when large).
pub async fn write_message<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), SendError> {
    Message::encode(value)?.write_to(w).await?;
    Ok(())
}

/// Reads one JSON message, joining its parts (at most `MAX_MESSAGE`
/// bytes in all) as they arrive, each read straight into the message's
/// buffer; `None` on EOF between messages.
pub async fn read_message<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<Frame>, String> {
    let mut payload: Vec<u8> = Vec::new();
    let mut parts = 0usize;
    loop {
        let mut header = [0u8; frame::HEADER_LEN];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return if parts == 0 {
                    Ok(None)
                } else {
                    Err("connection closed in the middle of a message".into())
                };
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        let header = frame::Header::decode(&header).map_err(|e| e.to_string())?;
        if payload.len() + header.len > MAX_MESSAGE {
            return Err(format!("message exceeds the limit of {MAX_MESSAGE} bytes"));
        }
        let at = payload.len();
        payload.resize(at + header.len, 0);
        r.read_exact(&mut payload[at..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        parts += 1;
        if header.tag != TAG_JSON_PART {
            return Ok(Some(Frame {
                tag: header.tag,
                payload,
            }));
        }
    }
}

/// Reads one frame from an async stream; `None` on EOF between frames.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<Frame>, String> {
    let mut header = [0u8; frame::HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read: {e}")),
    }
    let header = frame::Header::decode(&header).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; header.len];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(Some(Frame {
        tag: header.tag,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::protocol::PROTOCOL_MAJOR;
    use serde_json::json;

    /// Accepts one connection and reads `n` requests from it, answering none.
    async fn accept_requests(
        listener: tokio::net::UnixListener,
        n: usize,
    ) -> (tokio::net::UnixStream, Vec<Request>) {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            let f = read_frame(&mut s).await.unwrap().unwrap();
            got.push(frame::decode_json::<Request>(&f).unwrap());
        }
        (s, got)
    }

    /// A peer that answers nothing until it holds two requests, then
    /// answers hello (as `major`) and the second request; it returns the
    /// methods it got.
    async fn peer_wanting_two(listener: tokio::net::UnixListener, major: u32) -> Vec<String> {
        let (mut s, got) = accept_requests(listener, 2).await;
        let hello = json!({"major": major, "minor": 0, "agent": "peer"});
        let state = json!({"status": "running"});
        for (req, result) in got.iter().zip([hello, state]) {
            write_message(&mut s, &Response::ok(req.id, result))
                .await
                .unwrap();
        }
        got.into_iter().map(|r| r.method).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_and_call_sends_the_call_with_the_hello() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(peer_wanting_two(listener, PROTOCOL_MAJOR));
        // A client that waited for the hello's reply before sending its
        // call would wait forever here.
        let call = RpcClient::connect_and_call::<_, Value>(&path, "test", "state", &());
        let (_client, state) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .expect("the peer got both requests without answering the first")
            .unwrap();
        assert_eq!(state, json!({"status": "running"}));
        assert_eq!(peer.await.unwrap(), ["hello", "state"]);
    }

    /// A peer that answers nothing until it holds hello, `state` and
    /// `wait`, then answers all three in one write (the third arrives with
    /// the first two, read ahead of its turn); it returns what it got.
    async fn peer_wanting_three(listener: tokio::net::UnixListener) -> Vec<(String, Value)> {
        let (mut s, got) = accept_requests(listener, 3).await;
        let hello = json!({"major": PROTOCOL_MAJOR, "minor": 0, "agent": "peer"});
        let mut all = Vec::new();
        for (req, result) in got
            .iter()
            .zip([hello, json!({"status": "running"}), json!(7)])
        {
            all.extend(encode_message(&Response::ok(req.id, result)).unwrap());
        }
        s.write_all(&all).await.unwrap();
        got.into_iter().map(|r| (r.method, r.params)).collect()
    }

    /// What a client that sent hello, `state` and `wait` at once must see:
    /// the state, then the `wait`'s reply that was read ahead; and the
    /// peer got the three requests in order.
    async fn check_three(
        call: impl std::future::Future<Output = Result<(RpcClient, Value), CallError>>,
        peer: tokio::task::JoinHandle<Vec<(String, Value)>>,
    ) {
        let (mut client, state) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .expect("the peer got all three requests without answering any")
            .unwrap();
        assert_eq!(state, json!({"status": "running"}));
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_long_reply::<u64>("wait"),
        )
        .await
        .expect("the reply read ahead was lost")
        .unwrap();
        assert_eq!(waited, 7);
        let got = peer.await.unwrap();
        let methods: Vec<_> = got.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, ["hello", "state", "wait"]);
        assert_eq!(got[2].1, json!({"oom_kills": 0}));
    }

    /// The `then` request goes out with the hello and the call, before any
    /// reply: the peer reads all three in one turn; its reply is read later.
    #[tokio::test]
    async fn connect_and_call_then_sends_three_requests_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(peer_wanting_three(listener));
        let wait = json!({"oom_kills": 0});
        let call = RpcClient::connect_and_call_then::<_, Value, _>(
            &path,
            "test",
            ("state", &()),
            ("wait", &wait),
        );
        check_three(call, peer).await;
    }

    /// The same three requests sent from a blocking thread (berthd's
    /// start-up readers), their replies read on the async one.
    #[tokio::test]
    async fn requests_sent_from_a_blocking_thread_are_answered_on_the_async_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(peer_wanting_three(listener));
        let to = path.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let wait = json!({"oom_kills": 0});
            RpcClient::connect_and_send(&to, "test", ("state", &()), ("wait", &wait))
        })
        .await
        .unwrap()
        .unwrap();
        check_three(RpcClient::replies_to::<Value>(sent, "state"), peer).await;
    }

    #[tokio::test]
    async fn a_send_from_a_blocking_thread_to_no_server_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.sock");
        let err = RpcClient::connect_and_send(&path, "test", ("state", &()), ("wait", &()))
            .err()
            .expect("nothing listens there");
        assert!(matches!(err, CallError::Transport(_)), "{err}");
        assert!(err.to_string().contains("nobody.sock"), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_and_call_refuses_another_major_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(peer_wanting_two(listener, PROTOCOL_MAJOR + 1));
        let err = RpcClient::connect_and_call::<_, Value>(&path, "test", "state", &())
            .await
            .err()
            .expect("a peer of another major version is refused");
        assert_eq!(err.code(), Some(ErrorCode::VersionMismatch), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("{}.0", PROTOCOL_MAJOR + 1)),
            "{err}"
        );
        peer.await.unwrap();
    }

    #[test]
    fn a_typed_reply_reads_as_response_does() {
        let f = |v: Value| Frame {
            tag: frame::TAG_JSON,
            payload: serde_json::to_vec(&v).unwrap(),
        };
        let ok: Vec<u32> = decode_reply("list", &f(json!({"id": 1, "result": [1, 2]}))).unwrap();
        assert_eq!(ok, [1, 2]);
        // No result at all: null, as `Response::into_result` has it.
        let none: Option<u32> = decode_reply("wait", &f(json!({"id": 2}))).unwrap();
        assert_eq!(none, None);
        let err = decode_reply::<Value>(
            "kill",
            &f(json!({"id": 3, "error": {"code": "not_found", "message": "no such container: x"}})),
        )
        .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
        assert_eq!(err.to_string(), "no such container: x");
        let bad =
            decode_reply::<Vec<u32>>("list", &f(json!({"id": 4, "result": "x"}))).unwrap_err();
        assert!(bad.to_string().starts_with("bad list reply: "), "{bad}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_message_larger_than_a_frame_arrives_whole() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let big: Vec<String> = (0..40_000).map(|i| format!("container-{i:060}")).collect();
        let expected = serde_json::to_vec(&big).unwrap();
        assert!(expected.len() > 2 * frame::MAX_PAYLOAD);
        let writer = tokio::spawn(async move { write_message(&mut a, &big).await.unwrap() });
        let f = read_message(&mut b).await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(f.tag, frame::TAG_JSON);
        assert_eq!(f.payload, expected);
        // A small one is still one plain frame.
        let bytes = encode_message(&"hi").unwrap();
        assert_eq!(bytes[0], frame::TAG_JSON);
        assert_eq!(bytes.len(), frame::HEADER_LEN + 4);
    }

    #[test]
    fn a_message_is_cut_into_frames_exactly_at_the_frame_limit() {
        let header = |b: &[u8]| frame::Header::decode(b[..frame::HEADER_LEN].try_into().unwrap());
        // A JSON string of n x's is n + 2 bytes.
        let fits = encode_message(&"x".repeat(frame::MAX_PAYLOAD - 2)).unwrap();
        assert_eq!(fits.len(), frame::HEADER_LEN + frame::MAX_PAYLOAD);
        let h = header(&fits).unwrap();
        assert_eq!((h.tag, h.len), (frame::TAG_JSON, frame::MAX_PAYLOAD));
        let over = encode_message(&"x".repeat(frame::MAX_PAYLOAD - 1)).unwrap();
        let h = header(&over).unwrap();
        assert_eq!((h.tag, h.len), (TAG_JSON_PART, frame::MAX_PAYLOAD));
        let rest = &over[h.frame_len()..];
        let h = header(rest).unwrap();
        assert_eq!((h.tag, h.len), (frame::TAG_JSON, 1));
        assert_eq!(&rest[frame::HEADER_LEN..], b"\"");
        // Nothing at all is one empty frame.
        let empty = Message::with_capacity(0).into_bytes();
        assert_eq!(empty, [frame::TAG_JSON, 0, 0, 0, 0]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn oversized_messages_are_refused_both_ways() {
        let huge = "x".repeat(MAX_MESSAGE + 1);
        assert!(matches!(
            encode_message(&huge),
            Err(SendError::TooLarge { .. })
        ));
        // A peer that sends parts without end is cut off at the limit.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let part = vec![b'x'; frame::MAX_PAYLOAD];
        let writer = tokio::spawn(async move {
            for _ in 0..=MAX_MESSAGE / frame::MAX_PAYLOAD {
                let mut out = Vec::new();
                frame::encode_into(&mut out, TAG_JSON_PART, &part).unwrap();
                if a.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
        let err = read_message(&mut b).await.unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
        drop(b);
        writer.await.unwrap();
    }
}
