//! berthd's own behaviour at the edges: dead shims, exhausted fds, full
//! disks, hostile roots, interrupted creates, bad strings.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{fill_disk, stderr, stdout, Env};

/// `berth wait` with a timeout, so a hang fails the test instead of CI.
fn wait_with_timeout(env: &Env, name: &str, secs: u64) -> std::process::Output {
    let child = env
        .cmd(&["wait", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wait");
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    });
    let out = child.wait_with_output().expect("wait output");
    drop(killer);
    out
}

/// An exited container's shim goes by itself once its exit is on disk;
/// `wait` then answers from the exit record.
#[test]
fn wait_returns_for_an_exited_container_whose_shim_is_gone() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "nine",
        "--",
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.05; done; exit 9",
    ]);
    // The shim goes right after the exit: take its pid while the
    // container waits for the go.
    let shim_pid = env.inspect("nine")["shim_pid"].as_i64().expect("shim pid") as i32;
    // The exec's own status is not checked: the init can see /go and exit
    // before `touch` has, and the kernel then kills `touch` (137).
    let _ = env
        .cmd(&["exec", "nine", "touch", "/go"])
        .output()
        .expect("berth exec");
    env.wait_until(10, "the exit", || env.inspect("nine")["status"] == "exited");
    env.wait_until(10, "the shim to go", || {
        !std::path::Path::new(&format!("/proc/{shim_pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{shim_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
    });
    let out = wait_with_timeout(&env, "nine", 10);
    assert!(
        out.status.success(),
        "wait failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "9");
    env.ok(&["rm", "nine"]);
    env.assert_clean();
}

/// Runs `cmd` to completion, killing it after `secs` so a hang fails the test.
fn output_within(mut cmd: std::process::Command, secs: u64) -> std::process::Output {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(secs)).is_err() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    });
    let out = child.wait_with_output().expect("output");
    let _ = tx.send(());
    let _ = killer.join();
    out
}

#[test]
fn accept_backs_off_when_out_of_fds_and_idle_clients_make_room() {
    let Some(env) = Env::new() else { return };
    let pid = env.berthd_pid().unwrap().to_string();
    let lim = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=32:32"])
        .output()
        .expect("prlimit (util-linux)");
    assert!(lim.status.success(), "prlimit: {}", stderr(&lim));
    // 100 clients that connect and never say anything.
    let sock = env.root.join("berthd.sock");
    let idle: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let log_len = env.berthd_log().len();
    let out = output_within(env.cmd(&["ps", "-a"]), 30);
    assert!(
        out.status.success(),
        "ps with 100 idle clients and 32 fds: {}\n{}",
        stderr(&out),
        env.berthd_log()
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A spinning accept loop logged millions of lines in seconds.
    assert!(
        log_len < 64 * 1024,
        "berthd logged {log_len} bytes in 2 s:\n{}",
        env.berthd_log()
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        env.berthd_log().contains("Too many open files"),
        "the fd shortage is reported once: {}",
        env.berthd_log()
    );
    drop(idle);
}

#[test]
fn berthd_starts_and_serves_on_a_full_disk() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    // Unmounted by the Env's drop after everything on it is killed and
    // before its temp dir goes (a guard dropped after the Env left the
    // temp dir behind, busy with the mount).
    env.mount_root_tmpfs(32 << 20);
    env.start_berthd();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "full",
        "--",
        "sh",
        "-c",
        "echo before; sleep 100",
    ]);
    env.wait_until(10, "the output", || {
        env.berth(&["logs", "full"]).stdout.starts_with(b"before")
    });
    env.kill_berthd();
    std::fs::remove_file(env.root.join("berthd.pid")).unwrap();
    fill_disk(&mut std::fs::File::create(env.root.join("filler")).expect("filler"));
    env.start_berthd();
    env.wait_restored();
    let log = env.berthd_log();
    let warning = log
        .lines()
        .find(|l| l.contains("pid file"))
        .unwrap_or_else(|| panic!("no pid file warning in:\n{log}"));
    assert_eq!(
        warning.matches("No space left on device").count(),
        1,
        "one clear message: {warning}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&env.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("full"), "{ps}");
    assert!(env.ok(&["logs", "full"]).starts_with("before"));
    env.ok(&["rm", "-f", "full"]);
    assert!(env.ps_all().is_empty());
    env.kill_berthd();
}

