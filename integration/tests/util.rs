//! The integration harness: one private berth instance per test (its own
//! temp root, its own runc root, its own berthd), torn down on drop even
//! when the test fails: berthd and every shim killed by PID, containers
//! removed with `runc delete -f`, overlays unmounted, the temp dir removed.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Fails (under CI) or skips (locally) when the machine cannot run containers.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges");
    }
    let has_runc = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()))
        .unwrap_or(false);
    if !has_runc {
        missing.push("runc (apt-get install runc)");
    }
    if runtime_core::rootfs::find_busybox().is_err() {
        missing.push("a static busybox (apt-get install busybox-static)");
    }
    if !Path::new("/usr/lib/cni/bridge").is_file() {
        missing.push("the CNI plugins (apt-get install containernetworking-plugins)");
    }
    if !Path::new("/usr/sbin/iptables").exists() {
        missing.push("iptables (apt-get install iptables)");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("integration prerequisites missing: {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Directory holding the built binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .to_path_buf();
    for b in ["berth", "berthd", "berth-shim"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run `cargo build --workspace` before the integration tests",
            dir.join(b).display()
        );
    }
    dir
}

/// One private berth instance.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub bin: PathBuf,
    berthd: Option<Child>,
    /// Extra args for berthd (e.g. --runtime).
    pub berthd_args: Vec<String>,
    /// Environment overrides for berthd.
    pub berthd_env: Vec<(String, String)>,
    /// A command berthd runs under (e.g. `unshare -m --propagation
    /// shared`, which execs it: the PID stays berthd's).
    pub berthd_wrapper: Vec<String>,
    /// This instance's own bridge and subnet (tests run in parallel).
    pub net: crate::netutil::NetClaim,
    /// The root is a tmpfs of ours (`mount_root_tmpfs`): unmounted on drop.
    root_mounted: bool,
}

impl Env {
    /// A fresh root and a running berthd; `None` when skipped locally.
    pub fn new() -> Option<Env> {
        let mut env = Env::stopped()?;
        env.start_berthd();
        Some(env)
    }

    /// A fresh root without berthd.
    pub fn stopped() -> Option<Env> {
        if !prerequisites() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("root");
        let net = crate::netutil::NetClaim::claim();
        Some(Env {
            dir,
            root,
            bin: bin_dir(),
            berthd: None,
            berthd_args: Vec::new(),
            berthd_env: Vec::new(),
            berthd_wrapper: Vec::new(),
            net,
            root_mounted: false,
        })
    }

    /// Gives berthd a data root of its own beside the runtime root (the
    /// two roots of a default install: /var/lib/berth and /run/berth);
    /// returns it. Call before berthd starts.
    pub fn split_roots(&mut self) -> PathBuf {
        let data = self.dir.path().join("data");
        self.berthd_args
            .extend(["--data-root".to_string(), data.display().to_string()]);
        data
    }

    /// What a reboot does to this instance: berthd, every shim and every
    /// container killed (by PID, from the pid files); with `wipe`, also
    /// what a reboot empties: the networks (veths, leases, rules,
    /// namespace pins) and the whole runtime root.
    pub fn simulate_reboot(&mut self, wipe: bool) {
        self.kill_berthd();
        let containers = self.root.join("containers");
        let mut inits = Vec::new();
        for e in std::fs::read_dir(&containers).unwrap().flatten() {
            let read = |f: &str| {
                std::fs::read_to_string(e.path().join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
            };
            // Only processes that are still ours: an exited container's
            // pid files may name PIDs reused since.
            let mentions = |pid: i32, file: &str, what: &str| {
                std::fs::read(format!("/proc/{pid}/{file}"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(what))
            };
            if let Some(shim) = read("shim.pid") {
                if mentions(shim, "cmdline", &self.root.to_string_lossy()) {
                    let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);
                }
            }
            let id = e.file_name().to_string_lossy().into_owned();
            if let Some(init) = read("init.pid").filter(|&p| mentions(p, "cgroup", &id)) {
                inits.push(init);
            }
        }
        for init in inits {
            let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
        }
        self.wait_until(10, "every shim and container to be gone", || {
            self.our_processes().is_empty()
        });
        if wipe {
            for e in std::fs::read_dir(&containers).unwrap().flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                runtime_core::net::teardown(&e.path(), &id).expect("network teardown");
            }
            // A reboot takes every mount with it, berthd's bind mount of
            // `containers` (the pins' private parent) included.
            let _ = nix::mount::umount2(&containers, nix::mount::MntFlags::MNT_DETACH);
            std::fs::remove_dir_all(&self.root).expect("empty the runtime root");
        }
    }

