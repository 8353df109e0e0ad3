//! Reads a container log back: its segments oldest first, following the
//! newest as it grows and on into the next ones.
//!
//! The contract with the writer (`logwrite`): segment `log.N` is never
//! renamed, and the writer creates `log.N+1` before it stops appending to
//! `log.N`. So once `log.N+1` exists, one more read of `log.N` to its end
//! gives all of it, and the reader moves on by number, never by listing a
//! directory mid-rotation: every byte still on disk is read exactly once,
//! in order, with any number of readers. A segment that rotation deleted
//! before the reader reached it is skipped and counted ([`LogReader::skipped`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::logfmt::{parse_line, Record};
use crate::logwrite::{list_segments, segment};

/// How many times opening the next segment may lose a race with the
/// writer deleting it; each loss means rotation moved on, so this only
/// guards against a writer that rotates faster than we can open a file.
const OPEN_RACES: usize = 64;

/// What a reader hands out, in the order written.
#[derive(Debug)]
pub enum Event<'a> {
    /// One record.
    Record(Record<'a>),
    /// This many segments were deleted by rotation before the reader got
    /// to them: the output jumps (a line cut there has lost its end).
    Gap(u64),
}

struct Current {
    file: File,
    /// The segment number (for a legacy log: the file's inode).
    seq: u64,
}

/// Incremental reader over a log's segments.
pub struct LogReader {
    path: PathBuf,
    current: Option<Current>,
    /// The first segment still to open (0: the oldest there is).
    want: u64,
    /// Where to start in segment `want` (for `--tail`).
    want_offset: u64,
    skipped: u64,
    /// Skipped segments not yet reported as a [`Event::Gap`].
    gap: u64,
    /// `log` is a plain file: written by a shim from before segments (a
    /// live upgrade), which rotates by renaming `log` -> `log.1` -> ...
    legacy: bool,
    partial: Vec<u8>,
    chunk: Vec<u8>,
}

