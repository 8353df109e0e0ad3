//! The shim's log writer: CRI records in numbered segment files.
//!
//! The log is a series of segments `log.1`, `log.2`, ... numbered in the
//! order they were written; the highest is the one being written, and `log`
//! is a symlink to it (for `tail -F log`, `cat log`). A segment is created
//! once, appended to while it is the newest, and never renamed; rotation
//! creates the next one, repoints the symlink, and deletes the one segment
//! that fell out of `max_files`. So a rotation costs the same for 2 files
//! or 10,000, and a reader can tell exactly where it is: `log.N` always
//! names the same bytes, and once `log.N+1` exists, `log.N` is complete.
//!
//! One `write` per chunk read from the container, no fsync per line (the
//! page cache survives a shim or berthd crash; only a host crash loses the
//! tail, as with every peer).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::logfmt::{encode_chunk, Stream};
use crate::meta::LogConfig;
use crate::{Error, Result};

/// The most segments a log may keep. Rotation costs the same for any
/// count; the bound keeps a directory listing (a reader that fell behind,
/// `--tail`) and the inode count per container sane.
pub const MAX_LOG_FILES: u32 = 10_000;
/// The smallest rotation size (except 0, never rotate): below a page a
/// segment per record turns a log into a pile of inodes.
pub const MIN_LOG_SIZE: u64 = 4 * 1024;
/// The largest rotation size, 1 TiB.
pub const MAX_LOG_SIZE: u64 = 1 << 40;

/// Rotation settings out of bounds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("--log-max-files {0} is out of range: keep 1 to {MAX_LOG_FILES} files")]
    Files(u32),
    #[error(
        "--log-max-size {0} is out of range: 0 (never rotate) or {MIN_LOG_SIZE} bytes (4k) to {MAX_LOG_SIZE} bytes (1t)"
    )]
    Size(u64),
}

/// Checks rotation settings against the bounds above.
pub fn check_limits(config: &LogConfig) -> std::result::Result<(), LimitError> {
    if config.max_files == 0 || config.max_files > MAX_LOG_FILES {
        return Err(LimitError::Files(config.max_files));
    }
    if config.max_size != 0 && !(MIN_LOG_SIZE..=MAX_LOG_SIZE).contains(&config.max_size) {
        return Err(LimitError::Size(config.max_size));
    }
    Ok(())
}

/// The path of segment `n` of the log at `path` (`log.n`).
pub fn segment(path: &Path, n: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The sequence numbers of the segments of the log at `path` that exist
/// now, ascending. One directory read; used when opening, not per record.
pub fn list_segments(path: &Path) -> io::Result<Vec<u64>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let Some(base) = path.file_name() else {
        return Ok(Vec::new());
    };
    let mut prefix = base.as_encoded_bytes().to_vec();
    prefix.push(b'.');
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(digits) = name.as_encoded_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        // Plain decimal only: `log.007` or `log.1.tmp` are not ours.
        if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
            continue;
        }
        if let Some(n) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Appends container output to the log at `<dir>/log` in CRI format.
pub struct LogWriter {
    /// `<dir>/log`, the symlink to the newest segment.
    path: PathBuf,
    /// The segment being written.
    seq: u64,
    file: File,
    size: u64,
    config: LogConfig,
    buf: Vec<u8>,
    /// A rotation failed (e.g. no inode left): the current segment grows
    /// past the limit rather than losing output; said once per streak.
    rotate_failed: bool,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("open log", path, e))
}

