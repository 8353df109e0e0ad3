//! berthd: the supervisor daemon.
//!
//! berthd keeps no state it cannot rebuild: on start it reads
//! `<root>/containers/*/meta.json` and asks each shim (or reads its exit
//! record), and from then on every container has a watcher task holding a
//! `wait` long poll on its shim. Events are hints; the shim is the truth.

mod clients;
pub mod config_file;
mod create;
pub mod events;
mod exec;
mod image;
mod lifecycle;
mod listing;
mod netsetup;
pub mod notify;
mod pause;
mod reconcile;
mod registry;
mod remove;
mod restart;
mod server;
mod shim;
mod start;
mod stats;
mod stop;
mod top;
mod trust;
mod update;
mod validate;
mod watch;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use runtime_core::layout::Root;

pub use registry::Registry;

/// berthd's settings, from its command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    /// Where the image store lives (`<data_root>/images`).
    pub data_root: PathBuf,
    /// The OCI runtime (a name looked up in PATH, or a path).
    pub runtime: PathBuf,
    /// The berth-shim binary.
    pub shim: PathBuf,
    /// Log limits of containers that set none (`--log-max-*`, `[log]`).
    pub log: runtime_core::meta::LogConfig,
    /// Size bounds of the event journal.
    pub events: events::JournalLimits,
    /// The default bridge network (`--bridge`, `--bridge-subnet`).
    pub net: runtime_core::net::NetConfig,
    /// systemd readiness (`Type=notify`).
    pub notify: notify::Notifier,
}

/// Everything the request handlers share.
pub struct Daemon {
    pub config: Config,
    pub root: Root,
    pub registry: Registry,
    /// Serializes building the default rootfs.
    pub rootfs_build: tokio::sync::Mutex<()>,
    /// The event journal (`berth events`).
    pub journal: events::Journal,
}

/// How long a new berthd waits for the root lock: a berthd that was just
/// SIGKILLed holds it until the kernel has finished tearing it down.
const LOCK_GRACE: Duration = Duration::from_secs(3);

/// Creates the root (0700), takes its lock, reconciles and serves until
/// SIGTERM or SIGINT. Never touches a shim on the way out.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let root = Root::with_data(&config.root, &config.data_root);
    // The runtime root first, then the data root (the same directory when
    // only --root is given): each 0700, owned by us, with its containers.
    let mut made = vec![(root.dir(), vec![root.containers(), root.runc_root()])];
    if !root.is_single() {
        made.push((root.data_dir(), vec![root.data_containers()]));
    }
    for (top, subdirs) in made {
        trust::check_ancestors(top)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(top)
            .with_context(|| format!("create root {}", top.display()))?;
        // Checked again now that it exists: a directory someone else owns
        // could be given back its mode and its socket replaced at any time.
        trust::check_owned(top)?;
        fs::set_permissions(top, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", top.display()))?;
        for d in subdirs {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("create {}", d.display()))?;
            trust::check_owned(&d)?;
        }
    }
    let _lock = lock_root(&root.lock_file()).await?;
    // Two berthds on one data root would each restore (and restart) the
    // other's containers: the data root is locked too.
    let _data_lock = match root.is_single() {
        true => None,
        false => Some(lock_root(&root.data_dir().join("berthd.lock")).await?),
    };
    write_pid_file(&root);
    // Network namespace pins live under the runtime root's containers:
    // keep them from propagating into every shim's mount namespace.
    if let Err(e) = runtime_core::net::netns::isolate_pins(&root.containers()) {
        log::warn!("{e}; each container's namespace pin will reach every shim's mount namespace");
    }
    // The journal must outlive a reboot: under the data root.
    let journal = events::Journal::open(&root.events_dir(), config.events)?;
    let daemon = Arc::new(Daemon {
        config,
        root,
        registry: Registry::default(),
        rootfs_build: tokio::sync::Mutex::new(()),
        journal,
    });
    // The bridge's fixed rules, off the path of this start (the first
    // bridge container's setup waits for them if they are not there yet).
    let net = daemon.config.net.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = runtime_core::net::fixed::ensure(&net) {
            log::warn!("{e}");
        }
    });
    // Caught before the restore: at thousands of containers it takes a
    // few hundred ms, and a SIGTERM then must still stop berthd through
    // the steps below.
    let mut stop = server::Stop::catch().context("install SIGTERM/SIGINT handlers")?;
    let listener = server::bind(&daemon)?;
    // Serve once every container on disk is in the table (each adopted
    // in its own task meanwhile): those not yet reconciled answer
    // "restoring".
    let restored = tokio::select! {
        () = watch::restore_all(&daemon) => true,
        () = stop.asked() => false,
    };
    let served = if restored {
        log::info!(
            "berthd {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            daemon.root.api_socket().display()
        );
        server::serve(Arc::clone(&daemon), listener, &mut stop).await
    } else {
        // Clients queued on the socket were never served; the containers
        // not yet read are left as they are, for the next berthd.
        log::info!(
            "berthd stopping during its start-up restore; containers and shims keep running"
        );
        server::close(&daemon);
        Ok(())
    };
    if let Err(e) = runtime_core::net::netns::release_pins(&daemon.root.containers()) {
        log::warn!("{e}");
    }
    // With no container holding a network any more, the bridge's fixed
    // rules go too (running ones keep them across a berthd restart).
    let networked = daemon.root.container_ids().iter().any(|id| {
        runtime_core::net::read_state(daemon.root.container(id).dir())
            .is_some_and(|n| n.conflist.is_some())
    });
    if !networked {
        if let Err(e) = runtime_core::net::fixed::remove(&daemon.config.net) {
            log::warn!("{e}");
        }
    }
    served
}

