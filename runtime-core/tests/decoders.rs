//! Property tests of the decoders that read what a peer or a file hands
//! us: the socket framing, the JSON messages inside frames, and the CRI log
//! records.
//!
//! The default test run tries proptest's default of 256 cases per
//! property. `scripts/proptest` runs a million per property in a release
//! build (`PROPTEST_CASES=1000000`); proptest reads that variable itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use proptest::collection::vec;
use proptest::prelude::*;

use runtime_core::attach::{AttachReply, AttachRequest};
use runtime_core::exit::ExitRecord;
use runtime_core::frame::{
    decode_json, encode_into, encode_json, read_frame, Decoder, Frame, HEADER_LEN, MAX_PAYLOAD,
    TAG_JSON,
};
use runtime_core::logfmt::{encode_chunk, parse_line, Stream, MAX_RECORD_CONTENT};
use runtime_core::protocol::{Hello, Request, Response, ShimState};
use runtime_core::Error;

/// Splits `bytes` at the given cut points (taken modulo the length), the
/// way a socket may hand them over.
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return vec![Vec::new()];
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c % bytes.len()).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// Everything the decoder yields for `bytes` fed in `pieces`: the frames,
/// then the error if one came.
fn decode_all(pieces: &[Vec<u8>]) -> (Vec<Frame>, Option<Error>) {
    let mut d = Decoder::default();
    let mut frames = Vec::new();
    for p in pieces {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// A payload mostly small, sometimes near the limit.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        100 => vec(any::<u8>(), 0..64),
        20 => vec(any::<u8>(), 0..4096),
        // Near the limit, rarely: a million cases must stay minutes.
        1 => (0usize..16, any::<u8>()).prop_map(|(d, b)| vec![b; MAX_PAYLOAD - d]),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Frames survive any split into reads, in order, and nothing is left.
    #[test]
    fn frames_round_trip_through_any_split(
        frames in vec((any::<u8>(), payload()), 0..8),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for (tag, p) in &frames {
            encode_into(&mut bytes, *tag, p).unwrap();
        }
        let (got, err) = decode_all(&chunks(&bytes, &cuts));
        prop_assert!(err.is_none());
        let want: Vec<Frame> = frames
            .into_iter()
            .map(|(tag, payload)| Frame { tag, payload })
            .collect();
        prop_assert_eq!(&got, &want);
        // The blocking reader agrees.
        let mut cur = Cursor::new(&bytes);
        for f in &want {
            prop_assert_eq!(read_frame(&mut cur).unwrap(), Some(f.clone()));
        }
        prop_assert!(read_frame(&mut cur).unwrap().is_none());
    }

    /// Any bytes at all: no panic, every frame within the limit, and the
    /// frames are exactly a prefix of the input; the blocking reader finds
    /// the same frames.
    #[test]
    fn arbitrary_bytes_never_break_the_decoder(
        bytes in vec(any::<u8>(), 0..2048),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let (frames, err) = decode_all(&chunks(&bytes, &cuts));
        let mut re = Vec::new();
        for f in &frames {
            prop_assert!(f.payload.len() <= MAX_PAYLOAD);
            encode_into(&mut re, f.tag, &f.payload).unwrap();
        }
        prop_assert!(bytes.starts_with(&re));
        if let Some(e) = &err {
            prop_assert!(matches!(e, Error::FrameTooLarge { .. }), "{e}");
        }
        let mut cur = Cursor::new(&bytes);
        for f in &frames {
            prop_assert_eq!(read_frame(&mut cur).unwrap(), Some(f.clone()));
        }
    }

    /// A header that announces more than the limit is refused as soon as
    /// the header is in, before any payload is buffered.
    #[test]
    fn oversized_headers_are_refused_at_once(tag in any::<u8>(), len in (MAX_PAYLOAD as u32 + 1)..) {
        let mut header = vec![tag];
        header.extend_from_slice(&len.to_be_bytes());
        prop_assert_eq!(header.len(), HEADER_LEN);
        let mut d = Decoder::default();
        d.push(&header);
        let refused = matches!(d.next_frame(), Err(Error::FrameTooLarge { .. }));
        prop_assert!(refused);
        let refused = matches!(read_frame(&mut Cursor::new(&header)), Err(Error::FrameTooLarge { .. }));
        prop_assert!(refused);
    }

    /// Requests with any method and params come back as sent.
    #[test]
    fn requests_round_trip(id in any::<u64>(), method in any::<String>(), params in json()) {
        let req = Request { id, method, params };
        let bytes = encode_json(&req).unwrap();
        let (frames, err) = decode_all(&[bytes]);
        prop_assert!(err.is_none());
        prop_assert_eq!(frames.len(), 1);
        let back: Request = decode_json(&frames[0]).unwrap();
        prop_assert_eq!(back.id, req.id);
        prop_assert_eq!(back.method, req.method);
        prop_assert_eq!(back.params, req.params);
    }

    /// Every message type's decoder takes any payload, JSON or not, and
    /// answers Ok or Err without panicking; a non-JSON tag is an error.
    #[test]
    fn json_decoders_take_any_payload(tag in any::<u8>(), payload in prop_oneof![
        vec(any::<u8>(), 0..256),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        any::<String>().prop_map(String::into_bytes),
    ]) {
        let f = Frame { tag, payload };
        let results = [
            decode_json::<Request>(&f).is_ok(),
            decode_json::<Response>(&f).is_ok(),
            decode_json::<Hello>(&f).is_ok(),
            decode_json::<ShimState>(&f).is_ok(),
            decode_json::<AttachRequest>(&f).is_ok(),
            decode_json::<AttachReply>(&f).is_ok(),
            decode_json::<ExitRecord>(&f).is_ok(),
        ];
        if tag != TAG_JSON {
            prop_assert!(results.iter().all(|ok| !ok));
        }
    }

    /// A valid request with bytes flipped, dropped or inserted: the
    /// decoders never panic.
    #[test]
    fn mutated_messages_never_panic(
        params in json(),
        edits in vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let req = Request { id: 7, method: "state".into(), params };
        let mut payload = serde_json::to_vec(&req).unwrap();
        for (at, byte, kind) in edits {
            let i = at % (payload.len() + 1);
            match kind {
                0 if i < payload.len() => payload[i] = byte,
                1 if i < payload.len() => { payload.remove(i); }
                _ => payload.insert(i, byte),
            }
        }
        let f = Frame { tag: TAG_JSON, payload };
        let _ = decode_json::<Request>(&f);
        let _ = decode_json::<Response>(&f);
        let _ = decode_json::<AttachRequest>(&f);
    }

    /// Any container output, in any chunks, becomes records of at most
    /// 16 KiB content that give the original bytes back, stream by stream.
    #[test]
    fn log_records_give_back_the_original_bytes(
        writes in vec((any::<bool>(), vec(prop_oneof![
            4 => vec(any::<u8>(), 0..200),
            1 => (0usize..40_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
            2 => Just(b"\n".to_vec()),
        ], 0..6).prop_map(|pieces| pieces.concat())), 0..6),
    ) {
        let mut log = Vec::new();
        let mut want = [Vec::new(), Vec::new()];
        for (err, data) in &writes {
            let stream = if *err { Stream::Stderr } else { Stream::Stdout };
            encode_chunk(&mut log, "2026-01-01T00:00:00.000000000Z", stream, data);
            want[usize::from(*err)].extend_from_slice(data);
        }
        let mut got = [Vec::new(), Vec::new()];
        prop_assert!(log.is_empty() || log.ends_with(b"\n"));
        let records = match log.split_last() {
            Some((_, body)) => body.split(|&b| b == b'\n').collect(),
            None => Vec::new(),
        };
        for line in records {
            let rec = parse_line(line).unwrap();
            prop_assert!(rec.content.len() <= MAX_RECORD_CONTENT);
            let slot = usize::from(rec.stream == Stream::Stderr);
            got[slot].extend_from_slice(rec.content);
            if rec.full {
                got[slot].push(b'\n');
            }
        }
        prop_assert_eq!(&got, &want);
    }

    /// The record parser takes any line without panicking, and what it
    /// accepts has a known stream and tag.
    #[test]
    fn log_line_parser_takes_any_line(line in prop_oneof![
        vec(any::<u8>(), 0..128),
        (any::<String>(), prop_oneof![Just("stdout"), Just("stderr"), Just("x")],
         prop_oneof![Just("F"), Just("P"), Just("")], vec(any::<u8>(), 0..64))
            .prop_map(|(t, s, g, c)| {
                let mut l = format!("{t} {s} {g} ").into_bytes();
                l.extend(c);
                l
            }),
    ]) {
        if let Some(rec) = parse_line(&line) {
            prop_assert!(line.starts_with(rec.timestamp));
            prop_assert!(line.ends_with(rec.content));
        }
    }
}
