//! The container's stdio as the shim holds it: pipes, or a pty master
//! received from runc over the console socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use mio::unix::pipe::{Receiver, Sender};

/// The shim's ends of the container's stdio.
pub struct ShimStdio {
    /// Where container input goes (stdin pipe or pty master); `None` without `-i`.
    pub input: Option<Sender>,
    /// stdout, or the pty's output.
    pub stdout: Option<Receiver>,
    /// stderr; `None` for a tty.
    pub stderr: Option<Receiver>,
}

/// The ends handed to `runc create`, dropped by the shim once runc runs.
pub struct ChildStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

fn blocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(fd)
}

/// Asks for a bigger pipe; the kernel may refuse (pipe-max-size), which is fine.
fn grow(pipe: &impl AsRawFd, size: i32) {
    let _ = nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
}

/// Pipes for a non-tty container: ours non-blocking, the child's blocking.
pub fn pipes(with_stdin: bool, pipe_size: i32) -> io::Result<(ShimStdio, ChildStdio)> {
    let (out_w, out_r) = mio::unix::pipe::new()?;
    let (err_w, err_r) = mio::unix::pipe::new()?;
    grow(&out_r, pipe_size);
    grow(&err_r, pipe_size);
    let (input, child_in) = if with_stdin {
        let (in_w, in_r) = mio::unix::pipe::new()?;
        (Some(in_w), Stdio::from(blocking(OwnedFd::from(in_r))?))
    } else {
        (None, Stdio::null())
    };
    Ok((
        ShimStdio {
            input,
            stdout: Some(out_r),
            stderr: Some(err_r),
        },
        ChildStdio {
            stdin: child_in,
            stdout: Stdio::from(blocking(OwnedFd::from(out_w))?),
            stderr: Stdio::from(blocking(OwnedFd::from(err_w))?),
        },
    ))
}

/// Receives the pty master that runc sent to our console socket.
/// runc connects and sends during `runc create`, so this is called after
/// create returned: the connection is queued and the message buffered.
pub fn receive_pty(listener: &UnixListener, with_stdin: bool) -> io::Result<ShimStdio> {
    let master = runtime_core::console::receive_pty(listener)?;
    let writer = master.try_clone()?;
    let reader = Receiver::from(master);
    reader.set_nonblocking(true)?;
    Ok(ShimStdio {
        input: if with_stdin {
            Some(Sender::from(writer))
        } else {
            None
        },
        stdout: Some(reader),
        stderr: None,
    })
}

/// Applies a terminal size to the pty master.
pub fn resize(master: &impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    runtime_core::console::resize(master, rows, cols)
}
