//! The CRI log line: `<RFC3339Nano> <stdout|stderr> <F|P> <content>\n`.
//!
//! `F` ends a line of the container's output (the newline is implied), `P`
//! is a part of a line whose rest follows in a later record. Kubernetes
//! tools (crictl, kubelet) read this format.
//!
//! A record's content is at most [`MAX_RECORD_CONTENT`] bytes (16 KiB, as
//! containerd and CRI-O split): a longer line becomes `P` records followed
//! by an `F`, so a log shipper with a fixed line buffer (fluent-bit's
//! default is 32 KiB) never meets a record it must cut.

/// The most content bytes one record carries.
pub const MAX_RECORD_CONTENT: usize = 16 * 1024;

/// Which output stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends the records for one chunk of output to `out`: one `F` record per
/// complete line and a `P` record for a trailing partial line; lines longer
/// than [`MAX_RECORD_CONTENT`] are split into `P` records first.
pub fn encode_chunk(out: &mut Vec<u8>, timestamp: &str, stream: Stream, data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        // One byte past the limit, so a newline right at it still ends an `F`.
        let window = &rest[..rest.len().min(MAX_RECORD_CONTENT + 1)];
        let (content, tag, used) = match memchr::memchr(b'\n', window) {
            Some(i) => (&rest[..i], b'F', i + 1),
            None => {
                let n = rest.len().min(MAX_RECORD_CONTENT);
                (&rest[..n], b'P', n)
            }
        };
        out.extend_from_slice(timestamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        out.extend_from_slice(content);
        out.push(b'\n');
        rest = &rest[used..];
    }
}

/// One parsed record.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a [u8],
    pub stream: Stream,
    /// True for `F`: the original output had a newline after `content`.
    pub full: bool,
    pub content: &'a [u8],
}

/// Parses one record (without its trailing newline); `None` if malformed.
pub fn parse_line(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"");
    Some(Record {
        timestamp,
        stream,
        full,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partials_round_trip() {
        let mut out = Vec::new();
        encode_chunk(&mut out, "T", Stream::Stdout, b"a b\n\nlast");
        assert_eq!(out, b"T stdout F a b\nT stdout F \nT stdout P last\n");
        let recs: Vec<_> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].content, b"a b");
        assert!(recs[1].full && recs[1].content.is_empty());
        assert!(!recs[2].full);
    }

    #[test]
    fn long_lines_are_split_at_16_kib() {
        let mut data = vec![b'a'; MAX_RECORD_CONTENT * 2 + 5];
        data.push(b'\n');
        // A newline exactly at the limit still ends the record as `F`.
        data.extend(vec![b'b'; MAX_RECORD_CONTENT]);
        data.push(b'\n');
        let mut out = Vec::new();
        encode_chunk(&mut out, "T", Stream::Stderr, &data);
        let recs: Vec<_> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).unwrap())
            .collect();
        let shape: Vec<_> = recs.iter().map(|r| (r.full, r.content.len())).collect();
        assert_eq!(
            shape,
            [
                (false, MAX_RECORD_CONTENT),
                (false, MAX_RECORD_CONTENT),
                (true, 5),
                (true, MAX_RECORD_CONTENT)
            ]
        );
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(parse_line(b"T stdin F x").is_none());
        assert!(parse_line(b"T stdout X x").is_none());
        assert!(parse_line(b"garbage").is_none());
    }
}