/// Takes a root's `berthd.lock`, waiting up to [`LOCK_GRACE`] for a berthd
/// that is still on its way out.
async fn lock_root(lock_path: &Path) -> anyhow::Result<Flock<fs::File>> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    let give_up = tokio::time::Instant::now() + LOCK_GRACE;
    let mut told = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if tokio::time::Instant::now() >= give_up {
                    bail!(
                        "another berthd is already running on {} (lock {} is held)",
                        lock_path.parent().unwrap_or(lock_path).display(),
                        lock_path.display()
                    );
                }
                if !told {
                    log::info!(
                        "{} is held; waiting up to {LOCK_GRACE:?} for the berthd holding it to exit",
                        lock_path.display()
                    );
                    told = true;
                }
                file = f;
                // Looked at often: a restart waits for nothing but the old
                // berthd's exit (closing thousands of sockets takes a few ms).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((_, e)) => bail!("lock {}: {e}", lock_path.display()),
        }
    }
}

/// Writes berthd.pid. It is a convenience for operators, not a lock (the
/// flock is), so a full disk costs a warning, not the daemon: berthd must
/// come up to let `rm` free space.
fn write_pid_file(root: &Root) {
    let path = root.pid_file();
    let pid = std::process::id().to_string();
    if let Err(e) = runtime_core::atomic::write_until_reboot(&path, pid.as_bytes()) {
        log::warn!("no pid file: {e}");
        // A stale one would name another process.
        let _ = fs::remove_file(&path);
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: berthd holds one
/// connection per container (its watcher) plus one per client.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("getrlimit(RLIMIT_NOFILE): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The daemon's modules form no import cycle: reconcile and the
    /// verbs sit below the watcher and the server, which call them and
    /// are called by none (a start hands a new shim back to its caller to
    /// watch instead of importing the watcher that runs restart policies).
    #[test]
    fn daemon_modules_import_no_cycle() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(String::from)
            })
            .filter(|n| n != "mod")
            .collect();
        for name in &names {
            let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let mut deps = BTreeSet::new();
            for (i, _) in code.match_indices("super::") {
                let rest = &code[i + "super::".len()..];
                let list = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default(),
                    None => rest,
                };
                for item in list.split(',') {
                    let module: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if names.contains(&module) && &module != name {
                        deps.insert(module);
                    }
                    if !rest.starts_with('{') {
                        break;
                    }
                }
            }
            graph.insert(name.clone(), deps);
        }
        assert!(graph["watch"].contains("restart"), "the scan sees imports");
        // Depth-first search; a module met again on the current path is a cycle.
        fn visit<'a>(
            g: &'a BTreeMap<String, BTreeSet<String>>,
            n: &'a str,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|p| *p == n) {
                panic!("import cycle: {} -> {n}", path[at..].join(" -> "));
            }
            if !done.insert(n) {
                return;
            }
            path.push(n);
            for m in &g[n] {
                visit(g, m, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            visit(&graph, n, &mut Vec::new(), &mut done);
        }
    }
}