    /// Puts the (not yet used) root on a tmpfs of `size` bytes, so a test
    /// can fill the disk under berth. Unmounted when the Env drops.
    pub fn mount_root_tmpfs(&mut self, size: u64) {
        assert!(
            self.berthd.is_none(),
            "mount the root before starting berthd"
        );
        std::fs::create_dir_all(&self.root).expect("root dir");
        nix::mount::mount(
            Some("tmpfs"),
            &self.root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs root");
        self.root_mounted = true;
    }

    /// Starts berthd and waits for its READY=1 (sd_notify), sent once its
    /// socket serves. Connecting to the socket instead could reach the
    /// listening socket of a berthd just killed, still held for an instant
    /// by a child it had forked (closed at that child's exec).
    pub fn start_berthd(&mut self) {
        let path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let ready = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        ready
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("notify timeout");
        self.launch_berthd(Some(&path));
        let mut buf = [0u8; 512];
        match ready.recv(&mut buf) {
            Ok(n) if buf[..n].starts_with(b"READY=1\n") => {}
            got => panic!(
                "berthd did not come up ({got:?}); log:\n{}",
                self.berthd_log()
            ),
        }
    }

    /// Starts berthd without waiting for it.
    pub fn spawn_berthd(&mut self) {
        self.launch_berthd(None);
    }

    fn launch_berthd(&mut self, notify: Option<&Path>) {
        assert!(self.berthd.is_none(), "berthd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("berthd log");
        let berthd = self.bin.join("berthd");
        let mut cmd = match self.berthd_wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&berthd);
                c
            }
            None => Command::new(&berthd),
        };
        cmd.arg("--root")
            .arg(&self.root)
            .args(&self.berthd_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // Always this instance's own bridge and subnet (tests run in parallel).
        cmd.env("BERTH_BRIDGE", &self.net.bridge)
            .env("BERTH_BRIDGE_SUBNET", &self.net.subnet);
        // Never the machine's /etc/berth/berthd.toml: an empty file of our
        // own, unless the test names one.
        let config = self.dir.path().join("berthd.toml");
        if !config.exists() {
            std::fs::write(&config, "").expect("empty berthd.toml");
        }
        cmd.env("BERTH_CONFIG", &config);
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        for (k, v) in &self.berthd_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn berthd");
        self.berthd = Some(child);
    }

    /// The network settings this instance's berthd runs with (its own
    /// bridge and subnet).
    pub fn net_config(&self) -> runtime_core::net::NetConfig {
        runtime_core::net::NetConfig {
            bridge: self.net.bridge.clone(),
            subnet: self.net.subnet.clone(),
            cni_bin: runtime_core::net::DEFAULT_CNI_BIN.into(),
            dir: self.root.join("net"),
        }
    }

    /// berthd's PID, if running.
    pub fn berthd_pid(&self) -> Option<i32> {
        self.berthd.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILLs berthd (containers must not notice).
    pub fn kill_berthd(&mut self) {
        if let Some(mut child) = self.berthd.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to berthd and waits for it to exit.
    pub fn stop_berthd(&mut self) -> std::process::ExitStatus {
        let mut child = self.berthd.take().expect("berthd running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM berthd");
        child.wait().expect("wait berthd")
    }

    /// Waits for berthd to exit by itself (e.g. a crash point); its status.
    pub fn wait_berthd_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.berthd.take().expect("berthd running");
        child.wait().expect("wait berthd")
    }

    /// The journaled events of container `name` (the last hour, up to
    /// now), as `events --json` prints them.
    pub fn journal(&self, name: &str) -> Vec<serde_json::Value> {
        self.ok(&[
            "events",
            "--json",
            "--since",
            "1h",
            "--until",
            "0s",
            "--filter",
            &format!("container={name}"),
        ])
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect()
    }

    /// Waits until no container is "restoring" any more.
    pub fn wait_restored(&self) {
        self.wait_until(20, "restore to finish", || {
            self.ps_all().iter().all(|c| c["status"] != "restoring")
        });
    }

    pub fn berthd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// A `berth` command aimed at this instance.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("berth"));
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `berth ARGS` and returns its output.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run berth")
    }