#[test]
fn berthd_refuses_a_root_or_parent_owned_by_another_user() {
    let Some(env) = Env::stopped() else { return };
    let nobody = nix::unistd::Uid::from_raw(65534);
    let theirs = env.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
    for root in [theirs.clone(), theirs.join("sub/root")] {
        let mut cmd = std::process::Command::new(env.bin.join("berthd"));
        cmd.arg("--root").arg(&root);
        let out = output_within(cmd, 20);
        assert!(!out.status.success(), "berthd accepted {}", root.display());
        let err = stderr(&out);
        assert!(
            err.contains("owned by uid 65534") && err.contains(&*theirs.to_string_lossy()),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(
        !theirs.join("sub").exists(),
        "nothing created under a refused root"
    );
    assert!(!theirs.join("berthd.sock").exists());
}

#[test]
fn cli_refuses_a_server_run_by_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let Some(env) = Env::stopped() else { return };
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake_root = env.dir.path().join("fake");
    std::fs::create_dir(&fake_root).unwrap();
    nix::unistd::chown(
        &fake_root,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    // A berthd of another user, on a root that user owns: a stand-in for
    // any process of theirs bound where root's CLI will connect.
    // A copy nobody can execute wherever the checkout lives (CI's may be
    // under a directory only root can enter).
    let berthd = env.dir.path().join("berthd-copy");
    std::fs::copy(env.bin.join("berthd"), &berthd).unwrap();
    std::fs::set_permissions(&berthd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = std::fs::File::create(env.dir.path().join("fake.log")).unwrap();
    let mut fake = std::process::Command::new(&berthd)
        .arg("--root")
        .arg(&fake_root)
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn berthd as nobody");
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
    let _reap = Reap(fake.id() as i32);
    let sock = fake_root.join("berthd.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The socket's file appears at bind(2), a moment before listen(2):
    // wait until it accepts, or the CLI may meet a refused connection.
    let accepting = || std::os::unix::net::UnixStream::connect(&sock).is_ok();
    while !accepting() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        accepting(),
        "berthd as nobody did not come up: {}",
        std::fs::read_to_string(env.dir.path().join("fake.log")).unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(env.bin.join("berth"));
    cmd.arg("--root").arg(&fake_root).arg("ps");
    let out = output_within(cmd, 20);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refusing to talk") && err.contains("peer uid 65534"),
        "{err}"
    );
    let _ = kill(Pid::from_raw(fake.id() as i32), Signal::SIGKILL);
    let _ = fake.wait();
}

#[test]
fn berthd_waits_for_the_lock_of_one_still_exiting() {
    use std::os::unix::fs::DirBuilderExt;
    let Some(mut env) = Env::stopped() else {
        return;
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&env.root)
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.root.join("berthd.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    // The "dying berthd" lets go half a second after the new one starts.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(held);
    });
    env.start_berthd();
    release.join().unwrap();
    env.ok(&["ps"]);
    assert!(!env.berthd_log().contains("already running"));
}

/// One line, non-zero, the expected words, the given exit code, and
/// nothing left behind.
fn refused(env: &Env, args: &[&str], code: i32, words: &[&str]) {
    let out = env.berth(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "berth {args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "berth {args:?}: expected {w:?} in {err:?}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    env.assert_clean();
}

/// A bundle as `runc spec` makes it, with `edit` applied to its config.
fn bundle(env: &Env, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let dir = env.dir.path().join(name);
    crate::util::make_rootfs(&dir.join("rootfs-real"));
    let spec = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&dir)
        .status()
        .expect("runc spec");
    assert!(spec.success());
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["root"]["path"] = "rootfs-real".into();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    dir
}

#[test]
fn strings_that_reach_files_or_the_runtime_are_validated() {
    let Some(env) = Env::new() else { return };
    refused(
        &env,
        &["run", "--hostname", "a\nb", "--", "true"],
        125,
        &["invalid hostname"],
    );
    refused(
        &env,
        &["run", "--hostname", "-x", "--", "true"],
        125,
        &["invalid hostname"],
    );
    refused(
        &env,
        &["run", "-e", "A B=1", "--", "true"],
        125,
        &["environment variable name"],
    );
    refused(
        &env,
        &["run", "-e", "A\n=1", "--", "true"],
        125,
        &["environment variable name"],
    );
    refused(
        &env,
        &["run", "-w", "/tmp\n/x", "--", "true"],
        125,
        &["working directory"],
    );
    let b = bundle(&env, "nlhost", |c| c["hostname"] = "bad\nhost".into());
    refused(
        &env,
        &["run", "--bundle", b.to_str().unwrap(), "--", "true"],
        125,
        &["invalid hostname"],
    );
    // A newline in a value is fine: programs use them.
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-e",
            "A=x\ny",
            "--",
            "sh",
            "-c",
            "echo \"$A\""
        ]),
        "x\ny\n"
    );
}

