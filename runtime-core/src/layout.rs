//! Where everything lives: the runtime root and the data root.
//!
//! All three binaries compute paths from here and nowhere else, so the
//! layout (ARCHITECTURE.md, "On disk") is written down once.
//!
//! Two roots (DESIGN.md "Two roots"): what only means something while the
//! machine is up (sockets, pid files, runc's state, network namespace
//! pins, IPAM leases) is under the runtime root (`--root`, default
//! `/run/berth`, a tmpfs that a reboot empties); what must outlive a
//! reboot (container definitions, the bundle's config, the writable
//! layer, logs, exit records, restart-policy state, the event journal,
//! images) is under the data root (`--data-root`, default
//! `/var/lib/berth`). Given one directory for both, every container's
//! files share one directory, exactly the layout of berth before the
//! split.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// Default runtime root, on tmpfs-like /run so a reboot starts clean.
pub const DEFAULT_ROOT: &str = "/run/berth";
/// Default data root (with the default runtime root).
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";

/// The data root when none is given: `/var/lib/berth` with the default
/// runtime root, else the runtime root itself (a private `--root` stays
/// one directory, as it always was).
pub fn default_data_root(root: &Path) -> PathBuf {
    if root == Path::new(DEFAULT_ROOT) {
        PathBuf::from(DEFAULT_DATA_ROOT)
    } else {
        root.to_path_buf()
    }
}

/// The OCI runtime config in a bundle directory (a berth container's or
/// one given with `run --bundle`).
pub fn bundle_config(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// berth's record of a container's network (address, CNI result, port
/// mappings), in its runtime directory `dir`: present while the network
/// is set up, removed once it is torn down.
pub fn net_state_in(dir: &Path) -> PathBuf {
    dir.join("net.json")
}

/// The bind mount that pins a bridge container's network namespace, in
/// its runtime directory `dir` (it lives as long as the network, not the
/// process).
pub fn netns_in(dir: &Path) -> PathBuf {
    dir.join("netns")
}

/// Paths of one berth instance.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    data: PathBuf,
}

/// `meta.json`: its presence in a container's runtime directory marks a
/// container made before the split (see [`Root::container`]).
const META: &str = "meta.json";

impl Root {
    /// One directory for both roots; nothing is created.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Root {
            data: dir.clone(),
            dir,
        }
    }
    /// A runtime root and a data root (the same path is fine).
    pub fn with_data(dir: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        Root {
            dir: dir.into(),
            data: data.into(),
        }
    }
    /// The runtime root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The data root directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// True when both roots are one directory.
    pub fn is_single(&self) -> bool {
        self.dir == self.data
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
    /// Containers' runtime directories (sockets, pids, network pins).
    pub fn containers(&self) -> PathBuf {
        self.dir.join("containers")
    }
    /// Containers' data directories (definition, bundle, logs, exits).
    pub fn data_containers(&self) -> PathBuf {
        self.data.join("containers")
    }
    /// runc's own state root for this instance (kept apart from /run/runc).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    /// berth's network state (CNI IPAM leases), under the runtime root:
    /// after a reboot no container holds an address.
    pub fn net_dir(&self) -> PathBuf {
        self.dir.join("net")
    }
    /// The event journal's directory.
    pub fn events_dir(&self) -> PathBuf {
        self.data.join("events")
    }
    /// The default busybox rootfs shared read-only by containers: under
    /// the data root, since the overlays of containers that outlive a
    /// reboot are stacked on it.
    pub fn default_rootfs(&self) -> PathBuf {
        self.data.join("rootfs").join("busybox")
    }
    /// The IDs of every container directory under either root (a valid
    /// ID as its name), each once, sorted: what a restarted berthd
    /// restores and what `berth logs` searches while berthd is down.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        for dir in [self.data_containers(), self.containers()] {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for ent in read.flatten() {
                if let Some(id) = ent.file_name().to_str() {
                    if crate::id::validate("id", id).is_ok() {
                        ids.insert(id.to_string());
                    }
                }
            }
        }
        ids.into_iter().collect()
    }
    /// One container's paths. A container made by a berth from before
    /// the split has everything in its runtime directory (its meta.json is
    /// there): it is found there and stays there until it is removed.
    pub fn container(&self, id: &str) -> ContainerPaths {
        self.container_with(id, |dir| dir.join(META).exists())
    }

    /// [`Root::container`] for many containers in a row (berthd's
    /// `list`): with two roots, each container's meta.json is looked for
    /// relative to one open directory of the runtime root's containers,
    /// not along the whole path (at thousands of containers those walks
    /// were most of a `list`); with one root nothing is looked up.
    pub fn lookup(&self) -> ContainerLookup<'_> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let containers = if self.is_single() {
            None
        } else {
            rustix::fs::open(self.containers(), flags, Mode::empty()).ok()
        };
        ContainerLookup {
            root: self,
            containers,
        }
    }

    /// One container's paths, `made_before_split` telling whether its
    /// runtime directory holds its meta.json.
    fn container_with(
        &self,
        id: &str,
        made_before_split: impl FnOnce(&Path) -> bool,
    ) -> ContainerPaths {
        let dir = self.containers().join(id);
        let data = if self.is_single() || made_before_split(&dir) {
            dir.clone()
        } else {
            self.data_containers().join(id)
        };
        ContainerPaths { dir, data }
    }
}

