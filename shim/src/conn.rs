//! A framed, non-blocking socket connection with an output queue whose
//! size its owner watches (see `attach` for the bound on clients).
//!
//! Used for control and attach clients alike: read until WouldBlock (or a
//! byte budget) into a frame decoder, queue replies, flush until
//! WouldBlock. The queue itself takes whatever it is given: its owners
//! watch `queued` and stop feeding, cut off or drop a client past their
//! own bounds (`control`, `attach`).

use std::io::{self, Read, Write};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use runtime_core::frame::{self, Decoder, Frame};

/// Hands out the poll tokens of connections and pipes, never one twice.
pub struct Tokens(usize);

impl Tokens {
    /// Tokens from `first` on (those below are the loop's fixed ones).
    pub fn starting_at(first: usize) -> Self {
        Tokens(first)
    }

    pub fn next(&mut self) -> Token {
        let t = Token(self.0);
        self.0 += 1;
        t
    }
}

/// The next pending connection on a listener; `None` when there is none
/// (or accept failed, which is logged).
pub fn accept_one(listener: &UnixListener, what: &str) -> Option<UnixStream> {
    match listener.accept() {
        Ok((stream, _)) => Some(stream),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            log::warn!("accept {what}: {e}");
            None
        }
    }
}

/// Checks a new client (peer credentials, client limit) and registers it
/// under `token` for `interest`; on refusal, the stream and the reason.
pub fn admit(
    registry: &Registry,
    mut stream: UnixStream,
    (token, interest): (Token, Interest),
    connected: usize,
    limit: usize,
) -> Result<UnixStream, (UnixStream, String)> {
    if let Err(why) = runtime_core::peercred::check(&stream) {
        return Err((stream, format!("refused: {why}")));
    }
    if connected >= limit {
        return Err((
            stream,
            format!("refused: {limit} clients already connected"),
        ));
    }
    match registry.register(&mut stream, token, interest) {
        Ok(()) => Ok(stream),
        Err(e) => Err((stream, format!("refused: register: {e}"))),
    }
}

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
    /// Stream offsets: bytes ever queued and ever sent, and where each
    /// queued frame ends, so a cut never splits a frame.
    queued_total: u64,
    sent_total: u64,
    frame_ends: std::collections::VecDeque<u64>,
}

impl Conn {
    /// Wraps an accepted stream.
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            decoder: Decoder::default(),
            out: Vec::new(),
            out_start: 0,
            queued_total: 0,
            sent_total: 0,
            frame_ends: Default::default(),
        }
    }

    /// Reads available bytes, about `budget` at most, and returns the
    /// complete frames.
    pub fn read_frames_bounded(
        &mut self,
        frames: &mut Vec<Frame>,
        budget: usize,
    ) -> runtime_core::Result<ReadOutcome> {
        // Small on purpose: stack pages once touched stay resident in every shim.
        let mut buf = [0u8; 16 * 1024];
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

    /// Queues a frame; callers bound the queue by watching `queued`.
    pub fn queue_always(&mut self, tag: u8, payload: &[u8]) {
        if self.out_start > 0 && self.out_start * 2 > self.out.len() {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        let before = self.out.len();
        if frame::encode_into(&mut self.out, tag, payload).is_ok() {
            self.queued_total += (self.out.len() - before) as u64;
            self.frame_ends.push_back(self.queued_total);
        }
    }

    /// Drops every queued frame not yet begun on the wire; the frame in
    /// flight, if any, is kept so the peer's framing stays intact.
    pub fn discard_unsent_frames(&mut self) {
        match self.frame_ends.front().copied() {
            Some(end) if end > self.sent_total => {
                let keep = (end - self.sent_total) as usize;
                self.out.truncate(self.out_start + keep);
                self.queued_total = end;
                self.frame_ends.clear();
                self.frame_ends.push_back(end);
            }
            _ => {
                self.out.clear();
                self.out_start = 0;
                self.queued_total = self.sent_total;
                self.frame_ends.clear();
            }
        }
    }

    /// Writes queued bytes until done or WouldBlock; Err means the peer is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_start < self.out.len() {
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_start += n;
                    self.sent_total += n as u64;
                    while self
                        .frame_ends
                        .front()
                        .is_some_and(|&e| e <= self.sent_total)
                    {
                        self.frame_ends.pop_front();
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::frame::{read_frame, Decoder};

    #[test]
    fn cut_keeps_the_frame_in_flight_and_delivers_the_reason() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(UnixStream::from_std(a));
        let payload = vec![7u8; 50_000];
        while conn.queued() < 1 << 20 {
            conn.queue_always(2, &payload);
            conn.flush().unwrap();
        }
        conn.discard_unsent_frames();
        conn.queue_always(9, b"bye");
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut tags = Vec::new();
            while let Ok(Some(f)) = read_frame(&mut b) {
                tags.push(f.tag);
            }
            tags
        });
        while conn.queued() > 0 {
            conn.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(conn);
        let tags = reader.join().unwrap();
        assert_eq!(
            tags.last(),
            Some(&9),
            "{} frames, last {:?}",
            tags.len(),
            tags.last()
        );
        let _ = Decoder::default();
    }
}
