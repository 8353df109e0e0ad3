//! Readiness for systemd's `Type=notify` (sd_notify(3)): `READY=1` once
//! the API socket accepts, `STOPPING=1` when berthd begins to shut down.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract one).
//! The variable is taken out of berthd's environment at start-up, before
//! any thread exists, so the shims, runc and the CNI plugins berthd spawns
//! never inherit it: a shim outlives berthd and must not speak for it.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where to send notifications; does nothing when berthd was not started
/// by a service manager that asked for them.
#[derive(Debug, Default, Clone)]
pub struct Notifier {
    socket: Option<OsString>,
}

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("sd_notify to NOTIFY_SOCKET={socket:?}: {source}")]
pub struct NotifyError {
    socket: OsString,
    source: std::io::Error,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` out of the environment. Call it in `main`
    /// while the process is still single-threaded (the environment is
    /// not safe to change once other threads may read it).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { socket }
    }

    /// `READY=1`: the API socket is bound and accepting.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send(&format!("READY=1\nMAINPID={}\n", std::process::id()))
    }

    /// `STOPPING=1`: berthd is on its way out (containers keep running).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1\n")
    }

    fn send(&self, message: &str) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let fail = |source| NotifyError {
            socket: socket.clone(),
            source,
        };
        let bytes = socket.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(std::path::Path::new(socket)),
        }
        .map_err(fail)?;
        let sock = UnixDatagram::unbound().map_err(fail)?;
        sock.connect_addr(&addr).map_err(fail)?;
        let sent = sock.send(message.as_bytes()).map_err(fail)?;
        if sent != message.len() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", message.len()),
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_and_stopping_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.into_os_string()),
        };
        n.ready().unwrap();
        n.stopping().unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let first = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(first.starts_with("READY=1\n"), "{first:?}");
        assert!(first.contains(&format!("MAINPID={}\n", std::process::id())));
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\n");
    }

    #[test]
    fn abstract_sockets_are_reached_by_their_at_name() {
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            socket: Some(format!("@{name}").into()),
        };
        n.ready().unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"READY=1\n"));
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_a_dead_one_is_an_error() {
        Notifier::default().ready().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier {
            socket: Some(dir.path().join("gone").into_os_string()),
        };
        let err = n.ready().unwrap_err().to_string();
        assert!(err.contains("NOTIFY_SOCKET"), "{err}");
    }
}