/// See [`Root::lookup`].
pub struct ContainerLookup<'a> {
    root: &'a Root,
    /// The runtime root's containers directory (`O_PATH`), with two roots.
    containers: Option<OwnedFd>,
}

impl ContainerLookup<'_> {
    /// What [`Root::container`] says of `id`.
    pub fn container(&self, id: &str) -> ContainerPaths {
        self.root.container_with(id, |dir| match &self.containers {
            Some(fd) => {
                let rel = Path::new(id).join(META);
                rustix::fs::statat(fd, &rel, AtFlags::empty()).is_ok()
            }
            None => dir.join(META).exists(),
        })
    }
}

/// Paths of one container: its runtime directory and its data directory
/// (one and the same with a single root, or for a container made before
/// the split).
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    dir: PathBuf,
    data: PathBuf,
}

/// File names inside a container directory (the sockets are reached by name
/// relative to a directory fd, see `sockpath`).
pub const SHIM_SOCK: &str = "shim.sock";
/// Attach socket name.
pub const ATTACH_SOCK: &str = "attach.sock";

impl ContainerPaths {
    /// Paths for a container known by its one directory (both roots in
    /// one, or a container made before the split).
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        ContainerPaths {
            data: dir.clone(),
            dir,
        }
    }
    /// Paths for a container known by its runtime and data directories
    /// (the shim's and the CLI's view).
    pub fn from_dirs(dir: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        ContainerPaths {
            dir: dir.into(),
            data: data.into(),
        }
    }
    /// The container's runtime directory: sockets, pid files, runc's log,
    /// the network namespace pin and the files the network setup writes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The container's data directory: what outlives a reboot.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// Both directories, each once (to create or remove them).
    pub fn dirs(&self) -> Vec<&Path> {
        if self.dir == self.data {
            vec![&self.dir]
        } else {
            vec![&self.data, &self.dir]
        }
    }
    /// The console socket runc sends a tty container's pty master to.
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    /// What the user asked for.
    pub fn meta(&self) -> PathBuf {
        self.data.join(META)
    }
    /// The OCI bundle handed to runc: config.json and the rootfs mount
    /// point, kept with the definition so a container runs again after a
    /// reboot.
    pub fn bundle(&self) -> PathBuf {
        self.data.join("bundle")
    }
    /// The bundle's OCI runtime config.
    pub fn bundle_config(&self) -> PathBuf {
        bundle_config(&self.bundle())
    }
    /// The container's network record (see [`net_state_in`]).
    pub fn net_state(&self) -> PathBuf {
        net_state_in(&self.dir)
    }
    /// The container's network namespace pin (see [`netns_in`]).
    pub fn netns(&self) -> PathBuf {
        netns_in(&self.dir)
    }
    /// Mount point of the default rootfs overlay.
    pub fn bundle_rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// Overlay upper directory: the container's writable layer.
    pub fn overlay_upper(&self) -> PathBuf {
        self.data.join("upper")
    }
    /// Overlay work directory (on the upper's filesystem, as overlayfs
    /// requires).
    pub fn overlay_work(&self) -> PathBuf {
        self.data.join("work")
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
        self.data.join("log")
    }
    /// Exit record written by the shim.
    pub fn exit(&self) -> PathBuf {
        self.data.join("exit")
    }
    /// The exit record of the previous run, set aside while an exited
    /// container is started again.
    pub fn previous_exit(&self) -> PathBuf {
        self.data.join("exit.previous")
    }
    /// Exit record of one exec'd process, written by the shim (the same
    /// record as the init's), so no exec's exit is lost with the shim's
    /// memory. Exec IDs are `[0-9A-Za-z_-]`, so this stays one file name.
    pub fn exec_exit(&self, exec_id: &str) -> PathBuf {
        self.data.join(format!("exec-{exec_id}.exit"))
    }
    /// The OCI process file `runc exec` reads for one exec; written by
    /// the shim and removed once runc has run (runtime root).
    pub fn exec_process_file(&self, exec_id: &str) -> PathBuf {
        self.dir.join(format!("exec-{exec_id}.json"))
    }
    /// Where `runc exec --pid-file` writes the exec's PID (transient).
    pub fn exec_pid_file(&self, exec_id: &str) -> PathBuf {
        self.dir.join(format!("exec-{exec_id}.pid"))
    }
    /// The console socket runc hands an exec's pty to (transient).
    pub fn exec_console_socket(&self, exec_id: &str) -> PathBuf {
        self.dir.join(format!("exec-{exec_id}.console"))
    }
    /// berthd's marker that an exec's `exec_exit` was journaled
    /// ("pending" before the append, "done" after), beside `exit.event`.
    pub fn exec_event_mark(&self, exec_id: &str) -> PathBuf {
        self.data.join(format!("exec-{exec_id}.event"))
    }
    /// The exec ID of an exec exit record's file name.
    pub fn exec_id_of_exit(file_name: &str) -> Option<&str> {
        file_name.strip_prefix("exec-")?.strip_suffix(".exit")
    }
    /// Written by berthd when the shim died before the container exited:
    /// no exit record will ever come.
    pub fn lost(&self) -> PathBuf {
        self.data.join("lost")
    }
    /// The restart policy's state.
    pub fn restart_state(&self) -> PathBuf {
        self.data.join("restart.json")
    }
    /// The last exit journaled (so it is journaled once).
    pub fn exit_event_mark(&self) -> PathBuf {
        self.data.join("exit.event")
    }
    /// The OOM kills of the current run already journaled (so each is
    /// journaled once, and the exit's `oom` event is not repeated).
    pub fn oom_event_mark(&self) -> PathBuf {
        self.data.join("oom.event")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_keeps_every_file_in_one_container_directory() {
        let r = Root::new("/r");
        let c = r.container("c1");
        assert_eq!(c.dirs(), vec![Path::new("/r/containers/c1")]);
        for p in [
            c.meta(),
            c.exit(),
            c.log(),
            c.shim_sock(),
            c.restart_state(),
            c.net_state(),
            c.netns(),
        ] {
            assert_eq!(p.parent(), Some(Path::new("/r/containers/c1")), "{p:?}");
        }
        assert_eq!(r.events_dir(), Path::new("/r/events"));
    }

    #[test]
    fn two_roots_split_what_outlives_a_reboot_from_what_does_not() {
        let r = Root::with_data("/run/b", "/var/lib/b");
        let c = r.container("c1");
        let run = Path::new("/run/b/containers/c1");
        let data = Path::new("/var/lib/b/containers/c1");
        for p in [c.shim_sock(), c.attach_sock(), c.shim_pid(), c.init_pid()] {
            assert_eq!(p.parent(), Some(run), "{p:?}");
        }
        for p in [
            c.meta(),
            c.exit(),
            c.previous_exit(),
            c.lost(),
            c.log(),
            c.restart_state(),
            c.exit_event_mark(),
            c.bundle(),
            c.overlay_upper(),
        ] {
            assert_eq!(p.parent(), Some(data), "{p:?}");
        }
        assert_eq!(c.dirs(), vec![data, run]);
        assert!(r.default_rootfs().starts_with("/var/lib/b"));
        assert!(r.runc_root().starts_with("/run/b"));
    }

    #[test]
    fn a_container_made_before_the_split_is_found_where_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let old = run.join("containers/old1");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(META), "{}").unwrap();
        let r = Root::with_data(&run, tmp.path().join("data"));
        let c = r.container("old1");
        assert_eq!(c.meta(), old.join(META));
        assert_eq!(c.dirs(), vec![old.as_path()]);
        std::fs::create_dir_all(tmp.path().join("data/containers/new1")).unwrap();
        std::fs::create_dir_all(run.join("containers/new1")).unwrap();
        std::fs::create_dir_all(run.join("containers/../x")).unwrap();
        assert_eq!(r.container_ids(), ["new1", "old1"]);
        let n = r.container("new1");
        assert_eq!(n.meta(), tmp.path().join("data/containers/new1/meta.json"));
        // The lookup for many finds each where `container` does.
        let many = r.lookup();
        assert!(many.containers.is_some());
        assert_eq!(many.container("old1").meta(), old.join(META));
        assert_eq!(many.container("new1").meta(), n.meta());
        assert_eq!(many.container("gone").dir(), r.container("gone").dir());
        assert_eq!(
            many.container("gone").data_dir(),
            r.container("gone").data_dir()
        );
        // With one root there is nothing to look up.
        assert!(Root::new(&run).lookup().containers.is_none());
    }

    #[test]
    fn the_data_root_defaults_to_var_lib_only_with_the_default_root() {
        assert_eq!(
            default_data_root(Path::new(DEFAULT_ROOT)),
            Path::new(DEFAULT_DATA_ROOT)
        );
        assert_eq!(default_data_root(Path::new("/x")), Path::new("/x"));
    }
}
