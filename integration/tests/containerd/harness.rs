//! A private containerd per test, torn down on drop even when the test
//! fails: containerd killed by PID, every shim of its bundles killed by the
//! PID it wrote, runc's state force-deleted, rootfs mounts and sockets
//! removed, then the temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const RUNTIME: &str = "io.containerd.berth.v2";
pub const SHIM: &str = "containerd-shim-berth-v2";
/// The pod sandbox image of `Ctrd::with_cri` (imported by the test).
pub const SANDBOX_IMAGE: &str = "berth.test/pause:1";

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// The berth prerequisites plus containerd and ctr.
fn prerequisites() -> bool {
    if !crate::util::prerequisites() {
        return false;
    }
    let missing: Vec<&str> = ["containerd", "ctr"]
        .into_iter()
        .filter(|b| !on_path(b))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "containerd prerequisites missing: {} (apt-get install containerd)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub struct Ctrd {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub rootfs: PathBuf,
    containerd: Option<Child>,
}

impl Ctrd {
    /// A running private containerd and a busybox rootfs; None when skipped.
    pub fn new() -> Option<Ctrd> {
        Ctrd::start(false)
    }

    /// The same with containerd's CRI plugin on: the berth runtime as the
    /// CRI runtime handler `berth` (README's config), `SANDBOX_IMAGE` as
    /// the pod sandbox image, CNI config and plugin dirs of its own (pods
    /// here use the host's network: no CNI call is made).
    pub fn with_cri() -> Option<Ctrd> {
        Ctrd::start(true)
    }

    fn start(cri: bool) -> Option<Ctrd> {
        if !prerequisites() {
            return None;
        }
        let bin = crate::util::bin_dir();
        assert!(
            bin.join(SHIM).is_file(),
            "{} is missing: run `cargo build --workspace` first",
            bin.join(SHIM).display()
        );
        // Short: containerd's socket path must fit sun_path.
        let dir = tempfile::Builder::new()
            .prefix("bc-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let rootfs = dir.path().join("rootfs");
        crate::util::make_rootfs(&rootfs);
        let d = dir.path().display();
        let (cri_off, cri_config) = if cri {
            (
                "",
                format!(
                    r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  # The pod sandbox asks for oom_score_adj -998, which needs
  # CAP_SYS_RESOURCE; machines like this one's VM deny it to root, so
  # keep the scores at or above containerd's own (as rootless setups do).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
  # containerd's default runtime, as in its default config.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
    runtime_type = "{RUNTIME}"
"#
                ),
            )
        } else {
            ("\"io.containerd.grpc.v1.cri\", ", String::new())
        };
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{cri_off}"io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/c.sock"
[debug]
  level = "info"
{cri_config}"#
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        let mut c = Ctrd {
            dir,
            bin,
            rootfs,
            containerd: None,
        };
        c.start_containerd();
        Some(c)
    }

    pub fn address(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn bundles(&self) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles().join(id)
    }

    pub fn start_containerd(&mut self) {
        assert!(self.containerd.is_none(), "containerd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .expect("containerd log");
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("containerd did not come up; log:\n{}", self.log());
    }

    /// SIGKILLs containerd (its shims must not notice).
    pub fn kill_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.address()).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run ctr")
    }

    /// `ctr ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed with {}: {}\ncontainerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run -d` of CMD on the berth runtime.
    pub fn run_detached(&self, id: &str, cmd: &[&str]) {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut args = vec!["run", "-d", "--runtime", RUNTIME, "--rootfs", &rootfs, id];
        args.extend_from_slice(cmd);
        self.ok(&args);
    }

    /// `ctr task ls` as (id, pid, status) rows.
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    pub fn task(&self, id: &str) -> Option<(u32, String)> {
        self.tasks()
            .into_iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, p, s)| (p, s))
    }

    pub fn wait_until(&self, secs: u64, what: &str, cond: impl FnMut() -> bool) {
        crate::util::poll_until(secs, what, cond, || {
            format!("containerd log:\n{}", self.log())
        });
    }

    /// PIDs of berth shims serving this containerd (their -address is ours).
    pub fn shims(&self) -> Vec<i32> {
        let addr = self.address().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.ends_with(SHIM));
            if is_shim && args.contains(&addr) && !is_zombie(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

/// Whether `pid` is gone or a zombie (dead, not yet collected by its reaper).
pub fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z"),
        Err(_) => true,
    }
}

fn cleanup_bundle(bundle: &Path) {
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(pid) = std::fs::read_to_string(bundle.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = Command::new("runc")
        .arg("--root")
        .arg(bundle.join("runc"))
        .args(["delete", "--force", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    if let Ok(addr) = std::fs::read_to_string(bundle.join("address")) {
        if let Some(sock) = addr.trim().strip_prefix("unix://") {
            let _ = std::fs::remove_file(sock);
        }
    }
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        self.kill_containerd();
        let bundles = self.dir.path().join("state/io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(&bundles).into_iter().flatten().flatten() {
            for b in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                cleanup_bundle(&b.path());
            }
        }
        for pid in self.shims() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // What containerd itself mounted under its root and state (the
        // CRI plugin's sandbox /dev/shm), deepest first.
        let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .filter(|p| p.starts_with(self.dir.path()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A client left running in the background (`ctr events`, a waiting
/// `ctr task exec`): killed by PID and collected on drop, also when the
/// test fails.
pub struct Bg {
    pub child: Child,
    pub out: PathBuf,
}

impl Bg {
    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Ctrd {
    /// Starts `ctr ARGS` in the background, its output to a file.
    pub fn background(&self, name: &str, args: &[&str]) -> Bg {
        let out = self.dir.path().join(format!("{name}.out"));
        let file = std::fs::File::create(&out).expect("output file");
        let child = self
            .cmd(args)
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn ctr");
        Bg { child, out }
    }

    /// `ctr events` from now on; wait for it to be subscribed before use
    /// (see `events_ready`).
    pub fn events(&self) -> Bg {
        self.background("events", &["events"])
    }
}

/// Threads of a process now.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

impl Ctrd {
    /// Returns once `ev` receives events: containerd publishes
    /// /namespaces/create for each namespace made here until one shows.
    pub fn events_ready(&self, ev: &Bg) {
        for i in 0..50 {
            self.ok(&["namespaces", "create", &format!("probe{i}")]);
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                if ev.output().contains("/namespaces/create") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("ctr events saw nothing: {}", ev.output());
    }
}
