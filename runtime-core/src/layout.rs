//! Where everything lives under berth's root directory.
//!
//! All three binaries compute paths from here and nowhere else, so the
//! layout in DESIGN.md is written down once.

use std::path::{Path, PathBuf};

/// Default root, on tmpfs-like /run so a reboot starts clean.
pub const DEFAULT_ROOT: &str = "/run/berth";

/// Paths of one berth instance.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Wraps a root directory; nothing is created.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }
    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// berthd's API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("berthd.sock")
    }
    /// berthd's PID, for operators and scripts.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("berthd.pid")
    }
    /// Lock file that keeps two berthd off one root.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("berthd.lock")
    }
    /// Directory of all containers.
    pub fn containers(&self) -> PathBuf {
        self.dir.join("containers")
    }
    /// runc's own state root for this instance (kept apart from /run/runc).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    /// berth's network state (CNI IPAM leases), under the runtime root.
    pub fn net_dir(&self) -> PathBuf {
        self.dir.join("net")
    }
    /// The default busybox rootfs shared read-only by containers.
    pub fn default_rootfs(&self) -> PathBuf {
        self.dir.join("rootfs").join("busybox")
    }
    /// One container's paths.
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: self.containers().join(id),
        }
    }
}

/// Paths of one container's state directory.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    dir: PathBuf,
}

/// File names inside a container directory (the sockets are reached by name
/// relative to a directory fd, see `sockpath`).
pub const SHIM_SOCK: &str = "shim.sock";
/// Attach socket name.
pub const ATTACH_SOCK: &str = "attach.sock";

impl ContainerPaths {
    /// Paths for a container directory known by its path (the shim's view).
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        ContainerPaths { dir: dir.into() }
    }
    /// The console socket runc sends a tty container's pty master to.
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    /// The container's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// What the user asked for.
    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    /// The OCI bundle handed to runc.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// Mount point of the default rootfs overlay.
    pub fn bundle_rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// Overlay upper and work directories for the default rootfs.
    pub fn overlay_upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Overlay work directory.
    pub fn overlay_work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Shim process ID.
    pub fn shim_pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// Shim control socket.
    pub fn shim_sock(&self) -> PathBuf {
        self.dir.join(SHIM_SOCK)
    }
    /// Shim attach socket.
    pub fn attach_sock(&self) -> PathBuf {
        self.dir.join(ATTACH_SOCK)
    }
    /// The container log: a symlink to its newest segment `log.N` (see `logwrite`).
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// Exit record written by the shim.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit")
    }
    /// Written by berthd when the shim died before the container exited:
    /// no exit record will ever come.
    pub fn lost(&self) -> PathBuf {
        self.dir.join("lost")
    }
    /// The shim's own diagnostic log (it has no stderr once daemonized).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// runc's JSON log, where runc's error messages are read from.
    pub fn runc_log(&self) -> PathBuf {
        self.dir.join("runc.log")
    }
    /// The container init's PID, written by runc.
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
}