    /// Runs `berth ARGS` with `input` on stdin.
    pub fn berth_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("berth output");
        writer.join().expect("stdin writer");
        out
    }

    /// Runs `berth ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed with {}: {}\nberthd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.berthd_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth ps -a --json`, parsed.
    pub fn ps_all(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["ps", "-a", "--json"])).expect("ps json")
    }

    /// `berth inspect ID`, parsed.
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", id])).expect("inspect json")
    }

    /// Waits until `cond` holds or panics after `secs`.
    pub fn wait_until(&self, secs: u64, what: &str, cond: impl FnMut() -> bool) {
        poll_until(secs, what, cond, || {
            format!("berthd log:\n{}", self.berthd_log())
        });
    }

    /// Starts berthd, lets it restore every container and SIGKILLs it
    /// again, `times` times: restores that must not repeat what an earlier
    /// one already did (events, restarts).
    pub fn restore_and_crash(&mut self, times: usize) {
        for _ in 0..times {
            self.start_berthd();
            self.wait_restored();
            self.kill_berthd();
        }
    }

    /// Live (non-zombie) processes whose command line mentions our root:
    /// shims and runc invocations of this instance.
    pub fn our_processes(&self) -> Vec<(i32, String)> {
        let needle = self.root.to_string_lossy().into_owned();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if Some(pid) == self.berthd_pid() {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if cmd.contains(&needle) && !zombie && !cmd.contains("berthd") {
                found.push((pid, cmd));
            }
        }
        found
    }

    /// Everything network-related this instance holds: veths on its
    /// bridge, netns mounts, IPAM leases, iptables rules naming its subnet
    /// or one of `ids`. Empty when nothing is left.
    pub fn net_leftovers(&self, ids: &[&str]) -> Vec<String> {
        let mut left: Vec<String> = self
            .net
            .bridge_ports()
            .into_iter()
            .map(|p| format!("veth {p}"))
            .collect();
        left.extend(
            crate::netutil::netns_mounts(&self.root)
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(
            crate::netutil::leases(&self.root)
                .into_iter()
                .map(|l| format!("lease {l}")),
        );
        // The bridge's fixed rules stay while berthd runs (tested on
        // their own in net.rs): not a container's leftover.
        let fixed = runtime_core::net::fixed::comment(&self.net.bridge);
        left.extend(
            self.net
                .iptables_rules(ids)
                .into_iter()
                .filter(|r| !r.contains(&fixed))
                .map(|r| format!("iptables {r}")),
        );
        left
    }

    /// runc's view of this instance's containers.
    pub fn runc_containers(&self) -> Vec<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.root.join("runc"))
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Asserts nothing of a container is left: not in ps, not in runc, no
    /// shim process, no state directory.
    pub fn assert_clean(&self) {
        // Removal may finish just after the client left (`run --rm`).
        let dirs = || -> Vec<std::ffi::OsString> {
            std::fs::read_dir(self.root.join("containers"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        self.wait_until(10, "a clean state", || {
            self.ps_all().is_empty()
                && self.runc_containers().is_empty()
                && self.our_processes().is_empty()
                && dirs().is_empty()
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_berthd();
        let containers = self.root.join("containers");
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for e in entries.flatten() {
                let dir = e.path();
                if let Ok(pid) = std::fs::read_to_string(dir.join("shim.pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let is_ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                            .map(|c| {
                                String::from_utf8_lossy(&c).contains(&*self.root.to_string_lossy())
                            })
                            .unwrap_or(false);
                        if is_ours {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
            }
        }
        for id in self.runc_containers() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(self.root.join("runc"))
                .args(["delete", "-f", &id])
                .output();
        }
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                // CNI DEL, the namespace unmounted (whatever the test left).
                let _ = runtime_core::net::teardown(&e.path(), &id);
                let _ = runtime_core::rootfs::unmount_if_mounted(&e.path().join("bundle/rootfs"));
            }
        }
        // The bridge's fixed rules (a SIGKILLed berthd leaves them, as
        // Docker's stay while its bridge does).
        let _ = runtime_core::net::fixed::remove(&self.net_config());
        // berthd's private bind mount for the namespace pins (it stays
        // after a SIGKILL, as /run/netns's does after `ip netns`).
        let _ = nix::mount::umount2(&containers, nix::mount::MntFlags::MNT_DETACH);
        if self.root_mounted {
            // Detached: a shim that was slow to die cannot keep it busy.
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds; on timeout, panics
/// naming `what` with `context()` (a log that tells why).
pub fn poll_until(
    secs: u64,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}; {}", context());
}

/// A script for `sh -c`: once a line arrives on stdin, `mib` MiB of zeros
/// on stdout, one MiB every 50 ms at most. A client that reads as it
/// comes keeps up with that, also when a loaded machine leaves its thread
/// unscheduled for a while: it falls 4 MiB (its queue in the shim) behind
/// only when unscheduled for ~200 ms at once. Output written as fast as
/// `head` can put even a test's reading client over its queue often
/// enough, under load, to be cut off, as the shim's stall budget rightly
/// does to a client that cannot keep up.
pub fn paced_zeros(mib: usize) -> String {
    format!(
        "read go; i=0; while [ $i -lt {mib} ]; do head -c 1m /dev/zero; sleep 0.05; i=$((i+1)); done"
    )
}

/// Writes to `f` until its filesystem refuses another byte (ENOSPC).
pub fn fill_disk(f: &mut std::fs::File) {
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Byte-sized leftovers too, so no page is left for anyone.
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
}

/// stdout of an output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies berth's default rootfs builder output into `dir` (a user rootfs).
pub fn make_rootfs(dir: &Path) {
    runtime_core::rootfs::ensure_default(dir).expect("build a rootfs");
}

/// A raw control client speaking JSON frames directly to a shim.
pub struct RawControl {
    pub stream: std::os::unix::net::UnixStream,
    next_id: u64,
}

impl RawControl {
    /// Connects to `name`'s shim control socket, without a hello.
    pub fn connect_silent(env: &Env, name: &str) -> RawControl {
        let id = env.inspect(name)["id"].as_str().expect("id").to_string();
        RawControl::silent_to_id(env, &id)
    }

    /// Connects to the shim of container `id`, without a hello and
    /// without asking berthd (which may be down).
    fn silent_to_id(env: &Env, id: &str) -> RawControl {
        let sock = env.root.join("containers").join(id).join("shim.sock");
        let stream = std::os::unix::net::UnixStream::connect(&sock).expect("connect control");
        // A shim that never answers fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        RawControl { stream, next_id: 1 }
    }

    /// Connects and says hello.
    pub fn connect(env: &Env, name: &str) -> RawControl {
        let id = env.inspect(name)["id"].as_str().expect("id").to_string();
        RawControl::connect_id(env, &id)
    }

    /// Connects to the shim of container `id` and says hello; berthd
    /// need not be up.
    pub fn connect_id(env: &Env, id: &str) -> RawControl {
        let mut c = RawControl::silent_to_id(env, id);
        let hello = c.call(
            "hello",
            serde_json::json!({"major": runtime_core::protocol::PROTOCOL_MAJOR, "minor": 0, "agent": "test"}),
        );
        assert!(hello.get("result").is_some(), "hello: {hello}");
        c
    }

    /// Sends one request without waiting for the reply.
    pub fn send(&mut self, method: &str, params: serde_json::Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let req = serde_json::json!({"id": id, "method": method, "params": params});
        runtime_core::frame::write_frame(&mut self.stream, 0, req.to_string().as_bytes())
            .expect("request frame");
        id
    }

    /// Reads one reply.
    pub fn recv(&mut self) -> serde_json::Value {
        let f = runtime_core::frame::read_frame(&mut self.stream)
            .expect("reply")
            .expect("reply frame");
        serde_json::from_slice(&f.payload).expect("reply json")
    }

    /// One request and its reply.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.send(method, params);
        self.recv()
    }
}

/// A raw attach client speaking the protocol directly to a shim.
pub struct RawAttach {
    pub stream: std::os::unix::net::UnixStream,
}

impl RawAttach {
    /// Connects to `name`'s attach socket and completes the handshake.
    pub fn connect(env: &Env, name: &str, stdin: bool) -> RawAttach {
        let sock = env.inspect(name)["attach_socket"]
            .as_str()
            .expect("socket")
            .to_string();
        let mut stream = std::os::unix::net::UnixStream::connect(&sock).expect("connect attach");
        let hello = serde_json::json!({"major": runtime_core::protocol::PROTOCOL_MAJOR, "minor": 0, "stdin": stdin});
        runtime_core::frame::write_frame(&mut stream, 0, hello.to_string().as_bytes())
            .expect("handshake");
        let reply = runtime_core::frame::read_frame(&mut stream)
            .expect("reply")
            .expect("reply frame");
        assert_eq!(
            reply.tag,
            0,
            "handshake refused: {}",
            String::from_utf8_lossy(&reply.payload)
        );
        RawAttach { stream }
    }

    /// Sends bytes to the container's stdin.
    pub fn send_stdin(&mut self, data: &[u8]) {
        runtime_core::frame::write_frame(&mut self.stream, runtime_core::attach::TAG_STDIN, data)
            .expect("stdin frame");
    }

    /// Reads frames until exit, error or EOF: (stdout bytes, exit code, error text).
    pub fn drain(mut self, mut on_stdout: impl FnMut(&[u8])) -> (Option<i64>, Option<String>) {
        use runtime_core::attach::{TAG_ERROR, TAG_EXIT, TAG_STDOUT};
        loop {
            match runtime_core::frame::read_frame(&mut self.stream) {
                Ok(Some(f)) if f.tag == TAG_STDOUT => on_stdout(&f.payload),
                Ok(Some(f)) if f.tag == TAG_EXIT => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&f.payload).expect("exit json");
                    return (v["exit_code"].as_i64(), None);
                }
                Ok(Some(f)) if f.tag == TAG_ERROR => {
                    return (None, Some(String::from_utf8_lossy(&f.payload).into_owned()))
                }
                Ok(Some(_)) => {}
                Ok(None) => return (None, None),
                Err(e) => return (None, Some(format!("read failed: {e}"))),
            }
        }
    }
}
