//! The runtime's console socket: runc sends a pty master over it (one
//! SCM_RIGHTS message) during `create` or `exec` with `--console-socket`.
//! Shared by berth-shim and containerd-shim-berth-v2, through rustix's
//! safe wrappers: every received fd arrives as an `OwnedFd`, and with
//! `MSG_CMSG_CLOEXEC` none can leak into a later child.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;

use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

/// Receives the pty master the runtime sent to `listener`. Called after
/// the runtime returned, so the connection and its message are queued.
/// Exactly one fd is expected; any other count is an error (and every fd
/// received is closed).
pub fn receive_pty(listener: &UnixListener) -> io::Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let (conn, _) = listener.accept().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("runtime sent no pty on the console socket: {e}"),
        )
    })?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    // Room for two, so a second fd is seen (and refused), not truncated away.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    recvmsg(&conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if fds.len() != 1 {
        return Err(io::Error::other(format!(
            "expected exactly one pty fd from the runtime, got {}",
            fds.len()
        )));
    }
    Ok(fds.remove(0))
}

/// Applies a terminal size to a pty master (TIOCSWINSZ).
pub fn resize(master: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, ws)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsRawFd;

    fn send_fds(path: &std::path::Path, fds: &[std::os::fd::BorrowedFd<'_>]) {
        let conn = std::os::unix::net::UnixStream::connect(path).unwrap();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        sendmsg(
            &conn,
            &[io::IoSlice::new(b"x")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    #[test]
    fn one_fd_is_received_close_on_exec_and_two_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        send_fds(&path, &[a.as_fd()]);
        let got = receive_pty(&listener).unwrap();
        let flags = rustix::io::fcntl_getfd(&got).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_ne!(got.as_raw_fd(), a.as_raw_fd());
        send_fds(&path, &[a.as_fd(), b.as_fd()]);
        let err = receive_pty(&listener).unwrap_err();
        assert!(err.to_string().contains("got 2"), "{err}");
    }

    #[test]
    fn resize_sets_the_size_a_pty_reports() {
        let pty = nix::pty::openpty(None, None).unwrap();
        resize(&pty.master, 33, 101).unwrap();
        let ws = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
    }

    #[test]
    fn nothing_sent_is_an_error_naming_the_console_socket() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("c.sock")).unwrap();
        let err = receive_pty(&listener).unwrap_err();
        assert!(err.to_string().contains("console socket"), "{err}");
    }
}