impl LogReader {
    /// Prepares to read the log at `path` (`<dir>/log`) from its oldest
    /// segment.
    pub fn new(path: &Path) -> Self {
        LogReader {
            path: path.to_owned(),
            current: None,
            want: 0,
            want_offset: 0,
            skipped: 0,
            gap: 0,
            legacy: std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()),
            partial: Vec::new(),
            chunk: vec![0u8; 64 * 1024],
        }
    }

    /// Prepares to read only the last `lines` lines of the log (and what
    /// follows, when following). A line ends with an `F` record; an
    /// unfinished last line counts as one.
    pub fn tail(path: &Path, lines: u64) -> io::Result<Self> {
        let mut r = LogReader::new(path);
        if r.legacy {
            // An older shim's log: shown whole.
            return Ok(r);
        }
        let segs = list_segments(path)?;
        // Line ends still to find, counting back from the end.
        let mut need = lines.saturating_add(1);
        let mut newest_record = true;
        for &seq in segs.iter().rev() {
            let file = match File::open(segment(path, seq)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let scan = scan_line_ends(file, need, newest_record)?;
            if scan.records > 0 {
                newest_record = false;
            }
            if scan.count >= need {
                r.want = seq;
                r.want_offset = scan.last[0];
                return Ok(r);
            }
            need -= scan.count;
            r.want = seq;
        }
        Ok(r)
    }

    /// Segments rotation removed before this reader got to them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Reads everything available now and hands each record to `emit`, in
    /// the order written.
    pub fn read_available(&mut self, emit: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        if self.legacy {
            return self.read_legacy(emit);
        }
        loop {
            if self.current.is_none() && !self.open_wanted()? {
                return Ok(());
            }
            if self.gap > 0 {
                emit(Event::Gap(self.gap));
                self.gap = 0;
            }
            self.drain(emit)?;
            let Some(seq) = self.current.as_ref().map(|c| c.seq) else {
                return Ok(());
            };
            let next = if exists(&segment(&self.path, seq + 1))? {
                seq + 1
            } else if exists(&segment(&self.path, seq))? {
                // The newest segment: wait for more.
                return Ok(());
            } else {
                // Deleted under us: we fell behind by more than max_files
                // segments, or the container was removed.
                // (`open_wanted` counts what was skipped.)
                match list_segments(&self.path) {
                    Ok(segs) if segs.iter().any(|&n| n > seq) => seq + 1,
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            // A newer segment exists, so this one is complete: read what
            // was appended since our last read, then move on.
            self.drain(emit)?;
            // A record cut short (the shim died mid-write) is not glued to
            // the next segment's first record.
            self.partial.clear();
            self.current = None;
            self.want = next;
            self.want_offset = 0;
        }
    }

    /// Opens segment `want` or, if rotation deleted it, the oldest after
    /// it. False if there is none yet.
    fn open_wanted(&mut self) -> io::Result<bool> {
        for _ in 0..OPEN_RACES {
            let seq = if self.want > 0 && exists(&segment(&self.path, self.want))? {
                self.want
            } else {
                let segs = match list_segments(&self.path) {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                };
                match segs.into_iter().find(|&n| n >= self.want) {
                    Some(n) => n,
                    None => return Ok(false),
                }
            };
            let mut file = match File::open(segment(&self.path, seq)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if self.want > 0 && seq > self.want {
                self.skipped += seq - self.want;
                self.gap += seq - self.want;
            }
            if seq == self.want && self.want_offset > 0 {
                file.seek(SeekFrom::Start(self.want_offset))?;
            }
            self.current = Some(Current { file, seq });
            self.want = seq;
            self.want_offset = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// The same for a log an older shim writes: its files listed oldest
    /// first (`log.K` ... `log.1`, `log`) and followed by inode. Listing
    /// mid-rotation can still skip a file here; only a new shim's
    /// segments are exact.
    fn read_legacy(&mut self, emit: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        loop {
            if self.current.is_none() && !self.advance_legacy()? {
                return Ok(());
            }
            self.drain(emit)?;
            let files = legacy_files(&self.path);
            let ino = self.current.as_ref().map(|c| c.seq);
            if files.is_empty() || files.last().map(|f| f.1) == ino {
                return Ok(());
            }
            // Rotated away: what was appended before the rename, then on.
            self.drain(emit)?;
            self.partial.clear();
            if !self.advance_legacy()? {
                return Ok(());
            }
        }
    }

    fn advance_legacy(&mut self) -> io::Result<bool> {
        let files = legacy_files(&self.path);
        let next = match &self.current {
            None => files.first(),
            Some(c) => match files.iter().position(|f| f.1 == c.seq) {
                Some(i) => files.get(i + 1),
                None => files.first(),
            },
        };
        let Some((path, ino)) = next.cloned() else {
            return Ok(false);
        };
        match File::open(&path) {
            Ok(file) => {
                self.current = Some(Current { file, seq: ino });
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the current segment to its end, emitting complete records.
    fn drain(&mut self, emit: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        loop {
            let n = match cur.file.read(&mut self.chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.partial.extend_from_slice(&self.chunk[..n]);
            let mut start = 0;
            while let Some(off) = memchr::memchr(b'\n', &self.partial[start..]) {
                if let Some(rec) = parse_line(&self.partial[start..start + off]) {
                    emit(Event::Record(rec));
                }
                start += off + 1;
            }
            self.partial.drain(..start);
        }
    }
}

/// A legacy log's files, oldest first, with their inodes.
fn legacy_files(path: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for n in 1.. {
        let p = segment(path, n);
        match std::fs::metadata(&p) {
            Ok(m) => out.push((p, m.ino())),
            Err(_) => break,
        }
    }
    out.reverse();
    if let Ok(m) = std::fs::metadata(path) {
        out.push((path.to_owned(), m.ino()));
    }
    out
}

fn exists(p: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Line ends found in one segment, for `--tail`.
struct LineEnds {
    /// How many.
    count: u64,
    /// The offsets of the last few (up to the number asked for).
    last: VecDeque<u64>,
    /// Complete records seen.
    records: u64,
}

/// Scans a segment for the offsets just past each line's last record,
/// keeping the last `keep`. With `newest`, an unfinished line at the end
/// (trailing `P` records) counts as a line too.
fn scan_line_ends(file: File, keep: u64, newest: bool) -> io::Result<LineEnds> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut out = LineEnds {
        count: 0,
        last: VecDeque::new(),
        records: 0,
    };
    let mut offset = 0u64;
    let mut last_full = true;
    let push = |out: &mut LineEnds, at: u64| {
        out.count += 1;
        out.last.push_back(at);
        if out.last.len() as u64 > keep {
            out.last.pop_front();
        }
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        offset += n as u64;
        let Some(rec) = parse_line(&line[..n - 1]) else {
            continue;
        };
        out.records += 1;
        last_full = rec.full;
        if rec.full {
            push(&mut out, offset);
        }
    }
    if newest && !last_full {
        push(&mut out, offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logfmt::Stream;
    use crate::logwrite::LogWriter;
    use crate::meta::LogConfig;

    fn collect(r: &mut LogReader) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        r.read_available(&mut |ev| {
            let Event::Record(rec) = ev else { return };
            let dst = match rec.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            dst.extend_from_slice(rec.content);
            if rec.full {
                dst.push(b'\n');
            }
        })
        .unwrap();
        (out, err)
    }

    #[test]
    fn reads_original_bytes_across_rotation_while_following() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 300,
            max_files: 10,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        let mut r = LogReader::new(&path);
        let mut expect = Vec::new();
        let mut got = Vec::new();
        for i in 0..60 {
            let chunk = format!("n{i}-");
            let chunk = if i % 3 == 2 { chunk + "\n" } else { chunk };
            w.write(Stream::Stdout, chunk.as_bytes()).unwrap();
            w.write(Stream::Stderr, b"e\n").unwrap();
            expect.extend_from_slice(chunk.as_bytes());
            if i % 7 == 0 {
                got.extend(collect(&mut r).0);
            }
        }
        got.extend(collect(&mut r).0);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(expect).unwrap()
        );
        assert_eq!(r.skipped(), 0);
    }

    #[test]
    fn fresh_reader_starts_at_oldest_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 100,
            max_files: 100,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        for i in 0..30 {
            w.write(Stream::Stderr, format!("{i}\n").as_bytes())
                .unwrap();
        }
        let (out, err) = collect(&mut LogReader::new(&path));
        assert!(out.is_empty());
        let want: String = (0..30).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(err).unwrap(), want);
    }

    #[test]
    fn bytes_appended_just_before_a_rotation_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 64,
            max_files: 50,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        let mut r = LogReader::new(&path);
        let mut got = Vec::new();
        for i in 0..200 {
            // Read after every write: the reader often sits at the end of
            // the newest segment when the next write rotates it.
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
            got.extend(collect(&mut r).0);
        }
        let want: String = (0..200).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn a_reader_that_falls_behind_skips_deleted_segments_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 40,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        w.write(Stream::Stdout, b"first\n").unwrap();
        let mut r = LogReader::new(&path);
        let (out, _) = collect(&mut r);
        assert_eq!(out, b"first\n");
        for i in 0..40 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        let mut gaps = Vec::new();
        let mut out = Vec::new();
        r.read_available(&mut |ev| match ev {
            Event::Gap(n) => gaps.push((n, out.len())),
            Event::Record(rec) => {
                out.extend_from_slice(rec.content);
                out.push(b'\n');
            }
        })
        .unwrap();
        assert!(r.skipped() > 0);
        // One gap, reported before the first record after it.
        assert_eq!(gaps, [(r.skipped(), 0)]);
        // What is left is read in order and ends with the last line.
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("39\n"), "{text}");
        let nums: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert!(nums.windows(2).all(|p| p[1] == p[0] + 1), "{nums:?}");
    }

    #[test]
    fn tail_starts_at_the_last_lines_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 100,
            max_files: 100,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        for i in 0..50 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        for (n, want) in [
            (0, String::new()),
            (1, "49\n".to_owned()),
            (12, (38..50).map(|i| format!("{i}\n")).collect()),
            (1000, (0..50).map(|i| format!("{i}\n")).collect()),
        ] {
            let (out, _) = collect(&mut LogReader::tail(&path, n).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), want, "tail {n}");
        }
        // An unfinished last line is one of the lines.
        w.write(Stream::Stdout, b"part").unwrap();
        let (out, _) = collect(&mut LogReader::tail(&path, 2).unwrap());
        assert_eq!(out, b"49\npart");
        // Reading on after the tail sees the new output.
        let mut r = LogReader::tail(&path, 0).unwrap();
        assert!(collect(&mut r).0.is_empty());
        w.write(Stream::Stdout, b"more\n").unwrap();
        assert_eq!(collect(&mut r).0, b"more\n");
    }

    /// The issue-9 reproduction in small: thousands of segments written as
    /// fast as possible while several followers read; every follower must
    /// see every line exactly once, in order.
    #[test]
    fn several_followers_see_every_line_once_under_fast_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 512,
            max_files: 10_000,
        };
        let lines = 40_000u32;
        let mut w = LogWriter::open(&path, config).unwrap();
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut r = LogReader::new(&path);
                    let mut text = Vec::new();
                    while !text.ends_with(b"end\n") {
                        text.extend(collect(&mut r).0);
                        std::thread::yield_now();
                    }
                    (text, r.skipped())
                })
            })
            .collect();
        let mut i = 0;
        while i < lines {
            // Chunks of 1..=17 lines, like pipe reads of varying size.
            let n = (i % 17 + 1).min(lines - i);
            let chunk: String = (i..i + n).map(|k| format!("{k}\n")).collect();
            w.write(Stream::Stdout, chunk.as_bytes()).unwrap();
            i += n;
        }
        w.write(Stream::Stdout, b"end\n").unwrap();
        assert!(w.current_segment() > 1000, "{}", w.current_segment());
        for f in followers {
            let (text, skipped) = f.join().unwrap();
            assert_eq!(skipped, 0);
            let text = String::from_utf8(text).unwrap();
            let mut expect = 0u32;
            for line in text.lines().filter(|l| *l != "end") {
                let n: u32 = line.parse().unwrap();
                assert_eq!(n, expect, "gap or duplicate");
                expect += 1;
            }
            assert_eq!(expect, lines);
        }
    }

    #[test]
    fn a_log_from_an_older_shim_is_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(segment(&path, 2), "T stdout F one\n").unwrap();
        std::fs::write(segment(&path, 1), "T stdout F two\n").unwrap();
        std::fs::write(&path, "T stdout F three\n").unwrap();
        let mut r = LogReader::new(&path);
        assert_eq!(collect(&mut r).0, b"one\ntwo\nthree\n");
        // That shim rotates by renaming; the reader follows the inode.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"T stdout F four\n"))
            .unwrap();
        std::fs::rename(segment(&path, 2), segment(&path, 3)).unwrap();
        std::fs::rename(segment(&path, 1), segment(&path, 2)).unwrap();
        std::fs::rename(&path, segment(&path, 1)).unwrap();
        std::fs::write(&path, "T stdout F five\n").unwrap();
        assert_eq!(collect(&mut r).0, b"four\nfive\n");
    }

    #[test]
    fn a_single_kept_file_still_gives_a_close_follower_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 64,
            max_files: 1,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        let mut r = LogReader::new(&path);
        let mut got = Vec::new();
        for i in 0..300 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
            got.extend(collect(&mut r).0);
        }
        assert_eq!(list_segments(&path).unwrap().len(), 1);
        let want: String = (0..300).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), want);
        assert_eq!(r.skipped(), 0);
    }
}
