//! The container's overlay, in a mount namespace of the shim's own.
//!
//! Before the runtime runs, the shim leaves the host's mount namespace
//! (its `/` made a recursive slave, so nothing it mounts propagates back)
//! and mounts the overlay there. The runtime, started from here, sees the
//! rootfs; the host's mount table never holds it, so it cannot slow every
//! later container start (each new mount namespace copies the host's) and
//! it cannot outlive the shim: when the shim and the container are gone,
//! so is the namespace and the mount with it, whatever killed them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use runtime_core::layout;
use runtime_core::net::netns;
use runtime_core::rootfs::{self, Overlay};
use runtime_core::shimcmd::ShimConfig;

/// Enters a private mount namespace and mounts the overlay, when the
/// container has one (a user's rootfs or bundle is used as it is).
pub fn enter(cfg: &ShimConfig) -> Result<(), String> {
    let Some(overlay) = &cfg.overlay else {
        return Ok(());
    };
    rootfs::enter_private_namespace().map_err(|e| e.to_string())?;
    if let Some(containers) = cfg.state_dir.parent() {
        shed_other_pins(&cfg.state_dir, containers)?;
    }
    overlay.mount().map_err(|e| e.to_string())
}

/// Leaves the other containers' network namespace pins behind. The copy
/// of the host's mount table this namespace starts with holds one pin per
/// bridge container under the runtime root's `containers` (a bind mount
/// of itself, `netns::isolate_pins`), and the runtime copies and walks
/// all of them again on every start (its own namespace, the rslave of
/// `/`, pivot_root's unmount of the old root): at 1,000 extra mounts a
/// start took ~20 ms longer. So `containers` is unmounted here, leaving
/// the same directory without its mounts, and the container's own pin is
/// bound back from a descriptor opened before. It is the only pin a
/// config.json berthd writes can name: a `container:` network joins
/// through the other container's `/proc/PID/ns/net`. (The config is not
/// parsed here: oci-spec's parser would double the shim's size.)
fn shed_other_pins(state_dir: &Path, containers: &Path) -> Result<(), String> {
    let pins = match netns::mounts_under(containers) {
        Some(pins) if !pins.is_empty() => pins,
        _ => return Ok(()),
    };
    let own = layout::netns_in(state_dir);
    let keep = if pins.contains(&own) {
        Some(File::open(&own).map_err(|e| format!("open {}: {e}", own.display()))?)
    } else {
        None
    };
    // A bind stacked twice (two berthds racing long ago) goes layer by
    // layer; a few at most. `containers` is a mount point (the pins were
    // found under it): unmount first, then look again. Each look reads
    // the whole mount table, ~1 ms at 1,000 pins, on every start.
    for _ in 0..4 {
        umount2(containers, MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmount {}: {e}", containers.display()))?;
        if !netns::is_mounted(containers) {
            break;
        }
    }
    if let Some(file) = keep {
        let source = format!("/proc/self/fd/{}", file.as_raw_fd());
        mount(
            Some(source.as_str()),
            &own,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} again: {e}", own.display()))?;
    }
    Ok(())
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
