//! An exited container holds no process. Once the init's exit record is
//! on disk, its output drained (the phase is `Exited` only then), its
//! attach and control clients served and no exec is left, the shim goes:
//! it takes down its sockets and pid file, and lingers only while attach
//! clients still take what is queued for them. berthd and the CLI read
//! the exit record from then on; `rm` and `start` do the runtime's delete
//! themselves, and `start` runs a new shim.

use std::time::Instant;

use crate::exec::ExecPhase;
use crate::phase::Phase;
use crate::server::{Shim, LINGER_LIMIT};

impl Shim {
    /// Called on every turn of the event loop: leaves `Exited` for
    /// `Lingering` (which ends the loop) when nothing needs the shim.
    pub fn maybe_retire(&mut self) {
        let Phase::Exited(exit) = &self.phase else {
            return;
        };
        let needed = self.record_retry.is_some() // the only copy of the exit is ours
            || self.hold_until.is_some() // the first attach client is still expected
            || self.attach_output_pending()
            || self.control_output_pending()
            || self
                .execs
                .table
                .values()
                .any(|e| !matches!(e.phase, ExecPhase::Exited(_)));
        if needed {
            return;
        }
        log::info!(
            "container {} exited (code {}) and its exit is on disk: the shim exits",
            self.cfg.id,
            exit.exit_code
        );
        self.phase = Phase::Lingering {
            exit: Some(exit.clone()),
            until: Instant::now() + LINGER_LIMIT,
        };
        self.remove_endpoints();
    }

    /// Removes the pid file and the sockets: from here on nobody reaches
    /// this shim, and a berthd that looks finds no shim and reads the
    /// disk. The pid file goes first: whoever finds a socket gone (or a
    /// connection closed) then also finds no live shim, never "a shim
    /// that lives but does not answer".
    pub fn remove_endpoints(&self) {
        let _ = std::fs::remove_file(self.paths.shim_pid());
        let _ = std::fs::remove_file(self.paths.shim_sock());
        let _ = std::fs::remove_file(self.paths.attach_sock());
    }
}
