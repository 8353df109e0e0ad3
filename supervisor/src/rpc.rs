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
        let mut client = RpcClient {
            stream,
            next_id: 1,
            timeout: None,
        };
        let reply: Hello = client.call("hello", &Hello::current(agent)).await?;
        reply.check_compatible().map_err(CallError::Remote)?;
        Ok(client)
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
        let value = self.call_value(method, params).await?;
        serde_json::from_value(value)
            .map_err(|e| CallError::Transport(format!("bad {method} reply: {e}")))
    }

    /// Like `call`, returning the raw JSON result.
    pub async fn call_value<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Value, CallError> {
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

    /// Sends a request without waiting for its reply: the server carries
    /// it out even if we hang up (used where the caller has nothing left
    /// to learn, like `run --rm`'s removal).
    pub async fn send_only<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<(), CallError> {
        let req = Request {
            id: self.next_id,
            method: method.to_string(),
            params: serde_json::to_value(params)
                .map_err(|e| CallError::Transport(format!("encode {method}: {e}")))?,
        };
        self.next_id += 1;
        let bytes = frame::encode_json(&req).map_err(|e| CallError::Transport(e.to_string()))?;
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

    async fn round_trip<P: Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        // The request is dropped once sent: berthd keeps one `wait` in
        // flight per container, so whatever lives across the reply's await
        // is memory per container.
        let bytes = {
            let req = Request {
                id,
                method: method.to_string(),
                params: serde_json::to_value(params)
                    .map_err(|e| CallError::Transport(format!("encode {method}: {e}")))?,
            };
            frame::encode_json(&req).map_err(|e| CallError::Transport(e.to_string()))?
        };
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send {method}: {e}")))?;
        drop(bytes);
        let frame = read_message(&mut self.stream)
            .await
            .map_err(|e| CallError::Transport(format!("{method}: {e}")))?
            .ok_or_else(|| CallError::Transport(format!("{method}: connection closed")))?;
        let resp: Response =
            frame::decode_json(&frame).map_err(|e| CallError::Transport(e.to_string()))?;
        resp.into_result().map_err(CallError::Remote)
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