impl LogWriter {
    /// Opens the log at `path`, appending to its newest segment (or
    /// creating `log.1`).
    pub fn open(path: &Path, config: LogConfig) -> Result<Self> {
        let segs = list_segments(path).map_err(|e| Error::io("list log segments", path, e))?;
        let newest = segs.last().copied();
        let seq = match fs::symlink_metadata(path) {
            // A plain file at `log` (written by an older berth): it becomes
            // the next segment, so its bytes stay in order.
            Ok(m) if m.file_type().is_file() => adopt_legacy(path, &segs)?,
            _ => newest.unwrap_or(1),
        };
        let seg = segment(path, seq);
        let file = open_append(&seg)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", &seg, e))?
            .len();
        if let Err(e) = point_link(path, seq) {
            // As in rotate: the symlink is for people; output matters more.
            log::warn!("{e}");
        }
        Ok(LogWriter {
            path: path.to_owned(),
            seq,
            file,
            size,
            config,
            // Grown on first output: an idle container's shim never touches it.
            buf: Vec::new(),
            rotate_failed: false,
        })
    }

    /// The segment being written now.
    pub fn current_segment(&self) -> u64 {
        self.seq
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
                start = pos;
                match self.rotate() {
                    Ok(()) => self.rotate_failed = false,
                    Err(e) => {
                        if !self.rotate_failed {
                            log::warn!("log rotation failed, writing on: {e}");
                        }
                        self.rotate_failed = true;
                    }
                }
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
            .map_err(|e| Error::io("write log", segment(&self.path, self.seq), e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Starts the next segment. Constant work: create one file, repoint the
    /// symlink, delete the one segment past `max_files`.
    fn rotate(&mut self) -> Result<()> {
        let next = self.seq + 1;
        let seg = segment(&self.path, next);
        let file = open_append(&seg)?;
        // From here on the old segment is complete: readers move on when
        // they see `next` exist, so nothing may be appended to it.
        self.file = file;
        self.seq = next;
        self.size = 0;
        if let Err(e) = point_link(&self.path, next) {
            // Only people and outside tools use the symlink; berth's own
            // reader goes by the numbers.
            log::warn!("{e}");
        }
        let keep = u64::from(self.config.max_files.max(1));
        if next > keep {
            let old = segment(&self.path, next - keep);
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &old, e)),
            }
        }
        Ok(())
    }
}

/// Turns an older berth's log into segments, oldest first, and returns the
/// number of the newest (the former `log`). That berth rotated by renaming
/// `log` -> `log.1` -> `log.2`..., so its `log.1` is the newest rotated file
/// and `log.K` the oldest: numbered as they stand, a reader would show them
/// backwards and rotation would delete the newest first. They are renamed,
/// oldest first, to numbers after all present ones; only the run from
/// `log.1` up is that berth's (after a crash half-way the rest were moved
/// already, and are older than what is still in the run), so doing it again
/// finishes the job in order.
fn adopt_legacy(path: &Path, segs: &[u64]) -> Result<u64> {
    let run = segs
        .iter()
        .zip(1u64..)
        .take_while(|&(&n, want)| n == want)
        .count() as u64;
    let mut next = segs.last().map_or(1, |n| n + 1);
    for n in (1..=run).rev() {
        let (from, to) = (segment(path, n), segment(path, next));
        fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
        next += 1;
    }
    fs::rename(path, segment(path, next)).map_err(|e| Error::io("rename", path, e))?;
    Ok(next)
}

