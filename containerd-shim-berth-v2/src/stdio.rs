//! A process's stdio as containerd hands it over: paths of fifos that the
//! client (ctr, the CRI plugin) has opened, `file://` URIs, or nothing.
//!
//! Without a terminal the container gets the fifos themselves: nothing to
//! copy, so no thread and no buffer in the shim, and every byte the
//! container wrote is in the fifo before its exit is known. The shim keeps
//! a read end of each output fifo (a client that goes away never turns the
//! container's writes into EPIPE, as with containerd's own shim) and a
//! write end of the stdin fifo (the container sees EOF only after CloseIO,
//! not when no client has opened it yet). With a terminal, runc sends the
//! pty master to a console socket and two small threads copy between it
//! and the fifos.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The three paths of a process, as containerd sent them.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the runtime's child gets as fds 0, 1, 2, and what the shim keeps.
pub struct Opened {
    pub child: [OwnedFd; 3],
    /// Read ends of the output fifos, kept for the process's life.
    pub held: Vec<OwnedFd>,
    /// Our write end of the stdin fifo: dropped on CloseIO.
    pub stdin_hold: Option<OwnedFd>,
}

fn null(write: bool) -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?;
    Ok(f.into())
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// A local path from containerd's stdio string: a plain path or fifo://,
/// `file://` for a log file; `binary://` (a logging binary) is not offered.
fn local(uri: &str) -> Result<(&Path, bool), String> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok((Path::new(rest), true));
    }
    if let Some(rest) = uri.strip_prefix("fifo://") {
        return Ok((Path::new(rest), false));
    }
    if uri.starts_with("binary://") {
        return Err(format!(
            "stdio {uri:?}: logging binaries (binary://) are not supported by this shim"
        ));
    }
    if uri.contains("://") {
        return Err(format!("stdio {uri:?}: unsupported scheme"));
    }
    Ok((Path::new(uri), false))
}

fn open_output(uri: &str, held: &mut Vec<OwnedFd>) -> Result<OwnedFd, String> {
    if uri.is_empty() {
        return null(true).map_err(|e| format!("open /dev/null: {e}"));
    }
    let (path, file) = local(uri)?;
    if file || !is_fifo(path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        return Ok(f.into());
    }
    // Our read end first, so the write open below never blocks.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let writer = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    held.push(reader.into());
    Ok(writer.into())
}

fn open_input(uri: &str) -> Result<(OwnedFd, Option<OwnedFd>), String> {
    if uri.is_empty() {
        return Ok((
            null(false).map_err(|e| format!("open /dev/null: {e}"))?,
            None,
        ));
    }
    let (path, _) = local(uri)?;
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // The container reads blocking, as from any pipe.
    fcntl(reader.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| format!("fcntl {}: {e}", path.display()))?;
    let hold = if is_fifo(path) {
        let w = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        Some(OwnedFd::from(w))
    } else {
        None
    };
    Ok((reader.into(), hold))
}

/// Opens the stdio of a process that has no terminal.
pub fn open(p: &Paths) -> Result<Opened, String> {
    let mut held = Vec::new();
    let (stdin, stdin_hold) = open_input(&p.stdin)?;
    let stdout = open_output(&p.stdout, &mut held)?;
    let stderr = open_output(&p.stderr, &mut held)?;
    Ok(Opened {
        child: [stdin, stdout, stderr],
        held,
        stdin_hold,
    })
}

/// Receives the pty master runc sent to `listener` during create/exec
/// (called after runc returned: the connection and message are queued).
pub fn receive_pty(listener: &UnixListener) -> io::Result<OwnedFd> {
    runtime_core::console::receive_pty(listener)
}

/// Starts the copies between a pty master and the client's fifos. The
/// returned receiver is signalled when the output copy has ended (the
/// last process holding the pty's other side exited, and everything it
/// wrote reached the stdout fifo). Returns our stdin hold, if any.
pub fn start_pty_copies(
    master: &OwnedFd,
    p: &Paths,
) -> Result<(mpsc::Receiver<()>, Option<OwnedFd>), String> {
    let mut held = Vec::new();
    let out = open_output(&p.stdout, &mut held)?;
    let (done_tx, done_rx) = mpsc::channel();
    let from = File::from(master.try_clone().map_err(|e| format!("dup pty: {e}"))?);
    spawn("pty-out", move || {
        copy(from, File::from(out));
        drop(held);
        let _ = done_tx.send(());
    })?;
    let mut stdin_hold = None;
    if !p.stdin.is_empty() {
        let (input, hold) = open_input(&p.stdin)?;
        stdin_hold = hold;
        let to = File::from(master.try_clone().map_err(|e| format!("dup pty: {e}"))?);
        spawn("pty-in", move || copy(File::from(input), to))?;
    }
    Ok((done_rx, stdin_hold))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("spawn {name} thread: {e}"))
}

/// Copies until EOF or an error on either side (EIO on a pty master
/// means the other side has closed: that is its EOF).
fn copy(mut from: File, mut to: File) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Err(e) = to.write_all(&buf[..n]) {
            if e.kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }
}

/// Applies a terminal size to a pty master.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> io::Result<()> {
    let rows = u16::try_from(height).unwrap_or(u16::MAX);
    let cols = u16::try_from(width).unwrap_or(u16::MAX);
    runtime_core::console::resize(master, rows, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(local("/a/b").unwrap(), (Path::new("/a/b"), false));
        assert_eq!(local("file:///l").unwrap(), (Path::new("/l"), true));
        let e = local("binary:///usr/bin/logger?x=1").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn fifo_output_keeps_a_reader_and_input_waits_for_closeio() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let inp = dir.path().join("in");
        nix::unistd::mkfifo(&inp, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = Paths {
            stdin: inp.to_string_lossy().into(),
            stdout: fifo.to_string_lossy().into(),
            stderr: String::new(),
            terminal: false,
        };
        let o = open(&p).unwrap();
        assert_eq!(o.held.len(), 1, "a read end of stdout is kept");
        assert!(o.stdin_hold.is_some());
        // Writing with no client reader does not fail: our read end holds it.
        let mut w = File::from(o.child[1].try_clone().unwrap());
        w.write_all(b"x").unwrap();
    }
}
