//! berthd: the supervisor daemon.
//!
//! berthd keeps no state it cannot rebuild: on start it reads
//! `<root>/containers/*/meta.json` and asks each shim (or reads its exit
//! record), and from then on every container has a watcher task holding a
//! `wait` long poll on its shim. Events are hints; the shim is the truth.

mod create;
mod lifecycle;
mod reconcile;
mod registry;
mod remove;
mod server;
mod shim;
mod watch;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use runtime_core::layout::Root;

pub use registry::Registry;

/// berthd's settings, from its command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    /// The OCI runtime (a name looked up in PATH, or a path).
    pub runtime: PathBuf,
    /// The berth-shim binary.
    pub shim: PathBuf,
}

/// Everything the request handlers share.
pub struct Daemon {
    pub config: Config,
    pub root: Root,
    pub registry: Registry,
    /// Serializes building the default rootfs.
    pub rootfs_build: tokio::sync::Mutex<()>,
}

/// Creates the root (0700), takes its lock, reconciles and serves until
/// SIGTERM or SIGINT. Never touches a shim on the way out.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let root = Root::new(&config.root);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root.dir())
        .with_context(|| format!("create root {}", root.dir().display()))?;
    fs::set_permissions(root.dir(), fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", root.dir().display()))?;
    for d in [root.containers(), root.runc_root()] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .with_context(|| format!("create {}", d.display()))?;
    }
    let lock_path = root.lock_file();
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another berthd is already running on {} (lock {} is held)",
            root.dir().display(),
            lock_path.display()
        ),
        Err((_, e)) => bail!("lock {}: {e}", lock_path.display()),
    };
    runtime_core::atomic::write(&root.pid_file(), std::process::id().to_string().as_bytes())?;
    let daemon = Arc::new(Daemon {
        config,
        root,
        registry: Registry::default(),
        rootfs_build: tokio::sync::Mutex::new(()),
    });
    let listener = server::bind(&daemon)?;
    // Serve at once: containers not yet reconciled answer "restoring".
    watch::restore_all(&daemon);
    log::info!(
        "berthd {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        daemon.root.api_socket().display()
    );
    server::serve(daemon, listener).await
}
