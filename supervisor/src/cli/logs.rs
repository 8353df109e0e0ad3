//! `berth logs [-f] [-t] [--tail N] [--since T] [--until T] ID`: print the
//! original bytes back from the CRI log, stdout to stdout and stderr to
//! stderr. Reads the log files directly, so `-f` keeps following across a
//! berthd restart; it stops once the exit record exists (written only after
//! all output was logged) or berthd's `lost` record says no exit will come.
//!
//! Following waits on inotify (the container directory: new segments,
//! appends, the exit record's rename), with a one-second backstop.

use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use runtime_core::layout::ContainerPaths;
use runtime_core::logfmt::{Record, Stream};
use runtime_core::logread::{Event, LogReader};
use runtime_core::logwrite::{check_limits, MAX_LOG_FILES};
use runtime_core::meta::LogConfig;

use super::{Failure, Outcome};
use crate::api::ContainerInfo;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Show the time of each line (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// Show only the last N lines ("all" for everything).
    #[arg(short = 'n', long, value_parser = parse_tail, default_value = "all")]
    tail: Tail,
    /// Show output since a time (RFC 3339, Unix seconds) or for a duration back (10m, 1h30m).
    #[arg(long, value_parser = parse_time)]
    since: Option<SystemTime>,
    /// Show output before a time (RFC 3339, Unix seconds) or a duration ago (10m).
    #[arg(long, value_parser = parse_time)]
    until: Option<SystemTime>,
    /// Container ID, ID prefix or name.
    container: String,
}

/// `--tail`: everything or the last N lines.
#[derive(Debug, Clone, Copy)]
pub enum Tail {
    All,
    Lines(u64),
}

fn parse_tail(s: &str) -> Result<Tail, String> {
    if s == "all" {
        return Ok(Tail::All);
    }
    s.parse()
        .map(Tail::Lines)
        .map_err(|_| format!("invalid --tail {s:?}: a number of lines or \"all\""))
}

/// `--since` / `--until`, as docker takes them: an RFC 3339 time (or a
/// date), Unix seconds with an optional fraction, or a duration back from
/// now.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || {
        format!("invalid time {s:?}: use RFC 3339 (2026-01-02T15:04:05Z), Unix seconds, or a duration (10m)")
    };
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now().checked_sub(d).ok_or_else(bad);
    }
    if let Some((secs, frac)) = unix_seconds(s) {
        return SystemTime::UNIX_EPOCH
            .checked_add(Duration::new(secs, frac))
            .ok_or_else(bad);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| bad())
}

/// `1136073600` or `1136073600.5`: seconds and nanoseconds.
fn unix_seconds(s: &str) -> Option<(u64, u32)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some((int.parse().ok()?, nanos))
}

/// `--log-max-size`: `10m`, `1.5m`, `10MB`, `4096`. k/m/g/t are binary
/// (1024), as docker reads them; an overflow or an out-of-range size is an
/// error, never a silent 0.
pub fn parse_log_size(s: &str) -> Result<u64, String> {
    let size = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("invalid size {s:?}: {e}"))?;
    check_limits(&LogConfig {
        max_size: size,
        max_files: 1,
    })
    .map_err(|e| e.to_string())?;
    Ok(size)
}

/// `--log-max-files`: 1 to [`MAX_LOG_FILES`].
pub fn parse_log_files(s: &str) -> Result<u32, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("invalid --log-max-files {s:?}: a number of files"))?;
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_LOG_FILES).contains(&n) => Ok(n),
        _ => Err(format!(
            "--log-max-files {s} is out of range: keep 1 to {MAX_LOG_FILES} files"
        )),
    }
}

pub async fn logs(root: &Path, data_root: &Path, a: LogsArgs) -> Outcome {
    // Through berthd, or from the disk while it is down.
    let info = super::offline::inspect_anyhow(root, data_root, &a.container).await?;
    tokio::task::spawn_blocking(move || print_log(&info, &a))
        .await
        .map_err(|e| Failure::new(e.to_string()))?
}

/// Writes records to our stdout/stderr with the filters applied.
struct Printer<O: Write, E: Write> {
    out: O,
    err: E,
    timestamps: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    /// Per stream: the next record starts a line (for `-t`).
    line_start: [bool; 2],
    /// A record after `--until` was seen: stop.
    done: bool,
    broken: bool,
}

impl<O: Write, E: Write> Printer<O, E> {
    /// Hands what is buffered to our stdout and stderr; false once a
    /// reader went away.
    fn flush(&mut self) -> bool {
        let ok = self.out.flush().is_ok() & self.err.flush().is_ok();
        self.broken |= !ok;
        ok
    }

