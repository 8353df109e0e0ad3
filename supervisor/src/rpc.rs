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
        let frame = read_frame(&mut self.stream)
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
        let req = Request {
            id,
            method: method.to_string(),
            params: serde_json::to_value(params)
                .map_err(|e| CallError::Transport(format!("encode {method}: {e}")))?,
        };
        let bytes = frame::encode_json(&req).map_err(|e| CallError::Transport(e.to_string()))?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| CallError::Transport(format!("send {method}: {e}")))?;
        let frame = read_frame(&mut self.stream)
            .await
            .map_err(|e| CallError::Transport(format!("{method}: {e}")))?
            .ok_or_else(|| CallError::Transport(format!("{method}: connection closed")))?;
        let resp: Response =
            frame::decode_json(&frame).map_err(|e| CallError::Transport(e.to_string()))?;
        resp.into_result().map_err(CallError::Remote)
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
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > frame::MAX_PAYLOAD {
        return Err(format!(
            "frame of {len} bytes exceeds the limit of {} bytes",
            frame::MAX_PAYLOAD
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(Some(Frame {
        tag: header[0],
        payload,
    }))
}
