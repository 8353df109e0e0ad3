//! Reads a container log back: all rotated files oldest first, then the
//! live one, following it across rotations when asked.
//!
//! The reader tracks files by inode, so a rotation that renames the file
//! it is reading never makes it skip or repeat a record.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::logfmt::{parse_line, Stream};
use crate::logwrite::rotated;

/// Incremental reader over a log and its rotated predecessors.
pub struct LogReader {
    path: PathBuf,
    current: Option<(File, u64)>,
    partial: Vec<u8>,
    chunk: Vec<u8>,
}

impl LogReader {
    /// Prepares to read the log at `path` from its oldest rotated file.
    pub fn new(path: &Path) -> Self {
        LogReader {
            path: path.to_owned(),
            current: None,
            partial: Vec::new(),
            chunk: vec![0u8; 64 * 1024],
        }
    }

    /// Existing files, oldest first, with their inodes.
    fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut n = 1;
        loop {
            let p = rotated(&self.path, n);
            match fs::metadata(&p) {
                Ok(m) => out.push((p, m.ino())),
                Err(_) => break,
            }
            n += 1;
        }
        out.reverse();
        if let Ok(m) = fs::metadata(&self.path) {
            out.push((self.path.clone(), m.ino()));
        }
        out
    }

    /// Opens the file after the current one; false if there is none yet.
    fn advance(&mut self) -> io::Result<bool> {
        let files = self.files();
        let next = match &self.current {
            None => files.first(),
            Some((_, ino)) => match files.iter().position(|(_, i)| i == ino) {
                Some(pos) => files.get(pos + 1),
                None => files.first(),
            },
        };
        let Some((path, ino)) = next.cloned() else {
            return Ok(false);
        };
        match File::open(&path) {
            Ok(f) => {
                self.current = Some((f, ino));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads everything available now and hands each record's original
    /// bytes to `emit`. Returns the number of content bytes emitted.
    pub fn read_available(&mut self, emit: &mut dyn FnMut(Stream, &[u8])) -> io::Result<u64> {
        let mut total = 0;
        if self.current.is_none() && !self.advance()? {
            return Ok(0);
        }
        loop {
            let Some((file, _)) = self.current.as_mut() else {
                return Ok(total);
            };
            let n = file.read(&mut self.chunk)?;
            if n > 0 {
                total += self.consume(n, emit);
                continue;
            }
            // EOF on this file: move on only if a newer file exists.
            let files = self.files();
            let cur_ino = self.current.as_ref().map(|(_, i)| *i);
            let is_live = files.last().map(|(_, i)| Some(*i) == cur_ino) == Some(true);
            if is_live || files.is_empty() {
                return Ok(total);
            }
            if !self.advance()? {
                return Ok(total);
            }
        }
    }

    fn consume(&mut self, n: usize, emit: &mut dyn FnMut(Stream, &[u8])) -> u64 {
        let mut total = 0;
        self.partial.extend_from_slice(&self.chunk[..n]);
        let mut start = 0;
        while let Some(off) = memchr::memchr(b'\n', &self.partial[start..]) {
            let line = &self.partial[start..start + off];
            if let Some(rec) = parse_line(line) {
                emit(rec.stream, rec.content);
                total += rec.content.len() as u64;
                if rec.full {
                    emit(rec.stream, b"\n");
                    total += 1;
                }
            }
            start += off + 1;
        }
        self.partial.drain(..start);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logwrite::LogWriter;
    use crate::meta::LogConfig;

    fn collect(r: &mut LogReader) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        r.read_available(&mut |s, b| match s {
            Stream::Stdout => out.extend_from_slice(b),
            Stream::Stderr => err.extend_from_slice(b),
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
}
