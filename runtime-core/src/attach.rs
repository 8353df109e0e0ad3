//! The attach protocol, spoken by a client straight to a shim's attach socket.
//!
//! The client sends a JSON handshake frame (`AttachRequest`), the shim
//! answers with a JSON frame (`AttachReply`), then both sides exchange
//! binary frames (see `frame`) tagged by stream. Output in tty mode travels
//! as `TAG_STDOUT` frames too, so resize and exit can share the socket.

use serde::{Deserialize, Serialize};

/// Client -> shim: bytes for the container's stdin; an empty payload closes it.
pub const TAG_STDIN: u8 = 1;
/// Shim -> client: container stdout (or the tty's output).
pub const TAG_STDOUT: u8 = 2;
/// Shim -> client: container stderr.
pub const TAG_STDERR: u8 = 3;
/// Client -> shim: terminal size, `rows: u16 BE, cols: u16 BE`.
pub const TAG_RESIZE: u8 = 4;
/// Shim -> client: the container exited; payload is a JSON `ExitRecord`.
/// Sent after all output the container wrote.
pub const TAG_EXIT: u8 = 5;
/// Client -> shim: the client is leaving; the container keeps running.
pub const TAG_DETACH: u8 = 6;
/// Shim -> client: the shim is cutting this client off; payload is UTF-8 text.
pub const TAG_ERROR: u8 = 7;

/// Largest data payload the shim sends in one frame.
pub const MAX_DATA_FRAME: usize = 64 * 1024;

/// The client's handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachRequest {
    pub major: u32,
    #[serde(default)]
    pub minor: u32,
    /// Forward our input to the container's stdin.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default = "yes")]
    pub stdout: bool,
    #[serde(default = "yes")]
    pub stderr: bool,
    /// Attach to this exec'd process instead of the container's init
    /// (since protocol 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// The shim's answer to the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachReply {
    /// `None` when attached; otherwise why not.
    #[serde(default)]
    pub error: Option<String>,
    /// The container has a tty (raw mode on the client side makes sense).
    #[serde(default)]
    pub tty: bool,
    /// The container was created with an open stdin.
    #[serde(default)]
    pub stdin_open: bool,
    /// The container already exited: an exit frame follows at once.
    #[serde(default)]
    pub exited: bool,
}

/// Encodes a terminal size as a resize payload.
pub fn encode_resize(rows: u16, cols: u16) -> [u8; 4] {
    let r = rows.to_be_bytes();
    let c = cols.to_be_bytes();
    [r[0], r[1], c[0], c[1]]
}

/// Decodes a resize payload.
pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [r0, r1, c0, c1] => Some((
            u16::from_be_bytes([*r0, *r1]),
            u16::from_be_bytes([*c0, *c1]),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_round_trips_and_rejects_bad_length() {
        assert_eq!(decode_resize(&encode_resize(24, 80)), Some((24, 80)));
        assert_eq!(decode_resize(&[1, 2, 3]), None);
    }

    #[test]
    fn handshake_defaults_to_output_only() {
        let req: AttachRequest = serde_json::from_str(r#"{"major":1}"#).unwrap();
        assert!(req.stdout && req.stderr && !req.stdin);
    }
}
