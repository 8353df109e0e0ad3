//! The serving shim: a child subreaper in its own session whose one thread
//! runs the monitor loop, which also serves containerd's ttrpc (`server`).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::flags::Flags;
use crate::paths::Bundle;
use crate::publish::Publisher;
use crate::server::Server;
use crate::shim::Shim;

/// How long an exiting shim waits for its last events to reach containerd.
const FLUSH: Duration = Duration::from_millis(500);

/// Runs the shim until Shutdown; returns the process exit code.
pub fn serve(flags: &Flags, bundle: Bundle, socket: PathBuf, listener: UnixListener) -> i32 {
    match run(flags, bundle, socket.clone(), listener) {
        Ok(()) => {
            let _ = std::fs::remove_file(&socket);
            0
        }
        Err(e) => {
            log::error!("{e:#}");
            let _ = std::fs::remove_file(&socket);
            1
        }
    }
}

fn run(
    flags: &Flags,
    bundle: Bundle,
    socket: PathBuf,
    listener: UnixListener,
) -> anyhow::Result<()> {
    // One malloc arena: the threads here do little and rarely at once,
    // and a second arena is ~100 KiB of touched memory per shim.
    // SAFETY: mallopt only sets an allocator parameter.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Blocked before any thread exists, so every thread inherits it and
    // SIGCHLD is only ever read from the monitor's signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    nix::sys::prctl::set_child_subreaper(true)?;
    let _ = std::env::set_current_dir("/");
    runtime_core::atomic::write_until_reboot(
        &bundle.shim_pid(),
        std::process::id().to_string().as_bytes(),
    )?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher = Publisher::new(ttrpc_address, flags.namespace.clone());
    let shim = Arc::new(Shim::new(flags.id.clone(), bundle, socket, publisher));
    let mut server = Server::new(listener, crate::service::methods(shim.clone()))?;
    log::info!("serving task {} on {}", shim.id, shim.socket.display());
    crate::monitor::run(&shim, &sigfd, &mut server);
    // The last events (TaskDelete) are on their way: give them a moment.
    shim.publisher.flush(FLUSH);
    log::info!("shutdown");
    Ok(())
}