    /// Output was lost to rotation here: a line cut off by the gap is
    /// ended, so it is not glued to the next one.
    fn gap(&mut self) {
        for (slot, dst) in [(0, &mut self.out as &mut dyn Write), (1, &mut self.err)] {
            if !self.line_start[slot] && dst.write_all(b"\n").is_err() {
                self.broken = true;
            }
            self.line_start[slot] = true;
        }
    }

    fn emit(&mut self, rec: &Record<'_>) {
        if self.done || self.broken {
            return;
        }
        if self.since.is_some() || self.until.is_some() {
            // A record whose time does not parse is shown: hiding output
            // for a formatting problem would be worse.
            let t = std::str::from_utf8(rec.timestamp)
                .ok()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            if let (Some(t), Some(until)) = (t, self.until) {
                if t > until {
                    self.done = true;
                    return;
                }
            }
            if let (Some(t), Some(since)) = (t, self.since) {
                if t < since {
                    return;
                }
            }
        }
        let slot = match rec.stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let dst: &mut dyn Write = match rec.stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        };
        let mut r = Ok(());
        if self.timestamps && self.line_start[slot] {
            r = dst
                .write_all(rec.timestamp)
                .and_then(|()| dst.write_all(b" "));
        }
        r = r.and_then(|()| dst.write_all(rec.content));
        if rec.full {
            r = r.and_then(|()| dst.write_all(b"\n"));
        }
        self.line_start[slot] = rec.full;
        if r.is_err() {
            self.broken = true;
        }
    }
}

fn print_log(info: &ContainerInfo, a: &LogsArgs) -> Outcome {
    let paths = info.paths();
    let log_path = Path::new(&info.log_path);
    let read_err = |e: std::io::Error| Failure::new(format!("read {}: {e}", info.log_path));
    let mut reader = match a.tail {
        Tail::All => LogReader::new(log_path),
        Tail::Lines(n) => LogReader::tail(log_path, n).map_err(read_err)?,
    };
    // Set up before the first read, so no change after it goes unseen.
    // The data directory: the log's segments and the exit record are there.
    let waiter = a.follow.then(|| Waiter::new(paths.data_dir()));
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut p = Printer {
        // Buffered: Rust's stdout flushes at every newline, one write(2)
        // per line, which made a follower fall behind a fast container.
        out: BufWriter::with_capacity(64 * 1024, stdout.lock()),
        err: BufWriter::with_capacity(64 * 1024, stderr.lock()),
        timestamps: a.timestamps,
        since: a.since,
        until: a.until,
        line_start: [true; 2],
        done: false,
        broken: false,
    };
    loop {
        // Looked at before reading: the exit record is written after the
        // last byte reached the log, so this read then gets everything.
        let finished = waiter.is_none()
            || paths.exit().exists()
            || paths.lost().exists()
            || shim_gone(&paths)
            || !paths.data_dir().exists()
            || a.until.is_some_and(|u| SystemTime::now() > u);
        reader
            .read_available(&mut |ev| match ev {
                Event::Record(rec) => p.emit(&rec),
                Event::Gap(_) => p.gap(),
            })
            .map_err(read_err)?;
        if finished || p.done || p.broken || !p.flush() {
            break;
        }
        if let Some(w) = &waiter {
            if w.wait() == Wake::OutputClosed {
                break;
            }
        }
    }
    p.flush();
    let skipped = reader.skipped();
    drop(p);
    if skipped > 0 {
        eprintln!("berth logs: {skipped} log file(s) were rotated away before they could be read");
    }
    Ok(0)
}

