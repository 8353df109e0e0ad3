//! The signal proxy of attached `run` and `attach` (without a tty), as
//! Docker's `--sig-proxy`: every catchable signal the CLI receives is sent
//! on to the container, so a unit or a CI job that stops `berth run` stops
//! its container, and the CLI exits with the container's code.
//!
//! Signals go straight to the container's shim (its control socket), the
//! way berthd sends them: the proxy works while berthd is down, as attach
//! itself does.

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use runtime_core::protocol::{shim_methods, KillParams};

use crate::rpc::RpcClient;

/// Signals never forwarded: those that cannot be caught, those that are
/// about the CLI's own process (a faulting CLI must die, a closed pipe is
/// the CLI's output, SIGCHLD its children), and SIGWINCH, which the attach
/// session turns into a resize of the container's terminal.
const NOT_FORWARDED: &[i32] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGSYS,
    libc::SIGPIPE,
    libc::SIGCHLD,
    libc::SIGWINCH,
];

/// The signals the proxy catches: 1..=31 less the above, and the
/// real-time ones the C library leaves to applications.
pub fn forwarded_signals() -> Vec<i32> {
    (1..=31)
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
        .filter(|s| !NOT_FORWARDED.contains(s))
        .collect()
}

/// Catches signals from the moment it is installed (so none that arrives
/// while the container is being created is lost: it is queued) and
/// forwards them once a target is known.
pub struct SigProxy {
    catchers: Vec<JoinHandle<()>>,
    rx: Option<mpsc::Receiver<i32>>,
    forwarder: Option<JoinHandle<()>>,
}

impl SigProxy {
    /// Installs the handlers. A signal that cannot be caught here is
    /// skipped (it keeps its default action).
    pub fn install() -> SigProxy {
        let (tx, rx) = mpsc::channel(64);
        let mut catchers = Vec::new();
        for n in forwarded_signals() {
            let Ok(mut stream) = signal(SignalKind::from_raw(n)) else {
                continue;
            };
            let tx = tx.clone();
            catchers.push(tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(n).await.is_err() {
                        return;
                    }
                }
            }));
        }
        SigProxy {
            catchers,
            rx: Some(rx),
            forwarder: None,
        }
    }

    /// Starts forwarding (queued signals first) to the container whose
    /// shim listens on `shim_socket`.
    pub fn forward_to(&mut self, container: String, shim_socket: PathBuf) {
        let Some(mut rx) = self.rx.take() else { return };
        self.forwarder = Some(tokio::spawn(async move {
            let mut client: Option<RpcClient> = None;
            while let Some(sig) = rx.recv().await {
                if client.is_none() {
                    match RpcClient::connect(&shim_socket, "berth sig-proxy").await {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            eprintln!("berth: cannot forward signal {sig} to {container}: {e}");
                            continue;
                        }
                    }
                }
                if let Some(c) = client.as_mut() {
                    if let Err(e) = c
                        .call_value(shim_methods::KILL, &KillParams { signal: sig })
                        .await
                    {
                        // An exited container cannot take it; the session
                        // is about to end with its code anyway.
                        log::debug!("forward signal {sig} to {container}: {e}");
                        client = None;
                    }
                }
            }
        }));
    }
}

impl Drop for SigProxy {
    fn drop(&mut self) {
        for c in &self.catchers {
            c.abort();
        }
        if let Some(f) = &self.forwarder {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_the_usual_and_real_time_signals_only() {
        let s = forwarded_signals();
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGQUIT,
        ] {
            assert!(s.contains(&sig), "{sig}");
        }
        assert!(s.contains(&libc::SIGRTMIN()) && s.contains(&libc::SIGRTMAX()));
        for sig in [
            libc::SIGKILL,
            libc::SIGCHLD,
            libc::SIGPIPE,
            libc::SIGWINCH,
            libc::SIGSEGV,
        ] {
            assert!(!s.contains(&sig), "{sig}");
        }
    }
}
