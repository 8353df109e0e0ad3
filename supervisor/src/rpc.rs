//! An async client for berth's JSON control protocol, used by the CLI to
//! talk to berthd and by berthd to talk to shims.

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
}

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
        let mut client = Self::open(path).await?;
        let mut bytes = client.encode_request("hello", &Hello::current(agent))?;
        bytes.extend_from_slice(&client.encode_request(method, params)?);
        client
            .stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send hello: {e}")))?;
        drop(bytes);
        let hello = client.read_reply("hello").await?;
        let hello: Hello = decode_reply("hello", &hello)?;
        hello.check_compatible().map_err(CallError::Remote)?;
        let reply = client.read_reply(method).await?;
        let result = decode_reply(method, &reply)?;
        Ok((client, result))
    }

    /// Connects and checks the peer's credentials.
    async fn open(path: &Path) -> Result<Self, CallError> {
        let (short, _handle) =
            sockpath::short(path).map_err(|e| CallError::Transport(e.to_string()))?;
        let stream = UnixStream::connect(&short)
            .await
            .map_err(|e| CallError::Transport(format!("connect {}: {e}", path.display())))?;
        // The server is checked as it checks us: a socket someone else
        // managed to bind there must not get to name the files we open.
        runtime_core::peercred::check(&stream).map_err(|why| {
            CallError::Untrusted(format!(
                "refusing to talk to the server at {}: {why}",
                path.display()
            ))
        })?;
        Ok(RpcClient {
            stream,
            next_id: 1,
            timeout: None,
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

    /// Sends one request and waits for its reply.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, CallError> {
        let frame = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.round_trip(method, params))
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Transport(format!(
                        "{method}: no answer within {t:?}"
                    )))
                })?,
            None => self.round_trip(method, params).await?,
        };
        decode_reply(method, &frame)
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
        let frame = read_message(&mut self.stream)
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
        let req = Request {
            id: self.next_id,
            method: method.to_string(),
            params: serde_json::to_value(params)
                .map_err(|e| CallError::Transport(format!("encode {method}: {e}")))?,
        };
        self.next_id += 1;
        frame::encode_json(&req).map_err(|e| CallError::Transport(e.to_string()))
    }

    /// Reads the reply to the oldest request not yet answered.
    async fn read_reply(&mut self, method: &str) -> Result<Frame, CallError> {
        read_message(&mut self.stream)
            .await
            .map_err(|e| CallError::Transport(format!("{method}: {e}")))?
            .ok_or_else(|| CallError::Transport(format!("{method}: connection closed")))
    }
}

/// A reply as `Response` has it, its result decoded straight into `R`:
/// a `list` of thousands of containers decoded into a
/// `serde_json::Value` first and then copied into `R` cost the CLI as
/// much as berthd's whole answer.
#[derive(serde::Deserialize)]
#[serde(bound = "R: DeserializeOwned")]
struct Reply<R> {
    #[serde(default)]
    result: Option<R>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// The result (or the peer's error) of one reply frame. A reply with
/// neither is a null result, as [`Response::into_result`] reads it.
fn decode_reply<R: DeserializeOwned>(method: &str, frame: &Frame) -> Result<R, CallError> {
    let reply: Reply<R> = frame::decode_json(frame)
        .map_err(|e| CallError::Transport(format!("bad {method} reply: {e}")))?;
    match (reply.error, reply.result) {
        (Some(e), _) => Err(CallError::Remote(e)),
        (None, Some(r)) => Ok(r),
        (None, None) => serde_json::from_value(Value::Null)
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

/// The frames of one JSON message: one frame when it fits, else
/// `TAG_JSON_PART` frames ending with a `TAG_JSON` one.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, SendError> {
    let payload = serde_json::to_vec(value)?;
    if payload.len() > MAX_MESSAGE {
        return Err(SendError::TooLarge { len: payload.len() });
    }
    let mut out = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
    let mut chunks = payload.chunks(frame::MAX_PAYLOAD).peekable();
    if chunks.peek().is_none() {
        frame::encode_into(&mut out, frame::TAG_JSON, &[])
            .map_err(|e| SendError::Io(std::io::Error::other(e)))?;
    }
    while let Some(chunk) = chunks.next() {
        let tag = if chunks.peek().is_some() {
            TAG_JSON_PART
        } else {
            frame::TAG_JSON
        };
        frame::encode_into(&mut out, tag, chunk)
            .map_err(|e| SendError::Io(std::io::Error::other(e)))?;
    }
    Ok(out)
}

/// Writes one JSON message (in parts when large).
pub async fn write_message<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), SendError> {
    let bytes = encode_message(value)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Reads one JSON message, joining its parts (at most `MAX_MESSAGE`
/// bytes in all); `None` on EOF between messages.
pub async fn read_message<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<Frame>, String> {
    let mut joined: Vec<u8> = Vec::new();
    loop {
        let Some(f) = read_frame(r).await? else {
            return if joined.is_empty() {
                Ok(None)
            } else {
                Err("connection closed in the middle of a message".into())
            };
        };
        if joined.len() + f.payload.len() > MAX_MESSAGE {
            return Err(format!("message exceeds the limit of {MAX_MESSAGE} bytes"));
        }
        if f.tag != TAG_JSON_PART {
            if joined.is_empty() {
                return Ok(Some(f));
            }
            joined.extend_from_slice(&f.payload);
            return Ok(Some(Frame {
                tag: f.tag,
                payload: joined,
            }));
        }
        joined.extend_from_slice(&f.payload);
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

    /// A peer that answers nothing until it holds two requests, then
    /// answers hello (as `major`) and the second request; it returns the
    /// methods it got.
    async fn peer_wanting_two(listener: tokio::net::UnixListener, major: u32) -> Vec<String> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let f = read_frame(&mut s).await.unwrap().unwrap();
            got.push(frame::decode_json::<Request>(&f).unwrap());
        }
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
