//! The shim's log writer: CRI records with size-based rotation.
//!
//! One `write` per chunk read from the container, no fsync per line (the
//! page cache survives a shim or berthd crash; only a host crash loses the
//! tail, as with every peer). Rotation renames `log` -> `log.1` -> ... and
//! drops the oldest beyond `max_files`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::logfmt::{encode_chunk, Stream};
use crate::meta::LogConfig;
use crate::{Error, Result};

/// Appends container output to `<dir>/log` in CRI format.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    config: LogConfig,
    buf: Vec<u8>,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("open log", path, e))
}

/// The path of the `n`th rotated file (`log.n`).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl LogWriter {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, config: LogConfig) -> Result<Self> {
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(LogWriter {
            path: path.to_owned(),
            file,
            size,
            config,
            // Grown on first output: an idle container's shim never touches it.
            buf: Vec::new(),
        })
    }

    /// Records one chunk of output from `stream`. A chunk holding many
    /// lines may rotate several times: the limit holds per record.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        encode_chunk(&mut buf, &crate::time::now_rfc3339(), stream, data);
        let result = self.write_records(&buf);
        self.buf = buf;
        result
    }

    fn write_records(&mut self, buf: &[u8]) -> Result<()> {
        let limit = self.config.max_size;
        let (mut start, mut pos) = (0, 0);
        while limit > 0 && pos < buf.len() {
            let rec_end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i + 1);
            let pending = (pos - start) as u64;
            if self.size + pending + (rec_end - pos) as u64 > limit && self.size + pending > 0 {
                self.append(&buf[start..pos])?;
                self.rotate()?;
                start = pos;
            }
            pos = rec_end;
        }
        self.append(&buf[start..])
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("write log", &self.path, e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            fs::remove_file(&self.path).map_err(|e| Error::io("remove", &self.path, e))?;
        } else {
            let oldest = rotated(&self.path, keep - 1);
            match fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &oldest, e)),
            }
            for n in (1..keep - 1).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    let to = rotated(&self.path, n + 1);
                    fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
                }
            }
            let first = rotated(&self.path, 1);
            fs::rename(&self.path, &first).map_err(|e| Error::io("rename", &self.path, e))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 200,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(path.exists());
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1)] {
            assert!(fs::metadata(&p).unwrap().len() <= 200);
        }
        let last = fs::read_to_string(&path).unwrap();
        assert!(last.trim_end().ends_with("line 19"), "{last}");
    }

    #[test]
    fn one_big_chunk_still_respects_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 300,
            max_files: 100,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        let chunk: String = (0..100).map(|i| format!("row {i}\n")).collect();
        w.write(Stream::Stdout, chunk.as_bytes()).unwrap();
        assert!(rotated(&path, 5).exists());
        for n in 1..5 {
            assert!(fs::metadata(rotated(&path, n)).unwrap().len() <= 300);
        }
    }
}
