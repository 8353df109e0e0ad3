//! `berth run` attached and detached, and what it passes to the container.

use crate::util::{stderr, stdout, Env};

#[test]
fn run_echo_prints_hello_and_exits_zero() {
    let Some(env) = Env::new() else { return };
    let out = env.berth(&["run", "--", "echo", "hello"]);
    assert_eq!(stdout(&out), "hello\n", "stderr: {}", stderr(&out));
    assert!(out.status.success());
}

#[test]
fn run_keeps_streams_apart_and_returns_exit_code() {
    let Some(env) = Env::new() else { return };
    let out = env.berth(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn signal_death_is_128_plus_n() {
    let Some(env) = Env::new() else { return };
    let attached = env
        .cmd(&["run", "--name", "sig", "--", "sleep", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    env.wait_until(10, "container running", || {
        env.ps_all()
            .iter()
            .any(|c| c["name"] == "sig" && c["status"] == "running")
    });
    env.ok(&["kill", "-s", "KILL", "sig"]);
    let out = attached.wait_with_output().expect("berth run");
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let info = env.inspect("sig");
    assert_eq!(info["exit_code"], 137);
    assert_eq!(info["signal"], 9);
}

#[test]
fn last_bytes_before_exit_reach_client_and_log() {
    let Some(env) = Env::new() else { return };
    let script = "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; printf tail-no-newline; echo last-err >&2; exit 7";
    let out = env.berth(&["run", "--name", "burst", "--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(7));
    let expected: String =
        (0..3000).map(|i| format!("line{i}\n")).collect::<String>() + "tail-no-newline";
    assert_eq!(stdout(&out), expected);
    assert_eq!(stderr(&out), "last-err\n");
    let logs = env.berth(&["logs", "burst"]);
    assert_eq!(stdout(&logs), expected);
    assert_eq!(stderr(&logs), "last-err\n");
}

#[test]
fn env_workdir_and_hostname_reach_the_container() {
    let Some(env) = Env::new() else { return };
    let out = env.ok(&[
        "run",
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp",
        "--hostname",
        "boxy",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; hostname",
    ]);
    assert_eq!(out, "hi there\n/tmp\nboxy\n");
}

#[test]
fn default_rootfs_is_writable_per_container_and_shared_copy_untouched() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo scribble > /bin/mark && rm /bin/cat",
    ]);
    // A second container sees a pristine rootfs.
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "ls /bin/mark 2>/dev/null; ls /bin/cat",
    ]);
    assert_eq!(out, "/bin/cat\n");
}

#[test]
fn run_with_rootfs_dir() {
    let Some(env) = Env::new() else { return };
    let rootfs = env.dir.path().join("myrootfs");
    crate::util::make_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/motd"), "from my rootfs\n").expect("write motd");
    let out = env.ok(&[
        "run",
        "--rootfs",
        rootfs.to_str().expect("utf8"),
        "--",
        "cat",
        "/etc/motd",
    ]);
    assert_eq!(out, "from my rootfs\n");
}

#[test]
fn run_with_bundle_made_by_runc_spec() {
    let Some(env) = Env::new() else { return };
    let bundle = env.dir.path().join("bundle");
    crate::util::make_rootfs(&bundle.join("rootfs"));
    let spec = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc spec");
    assert!(spec.success());
    let b = bundle.to_str().expect("utf8");
    // runc spec's rootfs is read-only and its hostname is "runc".
    let out = env.ok(&[
        "run",
        "--bundle",
        b,
        "--",
        "sh",
        "-c",
        "hostname; touch /x 2>&1 || echo ro",
    ]);
    assert!(out.starts_with("runc\n"), "{out}");
    assert!(out.ends_with("ro\n"), "{out}");
    // The user's bundle is not modified.
    let config = std::fs::read_to_string(bundle.join("config.json")).expect("config");
    assert!(
        config.contains("\"terminal\": true"),
        "bundle config was rewritten"
    );
}

#[test]
fn detached_container_full_lifecycle() {
    let Some(env) = Env::new() else { return };
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; while true; do echo tick; sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 16, "{id}");

    let table = env.ok(&["ps", "--no-trunc"]);
    let header = table.lines().next().expect("header");
    for col in ["ID", "NAME", "STATUS", "CREATED", "COMMAND"] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("web"))
        .expect("web listed");
    assert!(row.contains(id) && row.contains("Up "), "{row}");

    env.wait_until(10, "output in the log", || {
        stdout(&env.berth(&["logs", "web"])).contains("tick\ntick\n")
    });

    let info = env.inspect("web");
    assert_eq!(info["id"], id);
    assert_eq!(info["name"], "web");
    assert_eq!(info["status"], "running");
    assert!(info["pid"].as_i64().unwrap_or(0) > 1);
    assert!(info["started_at"].is_string());
    assert_eq!(info["command"][0], "sh");
    assert!(info["log_path"].as_str().unwrap_or("").ends_with("/log"));
    assert!(info["rootfs"].is_string());

    // A prefix of the ID works too.
    env.ok(&["kill", "-s", "TERM", &id[..6]]);
    assert_eq!(env.ok(&["wait", "web"]), "0\n");
    let logs = stdout(&env.berth(&["logs", "web"]));
    assert!(logs.ends_with("bye\n"), "{logs}");

    let all = env.ps_all();
    let me = all.iter().find(|c| c["name"] == "web").expect("in ps -a");
    assert_eq!(me["status"], "exited");
    assert_eq!(me["exit_code"], 0);
    assert!(me["finished_at"].is_string());
    let running = env.ok(&["ps"]);
    assert!(
        !running.contains("web"),
        "exited container in plain ps: {running}"
    );
    assert!(env.ok(&["ps", "-a"]).contains("Exited (0)"));

    env.ok(&["rm", "web"]);
    env.assert_clean();
}

