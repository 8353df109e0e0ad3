//! The one framing used on every berth socket: `[tag: u8][len: u32 BE][len bytes]`.
//!
//! Control messages are JSON frames (tag 0); the attach stream adds binary
//! tags for stdio, resize and exit. Every frame is bounded, so a peer can
//! never make us allocate more than `MAX_PAYLOAD`.

use std::io::{self, Read, Write};

use crate::{Error, Result};

/// Largest payload accepted on any socket.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Size of the frame header.
pub const HEADER_LEN: usize = 5;
/// Tag of a JSON message frame.
pub const TAG_JSON: u8 = 0;

/// A frame header, its length already checked against `MAX_PAYLOAD`.
///
/// The one place a header is read: the shim's decoder, the blocking and the
/// async readers and the CLI's zero-copy attach reader all go through
/// [`Header::parse`], so the limit and the byte order live in one spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Payload length in bytes (at most `MAX_PAYLOAD`).
    pub len: usize,
}

impl Header {
    /// Parses the header at the start of `bytes`: `Ok(None)` while fewer
    /// than `HEADER_LEN` bytes are there, an error as soon as a header
    /// announces more than `MAX_PAYLOAD` (before anything is buffered).
    pub fn parse(bytes: &[u8]) -> Result<Option<Header>> {
        bytes.first_chunk().map(Header::decode).transpose()
    }

    /// Decodes a complete header read from a stream.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        let [tag, l0, l1, l2, l3] = *bytes;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len > MAX_PAYLOAD {
            return Err(Error::FrameTooLarge {
                len,
                limit: MAX_PAYLOAD,
            });
        }
        Ok(Header { tag, len })
    }

    /// Header plus payload: the bytes the whole frame takes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }

    /// The payload of this frame in `bytes` (which starts with the header),
    /// or `None` while it has not all arrived.
    pub fn payload<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        bytes.get(HEADER_LEN..self.frame_len())
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub payload: Vec<u8>,
}

/// Appends an encoded frame to `out` (no allocation beyond `out` growing).
pub fn encode_into(out: &mut Vec<u8>, tag: u8, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::FrameTooLarge {
            len: payload.len(),
            limit: MAX_PAYLOAD,
        });
    }
    out.reserve(HEADER_LEN + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Encodes a JSON message frame.
pub fn encode_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(value).map_err(|e| Error::Protocol(format!("encode: {e}")))?;
    let mut out = Vec::new();
    encode_into(&mut out, TAG_JSON, &payload)?;
    Ok(out)
}

/// Parses a JSON payload (which `T` may borrow from), saying what was
/// wrong with it.
pub fn decode_json<'de, T: serde::Deserialize<'de>>(frame: &'de Frame) -> Result<T> {
    if frame.tag != TAG_JSON {
        return Err(Error::Protocol(format!(
            "expected a JSON frame, got tag {}",
            frame.tag
        )));
    }
    serde_json::from_slice(&frame.payload)
        .map_err(|e| Error::Protocol(format!("malformed message: {e}")))
}

/// Incremental decoder for non-blocking sockets: feed bytes, take frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Adds bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the next complete frame, or `None` if more bytes are needed.
    /// A header announcing more than `MAX_PAYLOAD` is an error at once.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let avail = &self.buf[self.start..];
        let Some(header) = Header::parse(avail)? else {
            return Ok(None);
        };
        let Some(payload) = header.payload(avail) else {
            return Ok(None);
        };
        let frame = Frame {
            tag: header.tag,
            payload: payload.to_vec(),
        };
        self.start += header.frame_len();
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// Reads one frame from a blocking stream; `None` on a clean EOF between frames.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Protocol("connection closed mid-frame".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Protocol(format!("read: {e}"))),
        }
    }
    let header = Header::decode(&header)?;
    let mut payload = vec![0u8; header.len];
    r.read_exact(&mut payload)
        .map_err(|e| Error::Protocol(format!("read: {e}")))?;
    Ok(Some(Frame {
        tag: header.tag,
        payload,
    }))
}

/// Writes one frame to a blocking stream.
pub fn write_frame<W: Write>(w: &mut W, tag: u8, payload: &[u8]) -> Result<()> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut out, tag, payload)?;
    w.write_all(&out)
        .map_err(|e| Error::Protocol(format!("write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_handles_split_and_joined_frames() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, 2, b"hello").unwrap();
        encode_into(&mut bytes, 3, b"").unwrap();
        let mut dec = Decoder::default();
        let mut frames = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, b"hello");
        assert_eq!(frames[1].tag, 3);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn oversized_header_is_rejected_before_buffering() {
        let mut dec = Decoder::default();
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        let err = dec.next_frame().unwrap_err().to_string();
        assert!(err.contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn header_parse_waits_for_five_bytes_and_checks_the_limit() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, 7, b"abc").unwrap();
        for cut in 0..HEADER_LEN {
            assert_eq!(Header::parse(&bytes[..cut]).unwrap(), None);
        }
        let h = Header::parse(&bytes).unwrap().unwrap();
        assert_eq!(h, Header { tag: 7, len: 3 });
        assert_eq!(h.frame_len(), bytes.len());
        assert_eq!(h.payload(&bytes), Some(&b"abc"[..]));
        assert_eq!(h.payload(&bytes[..bytes.len() - 1]), None);
        let mut at_limit = vec![1u8];
        at_limit.extend_from_slice(&(MAX_PAYLOAD as u32).to_be_bytes());
        assert_eq!(Header::parse(&at_limit).unwrap().unwrap().len, MAX_PAYLOAD);
        let mut over = vec![1u8];
        over.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(matches!(
            Header::parse(&over),
            Err(Error::FrameTooLarge { len, .. }) if len == MAX_PAYLOAD + 1
        ));
    }

    #[test]
    fn blocking_read_reports_truncation() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, 0, b"{}").unwrap();
        bytes.truncate(6);
        let err = read_frame(&mut &bytes[..]).unwrap_err().to_string();
        assert!(err.contains("read"), "{err}");
        assert!(read_frame(&mut &b""[..]).unwrap().is_none());
    }

    #[test]
    fn garbage_json_names_the_problem() {
        let frame = Frame {
            tag: TAG_JSON,
            payload: b"\x01\x02garbage".to_vec(),
        };
        let err = decode_json::<serde_json::Value>(&frame)
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed message"), "{err}");
    }
}
