//! A framed, non-blocking socket connection with a bounded output queue.
//!
//! Used for control and attach clients alike: read until WouldBlock into
//! a frame decoder, queue replies, flush until WouldBlock. The queue has a
//! hard limit so a client that stops reading costs at most that much.

use std::io::{self, Read, Write};

use mio::net::UnixStream;
use runtime_core::frame::{self, Decoder, Frame};

/// Result of reading from a connection.
pub enum ReadOutcome {
    /// Still open; frames may have been decoded.
    Open,
    /// The peer closed its side.
    Closed,
    /// The read budget ran out before WouldBlock: read again later.
    More,
}

/// One client connection.
pub struct Conn {
    pub stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    out_start: usize,
    limit: usize,
}

impl Conn {
    /// Wraps an accepted stream; `limit` bounds the unsent output.
    pub fn new(stream: UnixStream, limit: usize) -> Self {
        Conn {
            stream,
            decoder: Decoder::default(),
            out: Vec::new(),
            out_start: 0,
            limit,
        }
    }

    /// Reads all available bytes and returns the complete frames.
    pub fn read_frames(&mut self, frames: &mut Vec<Frame>) -> runtime_core::Result<ReadOutcome> {
        self.read_frames_bounded(frames, usize::MAX)
    }

    /// Like `read_frames`, but stops after about `budget` bytes.
    pub fn read_frames_bounded(
        &mut self,
        frames: &mut Vec<Frame>,
        budget: usize,
    ) -> runtime_core::Result<ReadOutcome> {
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0usize;
        let outcome = loop {
            if total >= budget {
                break ReadOutcome::More;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => break ReadOutcome::Closed,
                Ok(n) => {
                    total += n;
                    self.decoder.push(&buf[..n]);
                    // Decode as we go so a huge announced frame fails early.
                    while let Some(f) = self.decoder.next_frame()? {
                        frames.push(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break ReadOutcome::Closed,
            }
        };
        while let Some(f) = self.decoder.next_frame()? {
            frames.push(f);
        }
        Ok(outcome)
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// Queues one frame; false (and nothing queued) if it would pass the limit.
    pub fn queue(&mut self, tag: u8, payload: &[u8]) -> bool {
        if self.queued() + payload.len() + frame::HEADER_LEN > self.limit {
            return false;
        }
        if self.out_start > 0 && self.out_start * 2 > self.out.len() {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        frame::encode_into(&mut self.out, tag, payload).is_ok()
    }

    /// Queues a frame whatever the limit (small control replies, errors).
    pub fn queue_always(&mut self, tag: u8, payload: &[u8]) {
        let _ = frame::encode_into(&mut self.out, tag, payload);
    }

    /// Drops everything queued (before cutting a client off).
    pub fn discard_queued(&mut self) {
        self.out.clear();
        self.out_start = 0;
    }

    /// Writes queued bytes until done or WouldBlock; Err means the peer is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_start < self.out.len() {
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_start = 0;
        Ok(())
    }
}
