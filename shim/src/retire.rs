//! An exited container holds no process. Once the init's exit record is
//! on disk, its output drained (the phase is `Exited` only then), its
//! attach and control clients served and no exec is left (every exec's
//! exit record on disk too), the shim goes: it takes down its sockets and
//! pid file, and lingers only while attach clients still take what is
//! queued for them. berthd and the CLI read the exit records from then
//! on; `rm` and `start` do the runtime's delete themselves, and `start`
//! runs a new shim.

use std::time::Instant;

use runtime_core::layout::ContainerPaths;

use crate::container::{Container, LINGER_LIMIT};
use crate::phase::Phase;

/// Called on every turn of the event loop: leaves `Exited` for
/// `Lingering` (which ends the loop) when nothing needs the shim.
/// `clients_pending`: some attach or control client has not yet taken
/// what is queued for it.
pub fn maybe_retire(c: &mut Container, clients_pending: bool) {
    let Phase::Exited(exit) = &c.procs.init().phase else {
        return;
    };
    let needed = !c.procs.all_recorded() // the only copy of an exit is ours
        || c.procs.init().held() // the first attach client is still expected
        || clients_pending
        || c.procs.execs_running();
    if needed {
        return;
    }
    log::info!(
        "container {} exited (code {}) and its exit is on disk: the shim exits",
        c.cfg.id,
        exit.exit_code
    );
    let exit = exit.clone();
    c.procs.init_mut().phase = Phase::Lingering {
        exit: Some(exit),
        until: Instant::now() + LINGER_LIMIT,
    };
    remove_endpoints(&c.paths);
}

/// Removes the pid file, then the sockets: from here on nobody reaches
/// this shim, and a berthd that looks finds no shim and reads the disk.
/// The pid file goes first, so a caller that finds no socket (or whose
/// connection this exit ends) also finds no shim and does the runtime's
/// delete itself (berthd's `shim::delete`).
pub fn remove_endpoints(paths: &ContainerPaths) {
    let _ = std::fs::remove_file(paths.shim_pid());
    let _ = std::fs::remove_file(paths.shim_sock());
    let _ = std::fs::remove_file(paths.attach_sock());
}