#[test]
fn exit_codes_come_from_typed_errors_not_message_text() {
    let Some(mut env) = Env::new() else { return };
    refused(
        &env,
        &["run", "--", "no-such-cmd"],
        127,
        &["executable file not found"],
    );
    refused(
        &env,
        &["run", "--", "/no/such/path"],
        127,
        &["no such file or directory"],
    );
    refused(&env, &["run", "--", "/etc"], 126, &["is a directory"]);
    refused(
        &env,
        &["run", "--", "/etc/passwd"],
        126,
        &["permission denied"],
    );
    // A rootfs the runtime refuses fails in the runtime: 125, whatever its
    // message says ("not found" or otherwise).
    let b = bundle(&env, "up", |c| c["root"]["path"] = "../../..".into());
    let out = env.berth(&["run", "--bundle", b.to_str().unwrap(), "--", "true"]);
    assert_ne!(out.status.code(), Some(127), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    // The runtime missing from berthd's PATH is berth's failure: 125.
    env.kill_berthd();
    env.berthd_env = vec![("PATH".into(), "/nonexistent".into())];
    env.start_berthd();
    refused(
        &env,
        &["run", "--", "true"],
        125,
        &["runc", "not found in PATH"],
    );
    // berthd unreachable: 125 for run.
    env.kill_berthd();
    let out = env.berth(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
}

#[test]
fn rootfs_through_a_symlink_is_resolved_and_shown() {
    let Some(env) = Env::new() else { return };
    let real = env.dir.path().join("real-rootfs");
    crate::util::make_rootfs(&real);
    let link = env.dir.path().join("link-rootfs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let id = env
        .ok(&[
            "run",
            "-d",
            "--rootfs",
            link.to_str().unwrap(),
            "--",
            "sleep",
            "100",
        ])
        .trim()
        .to_string();
    assert_eq!(env.inspect(&id)["rootfs"], real.to_str().unwrap());
    env.ok(&["rm", "-f", &id]);
    // A bundle whose rootfs is a symlink.
    let b = bundle(&env, "linked", |c| c["root"]["path"] = "rootfs".into());
    std::os::unix::fs::symlink("rootfs-real", b.join("rootfs")).unwrap();
    let id = env
        .ok(&[
            "run",
            "-d",
            "--bundle",
            b.to_str().unwrap(),
            "--",
            "sleep",
            "100",
        ])
        .trim()
        .to_string();
    assert_eq!(
        env.inspect(&id)["rootfs"],
        b.join("rootfs-real").to_str().unwrap()
    );
    env.ok(&["rm", "-f", &id]);
    env.assert_clean();
}

#[test]
fn a_create_cut_short_by_berthd_dying_says_the_container_may_exist() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.berthd_env = vec![("BERTH_TEST_CRASH_AT".into(), "after-shim".into())];
    env.start_berthd();
    let out = env.berth(&["run", "-d", "--name", "half", "--", "sleep", "1000"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("may exist") && err.contains("berth ps -a") && err.contains("half"),
        "{err}"
    );
    env.wait_berthd_exit();
    env.berthd_env.clear();
    env.start_berthd();
    env.wait_until(10, "adoption", || {
        env.inspect("half")["status"] == "running"
    });
    env.ok(&["rm", "-f", "half"]);
    env.assert_clean();
}

#[test]
fn a_list_larger_than_one_frame_reaches_ps() {
    let Some(env) = Env::new() else { return };
    // Each container's command is 400 kB (four 100 kB arguments, under the
    // kernel's per-argument limit), so three make a list reply of 1.2 MB,
    // past the 1 MiB frame limit, without thousands of containers.
    let arg = "a".repeat(100 * 1024);
    for i in 0..3 {
        let name = format!("big{i}");
        env.ok(&[
            "create", "--name", &name, "--", "true", &arg, &arg, &arg, &arg,
        ]);
    }
    let out = env.berth(&["ps", "-a", "--json"]);
    assert!(out.status.success(), "ps: {}", stderr(&out));
    assert!(out.stdout.len() > 1 << 20, "{} bytes", out.stdout.len());
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|c| c["command"]
        .as_array()
        .is_some_and(|a| a.len() == 5 && a[1].as_str() == Some(&arg))));
    let table = env.ok(&["ps", "-a"]);
    assert_eq!(table.lines().count(), 4, "{table}");
    env.ok(&["rm", "big0", "big1", "big2"]);
    env.assert_clean();
}

/// `Type=notify`: berthd says READY=1 on NOTIFY_SOCKET once its API socket
/// serves (a CLI call made the moment the datagram arrives succeeds, with
/// no retry), STOPPING=1 when it goes, and hands the variable to no shim.
#[test]
fn berthd_tells_systemd_it_is_ready_only_once_it_serves() {
    use std::os::unix::net::UnixDatagram;
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    env.berthd_env.push((
        "NOTIFY_SOCKET".into(),
        notify_path.to_string_lossy().into_owned(),
    ));
    env.spawn_berthd();
    let mut buf = [0u8; 512];
    let len = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 from berthd ({e}); log:\n{}", env.berthd_log()));
    let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
    // The first thing on the socket is readiness, and it is true now.
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    let pid = env.berthd_pid().unwrap();
    assert!(
        msg.lines().any(|l| l == format!("MAINPID={pid}")),
        "{msg:?}"
    );
    let out = env.berth(&["ps", "-a", "--json"]);
    assert!(
        out.status.success(),
        "ps right after READY=1: {}",
        stderr(&out)
    );

    env.ok(&["run", "-d", "--name", "quiet", "--", "sleep", "1000"]);
    let shim_pid = std::fs::read_to_string(
        std::path::Path::new(env.inspect("quiet")["state_dir"].as_str().unwrap()).join("shim.pid"),
    )
    .unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", shim_pid.trim())).unwrap();
    assert!(
        !environ
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(b"NOTIFY_SOCKET=")),
        "the shim inherited NOTIFY_SOCKET"
    );
    env.ok(&["rm", "-f", "quiet"]);

    let status = env.stop_berthd();
    assert!(status.success(), "berthd exited with {status}");
    let len = notify.recv(&mut buf).expect("STOPPING=1 from berthd");
    assert_eq!(&buf[..len], b"STOPPING=1\n");
}