/// The shim, the log's only writer, is gone: nothing more will be
/// written. (berthd records that as `lost`, but berthd may be down.) A
/// reused PID reads as alive, which only means waiting for `lost`.
fn shim_gone(paths: &ContainerPaths) -> bool {
    let Some(pid) = std::fs::read_to_string(paths.shim_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
    else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[derive(PartialEq, Eq)]
enum Wake {
    Changed,
    OutputClosed,
}

/// Waits for a change in the container directory, or for our stdout's
/// reader to go away (`berth logs -f x | head`) while the container is quiet.
struct Waiter {
    inotify: Option<Inotify>,
}

impl Waiter {
    fn new(dir: &Path) -> Self {
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        // Without inotify (no instances left) the backstop timeout polls.
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .ok()
            .filter(|i| i.add_watch(dir, flags).is_ok());
        Waiter { inotify }
    }

    fn wait(&self) -> Wake {
        let out = std::io::stdout();
        let out_fd = out.as_fd();
        let (timeout, mut fds) = match &self.inotify {
            Some(i) => (
                PollTimeout::from(1000u16),
                vec![
                    PollFd::new(out_fd, PollFlags::empty()),
                    PollFd::new(i.as_fd(), PollFlags::POLLIN),
                ],
            ),
            None => (
                PollTimeout::from(100u16),
                vec![PollFd::new(out_fd, PollFlags::empty())],
            ),
        };
        // EINTR or a timeout: look again either way.
        let _ = nix::poll::poll(&mut fds, timeout);
        // POLLNVAL: stdout was closed before we started; poll would
        // return at once forever.
        let closed = fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
        });
        if closed {
            return Wake::OutputClosed;
        }
        if let Some(i) = &self.inotify {
            // Drain the queue; what changed is read from the files.
            while matches!(i.read_events(), Ok(ev) if !ev.is_empty()) {}
        }
        Wake::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::logfmt::parse_line;

    fn printer(timestamps: bool) -> Printer<Vec<u8>, Vec<u8>> {
        Printer {
            out: Vec::new(),
            err: Vec::new(),
            timestamps,
            since: None,
            until: None,
            line_start: [true; 2],
            done: false,
            broken: false,
        }
    }

    fn feed<O: Write, E: Write>(p: &mut Printer<O, E>, lines: &[&str]) {
        for l in lines {
            p.emit(&parse_line(l.as_bytes()).unwrap());
        }
    }

    const T1: &str = "2026-01-01T00:00:01.000000000Z";
    const T2: &str = "2026-01-01T00:00:02.000000000Z";
    const T3: &str = "2026-01-01T00:00:03.000000000Z";

    #[test]
    fn timestamps_start_each_line_per_stream() {
        let mut p = printer(true);
        feed(
            &mut p,
            &[
                &format!("{T1} stdout P ab"),
                &format!("{T2} stderr F e"),
                &format!("{T2} stdout F c"),
                &format!("{T3} stdout F d"),
            ],
        );
        assert_eq!(
            String::from_utf8(p.out).unwrap(),
            format!("{T1} abc\n{T3} d\n")
        );
        assert_eq!(String::from_utf8(p.err).unwrap(), format!("{T2} e\n"));
    }

    #[test]
    fn since_and_until_use_each_records_time() {
        let mut p = printer(false);
        p.since = Some(parse_time(T2).unwrap());
        p.until = Some(parse_time(T2).unwrap());
        feed(
            &mut p,
            &[
                &format!("{T1} stdout F old"),
                &format!("{T2} stdout F kept"),
                &format!("{T3} stdout F late"),
                &format!("{T2} stdout F after-the-end"),
            ],
        );
        assert_eq!(p.out, b"kept\n");
        assert!(p.done);
    }

    #[test]
    fn a_gap_ends_a_cut_line() {
        let mut p = printer(false);
        feed(&mut p, &[&format!("{T1} stdout P 123")]);
        p.gap();
        feed(&mut p, &[&format!("{T2} stdout F 456")]);
        assert_eq!(p.out, b"123\n456\n");
        assert!(p.err.is_empty());
    }

    #[test]
    fn sizes_parse_binary_and_refuse_overflow() {
        assert_eq!(parse_log_size("10m"), Ok(10 << 20));
        assert_eq!(parse_log_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_log_size("1.5m"), Ok(3 << 19));
        assert_eq!(parse_log_size("64k"), Ok(64 << 10));
        assert_eq!(parse_log_size("0"), Ok(0));
        let e = parse_log_size("17179869184g").unwrap_err();
        assert!(e.starts_with("invalid size \"17179869184g\""), "{e}");
        let e = parse_log_size("2t").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse_log_size("100").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(parse_log_size("ten").is_err());
    }

    #[test]
    fn file_counts_are_bounded() {
        assert_eq!(parse_log_files("5"), Ok(5));
        assert_eq!(parse_log_files("10000"), Ok(10_000));
        assert_eq!(
            parse_log_files("4000000000"),
            Err("--log-max-files 4000000000 is out of range: keep 1 to 10000 files".into())
        );
        assert!(parse_log_files("0").is_err());
        assert!(parse_log_files("-1").is_err());
    }

    #[test]
    fn times_parse_like_docker() {
        let t = parse_time("2026-01-02T15:04:05Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_767_366_245
        );
        let t = parse_time("1136073600.5").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::new(1_136_073_600, 500_000_000)
        );
        let ago = SystemTime::now().duration_since(parse_time("10m").unwrap());
        let ago = ago.unwrap().as_secs();
        assert!((599..=660).contains(&ago), "{ago}");
        assert!(parse_time("1h30m").is_ok());
        assert!(parse_time("2026-01-02").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
