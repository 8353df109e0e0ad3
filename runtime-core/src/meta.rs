//! meta.json: what the user asked for, written by berthd at create time.
//!
//! Together with the shim's answers and the exit record it is all berthd
//! needs to rebuild its view after a restart.

use serde::{Deserialize, Serialize};

/// The container as requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The process args.
    pub command: Vec<String>,
    /// Host path of the root filesystem (the lower dir for the default rootfs).
    pub rootfs: String,
    /// True when berth's default busybox rootfs is overlaid for this container.
    #[serde(default)]
    pub default_rootfs: bool,
    /// The user's bundle directory when `--bundle` was used.
    #[serde(default)]
    pub source_bundle: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    pub log: LogConfig,
    /// The OCI runtime binary.
    pub runtime: String,
    /// Made by `berth create`, to be started later by `berth start`, and
    /// not started yet (berthd clears it at the first start): a berthd
    /// restart keeps it while it is created (a `run` interrupted between
    /// create and start is removed instead), and so does a reboot.
    #[serde(default)]
    pub start_later: bool,
    /// How many times `berth start`/`restart` has run it again after it
    /// exited (shown by inspect).
    #[serde(default)]
    pub restart_count: u32,
    /// `--restart` as given (validated by berthd); the policy's state,
    /// and a policy changed by `update`, are in `restart.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Network, mounts, user, limits, security, labels, stop settings.
    #[serde(default)]
    pub options: crate::runopts::RunOptions,
    /// The image the container runs, when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageUse>,
    /// The read-only layers of the container's overlay (default rootfs
    /// or image), which its shim mounts in its own mount namespace at
    /// each start. Absent for a user's rootfs or bundle, and for
    /// containers whose overlay an older berthd mounted in the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<crate::rootfs::Lower>,
}

/// The image of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageUse {
    /// As the user named it.
    pub name: String,
    /// The image ID (its config digest).
    pub id: String,
    /// The image's StopSignal, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// Log rotation limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    /// Rotate when the current file would exceed this many bytes (0: never).
    pub max_size: u64,
    /// How many files to keep, the current one included.
    pub max_files: u32,
}

impl Default for LogConfig {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        LogConfig {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}
