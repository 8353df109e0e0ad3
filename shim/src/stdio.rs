//! The container's stdio as the shim holds it: pipes, or a pty master
//! received from runc over the console socket.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use mio::unix::pipe::{Receiver, Sender};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

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
    listener.set_nonblocking(true)?;
    let (conn, _) = listener.accept().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("runtime sent no pty on the console socket: {e}"),
        )
    })?;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: SCM_RIGHTS just installed `fd` in our table; nothing
                // else owns it, and wrapping it at once guarantees one close.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if fds.len() != 1 {
        return Err(io::Error::other(format!(
            "expected exactly one pty fd from the runtime, got {}",
            fds.len()
        )));
    }
    let master = fds.remove(0);
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

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Applies a terminal size to the pty master.
pub fn resize(master: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer to a local.
    unsafe { set_winsize(master.as_raw_fd(), &ws) }?;
    Ok(())
}