/// Writes `text` as a berthd config file in the test's directory.
fn config_file(env: &Env, name: &str, text: &str) -> std::path::PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// berthd.toml: a flag beats the file, the file beats the default.
#[test]
fn berthd_config_file_is_read_and_flags_override_it() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let elsewhere = env.dir.path().join("file-root");
    let cfg = config_file(
        &env,
        "precedence.toml",
        &format!(
            "root = \"{}\"\nruntime = \"/nonexistent/berth-test-runtime\"\n\n[log]\nmax-size = \"64k\"\nmax-files = 2\n",
            elsewhere.display()
        ),
    );
    // --root (given by Env) beats the file's root; --log-max-files beats
    // the file's max-files; the file's runtime and max-size stand.
    env.berthd_args = vec![
        "--config".into(),
        cfg.to_string_lossy().into_owned(),
        "--log-max-files".into(),
        "3".into(),
    ];
    env.start_berthd();
    assert!(!elsewhere.exists(), "the file's root was used over --root");
    let out = env.berth(&["run", "-d", "--name", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/berth-test-runtime"),
        "the file's runtime: {}",
        stderr(&out)
    );
    env.stop_berthd();

    // With --runtime given, the file's runtime is not used; the log
    // defaults apply to containers that set none, and not to one that does.
    env.berthd_args.extend(["--runtime".into(), "runc".into()]);
    env.start_berthd();
    env.ok(&["create", "--name", "dflt", "--", "true"]);
    env.ok(&[
        "create",
        "--name",
        "own",
        "--log-max-size",
        "128k",
        "--",
        "true",
    ]);
    let log_config = |name: &str| {
        let v: serde_json::Value = serde_json::from_str(&env.ok(&[
            "inspect",
            "--format",
            "{{json .HostConfig.LogConfig.Config}}",
            name,
        ]))
        .unwrap();
        (
            v["max-size"].as_str().unwrap().to_string(),
            v["max-file"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(log_config("dflt"), ("65536".to_string(), "3".to_string()));
    assert_eq!(log_config("own"), ("131072".to_string(), "3".to_string()));
    env.ok(&["rm", "dflt", "own"]);
}

/// A config file berthd cannot use stops it before it touches anything:
/// one line naming the file and the key, non-zero, no root made.
#[test]
fn berthd_refuses_a_bad_config_file_naming_the_key() {
    let Some(env) = Env::stopped() else { return };
    let cases = [
        (
            "unknown.toml",
            "runtme = \"runc\"\n",
            "runtme: unknown field",
        ),
        (
            "section.toml",
            "[log]\nmax-files = 2\nmax-sise = \"1m\"\n",
            "line 3: log.max-sise: unknown field",
        ),
        (
            "size.toml",
            "[log]\nmax-size = \"17179869184g\"\n",
            "log.max-size: invalid size",
        ),
        ("files.toml", "[log]\nmax-files = 0\n", "log.max-files: "),
        (
            "type.toml",
            "[log]\nmax-files = \"five\"\n",
            "log.max-files: invalid type",
        ),
        (
            "subnet.toml",
            "[network]\nsubnet = \"10.42.0.0/33\"\n",
            "network.subnet: ",
        ),
        (
            "relative.toml",
            "data-root = \"var/lib/berth\"\n",
            "data-root: var/lib/berth is not an absolute path",
        ),
        ("syntax.toml", "[log\n", "line 1"),
    ];
    for (name, text, words) in cases {
        let cfg = config_file(&env, name, text);
        let mut cmd = std::process::Command::new(env.bin.join("berthd"));
        cmd.arg("--config").arg(&cfg).arg("--root").arg(&env.root);
        let out = output_within(cmd, 20);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(
            err.starts_with(&format!("berthd: config {}", cfg.display())) && err.contains(words),
            "{name}: {err}"
        );
        assert!(!env.root.exists(), "{name}: berthd made its root");
    }
    // A --config that does not exist is an error (the default path may be
    // absent: every setting has a default).
    let mut cmd = std::process::Command::new(env.bin.join("berthd"));
    cmd.arg("--config")
        .arg(env.dir.path().join("absent.toml"))
        .arg("--root")
        .arg(&env.root);
    let out = output_within(cmd, 20);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("absent.toml: No such file"),
        "{}",
        stderr(&out)
    );
    assert!(!env.root.exists());
}

/// A half-made container whose network cannot be torn down is not
/// forgotten: its directory (meta.json, net.json) and entry stay, saying
/// why, and the next berthd tears it down for good. Forgetting it leaked
/// the namespace, veth, lease and rules with nothing left to find them.
#[test]
fn a_half_made_container_whose_teardown_fails_is_kept_for_a_retry() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.berthd_env = vec![("BERTH_TEST_CRASH_AT".into(), "after-netns".into())];
    env.start_berthd();
    let out = env.berth(&["run", "-d", "--name", "half", "--", "sleep", "1000"]);
    assert!(!out.status.success(), "run succeeded past the crash point");
    assert!(!env.wait_berthd_exit().success(), "berthd did not die");
    assert!(!env.net_leftovers(&[]).is_empty(), "no network was set up");
    let dir = std::fs::read_dir(env.root.join("containers"))
        .unwrap()
        .flatten()
        .next()
        .expect("the half-made container's directory")
        .path();
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();

    // Every CNI plugin its teardown will run fails, saying so.
    let state_path = runtime_core::layout::net_state_in(&dir);
    let good = std::fs::read_to_string(&state_path).unwrap();
    // Whatever happens below, put the working plugins back before `env`
    // drops (locals drop in reverse order), so its teardown can clean up
    // even when an assertion fails while the plugins are broken.
    struct Restore<'a>(&'a std::path::Path, &'a str);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if self.0.exists() {
                let _ = std::fs::write(self.0, self.1);
            }
        }
    }
    let _restore = Restore(&state_path, &good);
    let mut state: serde_json::Value = serde_json::from_str(&good).unwrap();
    let broken = env.dir.path().join("broken-cni");
    std::fs::create_dir(&broken).unwrap();
    for plugin in state["conflist"]["plugins"].as_array().unwrap() {
        let path = broken.join(plugin["type"].as_str().unwrap());
        std::fs::write(
            &path,
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"test: DEL refused\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    state["cni_bin"] = serde_json::json!(broken);
    std::fs::write(&state_path, state.to_string()).unwrap();

    env.berthd_env.clear();
    env.start_berthd();
    // Restore tries to discard it, fails, and keeps it (not "restoring").
    let mut shown = serde_json::Value::Null;
    env.wait_until(20, "the discard attempt", || {
        shown = env
            .ps_all()
            .into_iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap_or(serde_json::Value::Null);
        shown.is_null() || shown["status"] != "restoring"
    });
    assert!(
        !shown.is_null(),
        "the entry was dropped though teardown failed"
    );
    let why = env.inspect(&id).to_string();
    assert!(why.contains("DEL refused"), "{why}");
    assert!(state_path.exists() && dir.join("meta.json").exists());
    assert!(!env.net_leftovers(&[]).is_empty());

    // The plugins work again: the next berthd finishes the job.
    std::fs::write(&state_path, &good).unwrap();
    env.kill_berthd();
    env.start_berthd();
    env.wait_until(20, "the retry", || env.ps_all().is_empty() && !dir.exists());
    let mut left = Vec::new();
    env.wait_until(10, "network teardown", || {
        left = env.net_leftovers(&[&id]);
        left.is_empty()
    });
    env.assert_clean();
}