/// Points `<dir>/log` at segment `seq` (a relative symlink, replaced
/// atomically by a rename).
fn point_link(path: &Path, seq: u64) -> Result<()> {
    let base = path.file_name().unwrap_or(path.as_os_str());
    let mut target = base.to_owned();
    target.push(format!(".{seq}"));
    let mut tmp_name = OsString::from(".");
    tmp_name.push(base);
    tmp_name.push(".link");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &tmp, e)),
    }
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io("symlink", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
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
        let segs = list_segments(&path).unwrap();
        let n = w.current_segment();
        assert!(n > 3);
        assert_eq!(segs, [n - 2, n - 1, n]);
        for s in segs {
            assert!(fs::metadata(segment(&path, s)).unwrap().len() <= 200);
        }
        assert_eq!(
            fs::read_link(&path).unwrap(),
            PathBuf::from(format!("log.{n}"))
        );
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
        let segs = list_segments(&path).unwrap();
        assert!(segs.len() >= 5, "{segs:?}");
        assert_eq!(segs[0], 1);
        for s in segs {
            assert!(fs::metadata(segment(&path, s)).unwrap().len() <= 300);
        }
    }

    #[test]
    fn reopening_continues_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            max_size: 100,
            max_files: 10,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        for i in 0..10 {
            w.write(Stream::Stdout, format!("a{i}\n").as_bytes())
                .unwrap();
        }
        let n = w.current_segment();
        drop(w);
        let w = LogWriter::open(&path, config).unwrap();
        assert_eq!(w.current_segment(), n);
    }

    #[test]
    fn a_plain_log_file_from_an_older_berth_becomes_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, "T stdout F old\n").unwrap();
        let w = LogWriter::open(&path, LogConfig::default()).unwrap();
        assert_eq!(w.current_segment(), 1);
        assert_eq!(
            fs::read_to_string(segment(&path, 1)).unwrap(),
            "T stdout F old\n"
        );
        assert!(fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn an_older_berths_rotated_files_become_segments_oldest_first() {
        // That berth's layout: `log` newest, then `log.1`, `log.2` older.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(segment(&path, 2), "T stdout F oldest\n").unwrap();
        fs::write(segment(&path, 1), "T stdout F middle\n").unwrap();
        fs::write(&path, "T stdout F newest\n").unwrap();
        let config = LogConfig {
            max_size: 0,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, config).unwrap();
        let segs = list_segments(&path).unwrap();
        let text: Vec<String> = segs
            .iter()
            .map(|&n| fs::read_to_string(segment(&path, n)).unwrap())
            .collect();
        assert_eq!(
            text,
            [
                "T stdout F oldest\n",
                "T stdout F middle\n",
                "T stdout F newest\n"
            ]
        );
        assert_eq!(w.current_segment(), *segs.last().unwrap());
        // Rotation drops the oldest, not the middle one.
        w.rotate().unwrap();
        let first = list_segments(&path).unwrap()[0];
        assert!(fs::read_to_string(segment(&path, first))
            .unwrap()
            .contains("middle"));
    }

    #[test]
    fn adopting_an_older_log_again_after_a_crash_keeps_the_order() {
        // A crash after `log.2` (the oldest) moved to `log.3`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(segment(&path, 3), "oldest\n").unwrap();
        fs::write(segment(&path, 1), "middle\n").unwrap();
        fs::write(&path, "newest\n").unwrap();
        LogWriter::open(&path, LogConfig::default()).unwrap();
        let text: Vec<String> = list_segments(&path)
            .unwrap()
            .iter()
            .map(|&n| fs::read_to_string(segment(&path, n)).unwrap())
            .collect();
        assert_eq!(text, ["oldest\n", "middle\n", "newest\n"]);
    }

    #[test]
    fn limits_are_checked() {
        let c = |max_size, max_files| LogConfig {
            max_size,
            max_files,
        };
        assert_eq!(check_limits(&c(0, 1)), Ok(()));
        assert_eq!(check_limits(&c(4096, MAX_LOG_FILES)), Ok(()));
        assert_eq!(check_limits(&c(MAX_LOG_SIZE, 5)), Ok(()));
        assert_eq!(check_limits(&c(4096, 0)), Err(LimitError::Files(0)));
        let e = check_limits(&c(4096, 4_000_000_000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--log-max-files 4000000000 is out of range: keep 1 to 10000 files"
        );
        assert_eq!(check_limits(&c(100, 5)), Err(LimitError::Size(100)));
        assert_eq!(
            check_limits(&c(MAX_LOG_SIZE + 1, 5)),
            Err(LimitError::Size(MAX_LOG_SIZE + 1))
        );
    }

    #[test]
    fn only_plain_numbers_are_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        for name in [
            "log.3",
            "log.10",
            "log.007",
            "log.1.tmp",
            "log.",
            "logx.2",
            ".log.link",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(list_segments(&path).unwrap(), [3, 10]);
    }
}
