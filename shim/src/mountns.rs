//! The container's overlay, in a mount namespace of the shim's own.
//!
//! Before the runtime runs, the shim leaves the host's mount namespace
//! (its `/` made a recursive slave, so nothing it mounts propagates back)
//! and mounts the overlay there. The runtime, started from here, sees the
//! rootfs; the host's mount table never holds it, so it cannot slow every
//! later container start (each new mount namespace copies the host's) and
//! it cannot outlive the shim: when the shim and the container are gone,
//! so is the namespace and the mount with it, whatever killed them.

use runtime_core::rootfs::{self, Overlay};
use runtime_core::shimcmd::ShimConfig;

/// Enters a private mount namespace and mounts the overlay, when the
/// container has one (a user's rootfs or bundle is used as it is).
pub fn enter(cfg: &ShimConfig) -> Result<(), String> {
    let Some(overlay) = &cfg.overlay else {
        return Ok(());
    };
    rootfs::enter_private_namespace().map_err(|e| e.to_string())?;
    overlay.mount().map_err(|e| e.to_string())
}

/// Unmounts the overlay once the runtime has deleted the container, so a
/// new shim (`start` of an exited container) is not mounting the same
/// upper dir while this one lingers.
pub fn release(overlay: Option<&Overlay>) {
    if let Some(o) = overlay {
        if let Err(e) = rootfs::unmount_if_mounted(&o.target) {
            log::warn!("{e}");
        }
    }
}