#[test]
fn kill_accepts_signal_forms() {
    let Some(env) = Env::new() else { return };
    for (i, sig) in ["KILL", "9", "SIGKILL"].iter().enumerate() {
        let name = format!("k{i}");
        env.ok(&["run", "-d", "--name", &name, "--", "sleep", "100"]);
        env.ok(&["kill", "-s", sig, &name]);
        assert_eq!(env.ok(&["wait", &name]), "137\n", "signal {sig}");
    }
    env.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--",
        "sh",
        "-c",
        "trap 'exit 42' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    // Until the trap is set, SIGUSR1 would kill sh (138): wait for it.
    env.wait_until(10, "the trap to be set", || {
        env.ok(&["logs", "usr1"]).contains("ready")
    });
    env.ok(&["kill", "--signal", "usr1", "usr1"]);
    assert_eq!(env.ok(&["wait", "usr1"]), "42\n");
}

#[test]
fn logs_follow_streams_until_exit() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "f",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo n$i; sleep 0.2; done; echo done >&2",
    ]);
    let out = env.berth(&["logs", "-f", "f"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "n1\nn2\nn3\nn4\nn5\n");
    assert_eq!(stderr(&out), "done\n");
}

#[test]
fn logs_rotate_and_read_back_across_files() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "--name",
        "rot",
        "--log-max-size",
        "4k",
        "--log-max-files",
        "50",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 1000 ]; do echo row$i; i=$((i+1)); done",
    ]);
    let dir = std::path::PathBuf::from(env.inspect("rot")["state_dir"].as_str().expect("dir"));
    assert!(dir.join("log.1").exists(), "log did not rotate");
    let want: String = (0..1000).map(|i| format!("row{i}\n")).collect();
    assert_eq!(stdout(&env.berth(&["logs", "rot"])), want);
}

#[test]
fn run_rm_leaves_nothing() {
    let Some(env) = Env::new() else { return };
    let out = env.berth(&["run", "--rm", "--", "sh", "-c", "echo gone; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stdout(&out), "gone\n");
    env.assert_clean();
    // Detached --rm: berthd removes it when it exits.
    env.ok(&["run", "-d", "--rm", "--name", "bg", "--", "true"]);
    env.wait_until(10, "auto-removal", || env.ps_all().is_empty());
    env.assert_clean();
}

/// A container gets a cgroup namespace of its own on a unified (v2) host
/// and the host's on a v1 or hybrid one, as `runc spec` and Docker's
/// default `--cgroupns` do: on v1 a namespace makes runc mount every
/// hierarchy afresh in the container, and the kernel walks every cgroup on
/// the host for each of those mounts, a cost per start that grows with
/// the number of containers. Either way its limits are in its own cgroup
/// files (`limits_reach_the_cgroup`).
#[test]
fn cgroup_namespace_private_only_on_a_unified_host() {
    let Some(env) = Env::new() else { return };
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .expect("statfs /sys/fs/cgroup")
        .filesystem_type()
        == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
    env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "ns",
        "--",
        "sleep",
        "100",
    ]);
    let pid = env.inspect("ns")["pid"].as_i64().expect("pid");
    let ns = |p: String| std::fs::read_link(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let host = ns("/proc/self/ns/cgroup".to_string());
    let container = ns(format!("/proc/{pid}/ns/cgroup"));
    if unified {
        assert_ne!(container, host, "a v2 host: the container's own");
    } else {
        assert_eq!(container, host, "a v1 host: the host's");
    }
    env.ok(&["rm", "-f", "ns"]);
}

/// The shim opens the container's log while the runtime creates the
/// container; when it cannot, the start fails with the reason and
/// nothing runs on: the runtime's container is deleted, no shim stays.
#[test]
fn a_start_whose_log_cannot_be_opened_leaves_nothing_running() {
    let Some(env) = Env::new() else { return };
    // Its first run ends at once; a second would run on.
    let script = "[ -e /ran ] && exec sleep 1000; touch /ran";
    env.ok(&[
        "run",
        "-d",
        "--name",
        "nolog",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        script,
    ]);
    env.wait_until(10, "the container's exit and its shim's", || {
        env.inspect("nolog")["status"] == "exited" && env.our_processes().is_empty()
    });
    let dir = std::path::PathBuf::from(env.inspect("nolog")["data_dir"].as_str().expect("dir"));
    // The current log segment becomes a directory: it cannot be appended to.
    let segment = dir.join("log.1");
    std::fs::remove_file(&segment).expect("remove log.1");
    std::fs::create_dir(&segment).expect("mkdir log.1");
    let out = env.berth(&["start", "nolog"]);
    assert!(!out.status.success(), "started without a log");
    assert!(stderr(&out).contains("log.1"), "{}", stderr(&out));
    assert!(
        env.runc_containers().is_empty(),
        "the runtime's container is left: {:?}",
        env.runc_containers()
    );
    assert!(
        env.our_processes().is_empty(),
        "left running: {:?}",
        env.our_processes()
    );
    assert_eq!(env.inspect("nolog")["status"], "exited");
    std::fs::remove_dir(&segment).expect("rmdir log.1");
    env.ok(&["rm", "nolog"]);
}
