//! The two roots: what outlives a reboot (the data root) and what a
//! reboot empties (the runtime root). A simulated reboot kills every shim
//! and container by PID, tears their networks down and removes the whole
//! runtime root; the new berthd finds the containers in the data root.
//! Also the upgrade: containers laid out the old way (everything in the
//! runtime root's container directory) are found, run and removed by a
//! berthd with two roots.

use serde_json::Value;

use crate::util::{stdout, Env};

fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == t).collect()
}

fn run_d(env: &Env, name: &str, extra: &[&str], cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    env.ok(&args);
}

fn data_dirs(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data.join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn always_and_unless_stopped_come_back_after_a_reboot_with_their_logs_and_network() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let data = env.split_roots();
    env.start_berthd();
    // A bridge container (its namespace, veth and lease die with the
    // reboot) and one without a network.
    let say = "echo run-$(cat /proc/self/stat | cut -d' ' -f1); exec sleep 1000";
    run_d(&env, "always", &["--restart", "always"], &["sh", "-c", say]);
    run_d(
        &env,
        "unless",
        &["--restart", "unless-stopped", "--network", "none"],
        &["sh", "-c", say],
    );
    env.wait_until(10, "both to log their first run", || {
        ["always", "unless"]
            .iter()
            .all(|n| env.ok(&["logs", n]).contains("run-"))
    });
    let ids: Vec<String> = ["always", "unless"]
        .iter()
        .map(|n| env.inspect(n)["id"].as_str().unwrap().to_string())
        .collect();
    // Definitions, logs and exits are under the data root; sockets and
    // pid files under the runtime root.
    for id in &ids {
        let d = data.join("containers").join(id);
        assert!(d.join("meta.json").is_file() && d.join("bundle/config.json").is_file());
        assert!(d.join("log").exists());
        assert!(!d.join("shim.sock").exists());
        let r = env.root.join("containers").join(id);
        assert!(r.join("shim.sock").exists() && r.join("shim.pid").exists());
        assert!(!r.join("meta.json").exists());
    }
    env.simulate_reboot(true);
    assert!(!env.root.exists(), "the runtime root is gone");
    env.start_berthd();
    env.wait_until(30, "always and unless-stopped to run again", || {
        ["always", "unless"]
            .iter()
            .all(|n| env.inspect(n)["status"] == "running")
    });
    for name in ["always", "unless"] {
        let i = env.inspect(name);
        assert_eq!(i["restart"]["count"], 1, "{name}: {i}");
        assert_eq!(i["restart_count"], 1, "{name}: {i}");
        let last = &i["restart"]["last_exits"][0];
        assert!(
            last["reason"].as_str().unwrap().contains("rebooted"),
            "{name}: {i}"
        );
        // The log of the run before the reboot is still there, then the new run's.
        env.wait_until(10, "the second run's line", || {
            env.ok(&["logs", name]).matches("run-").count() == 2
        });
        let evs = env.journal(name);
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["create", "start", "exit", "restart", "start"],
            "{name}: {evs:?}"
        );
        let exit = of_type(&evs, "exit")[0];
        assert!(exit["exit_code"].is_null(), "{exit}");
        assert!(
            exit["reason"].as_str().unwrap().contains("rebooted"),
            "{exit}"
        );
        let restart = of_type(&evs, "restart")[0];
        assert_eq!(restart["restart_count"], 1);
        let why = restart["reason"].as_str().unwrap();
        assert!(
            why.starts_with("restart policy ") && why.contains("rebooted"),
            "{restart}"
        );
    }
    // The bridge container has an address again, on this instance's subnet.
    let net = env.inspect("always")["network"].clone();
    assert!(net["ip"].is_string(), "{net}");
    env.ok(&["rm", "-f", "always", "unless"]);
    assert!(data_dirs(&data).is_empty(), "{:?}", data_dirs(&data));
    env.assert_clean();
    let left = env.net_leftovers(&[]);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn no_and_on_failure_and_a_stopped_unless_stopped_stay_exited_after_a_reboot() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.split_roots();
    env.start_berthd();
    let none = ["--network", "none"];
    run_d(&env, "never", &none, &["sleep", "1000"]);
    let mut f = none.to_vec();
    f.extend(["--restart", "on-failure:3"]);
    run_d(&env, "failing", &f, &["sleep", "1000"]);
    // Exited before the reboot, with its own code: kept.
    run_d(&env, "done", &none, &["sh", "-c", "exit 3"]);
    let mut u = none.to_vec();
    u.extend(["--restart", "unless-stopped"]);
    run_d(&env, "stopped", &u, &["sleep", "1000"]);
    env.ok(&["stop", "-t", "1", "stopped"]);
    env.wait_until(10, "done to exit", || {
        env.inspect("done")["status"] == "exited"
    });
    let stopped_code = env.inspect("stopped")["exit_code"].clone();
    assert!(stopped_code.is_i64(), "{stopped_code}");
    env.simulate_reboot(true);
    env.start_berthd();
    env.wait_restored();
    // Long enough for a restart's first delay (100 ms) to have passed.
    std::thread::sleep(std::time::Duration::from_millis(800));
    for name in ["never", "failing"] {
        let i = env.inspect(name);
        assert_eq!(i["status"], "exited", "{name}: {i}");
        assert!(i["exit_code"].is_null(), "{name}: {i}");
        assert!(
            i["reason"].as_str().unwrap().contains("rebooted"),
            "{name}: {i}"
        );
        assert_eq!(i["restart_count"], 0, "{name}: {i}");
        let evs = env.journal(name);
        assert!(of_type(&evs, "restart").is_empty(), "{name}: {evs:?}");
        assert_eq!(of_type(&evs, "exit").len(), 1, "{name}: {evs:?}");
    }
    let done = env.inspect("done");
    assert_eq!(done["status"], "exited");
    assert_eq!(done["exit_code"], 3, "{done}");
    let stopped = env.inspect("stopped");
    assert_eq!(stopped["status"], "exited", "{stopped}");
    assert_eq!(stopped["exit_code"], stopped_code, "{stopped}");
    assert_eq!(stopped["restart"]["stopped_by_user"], true, "{stopped}");
    assert!(of_type(&env.journal("stopped"), "restart").is_empty());
    // Each can still be started by hand: its runtime directory is made again.
    env.ok(&["start", "never"]);
    assert_eq!(env.inspect("never")["status"], "running");
    env.ok(&["rm", "-f", "never", "failing", "done", "stopped"]);
    env.assert_clean();
}

#[test]
fn containers_of_the_one_directory_layout_are_found_after_the_split() {
    // Made the old way: one directory holds everything of a container.
    let Some(mut env) = Env::new() else { return };
    run_d(
        &env,
        "old-running",
        &["--network", "none"],
        &["sh", "-c", "echo hello-old; exec sleep 1000"],
    );
    run_d(
        &env,
        "old-exited",
        &["--network", "none"],
        &["sh", "-c", "echo bye-old; exit 4"],
    );
    env.wait_until(10, "old-exited to exit", || {
        env.inspect("old-exited")["status"] == "exited"
    });
    let old_ids: Vec<String> = ["old-running", "old-exited"]
        .iter()
        .map(|n| env.inspect(n)["id"].as_str().unwrap().to_string())
        .collect();
    for id in &old_ids {
        assert!(env
            .root
            .join("containers")
            .join(id)
            .join("meta.json")
            .is_file());
    }
    env.kill_berthd();
    // The upgrade: the same runtime root, and a data root beside it.
    let data = env.split_roots();
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("old-running")["status"], "running");
    let exited = env.inspect("old-exited");
    assert_eq!(exited["status"], "exited");
    assert_eq!(exited["exit_code"], 4);
    assert!(env.ok(&["logs", "old-running"]).contains("hello-old"));
    // Run again where it is: its log, exit record and definition stay in
    // the old directory.
    env.ok(&["start", "old-exited"]);
    env.wait_until(10, "the second run to exit", || {
        let i = env.inspect("old-exited");
        i["status"] == "exited" && i["restart_count"] == 1
    });
    assert_eq!(
        env.ok(&["logs", "old-exited"]).matches("bye-old").count(),
        2
    );
    assert!(data_dirs(&data).is_empty(), "{:?}", data_dirs(&data));
    // A new container goes to the data root.
    run_d(&env, "new", &["--network", "none"], &["sleep", "1000"]);
    let new_id = env.inspect("new")["id"].as_str().unwrap().to_string();
    assert_eq!(data_dirs(&data), std::slice::from_ref(&new_id));
    let ps = stdout(&env.berth(&["ps", "-a", "--format", "{{.Names}}"]));
    for name in ["old-running", "old-exited", "new"] {
        assert!(ps.lines().any(|l| l == name), "{ps}");
    }
    env.ok(&["rm", "-f", "old-running", "old-exited", "new"]);
    for id in old_ids.iter().chain([&new_id]) {
        assert!(!env.root.join("containers").join(id).exists());
    }
    assert!(data_dirs(&data).is_empty());
    env.assert_clean();
}

/// With one root on a disk that a reboot does not empty, the pid files
/// survive it: a shim.pid older than the boot (/proc/stat btime) tells a
/// reboot from a shim that died. The reboot is no failure for
/// on-failure; a shim's death is.
#[test]
fn with_one_root_a_pid_file_older_than_the_boot_means_a_reboot() {
    let Some(mut env) = Env::new() else { return };
    let none = ["--network", "none", "--restart", "on-failure"];
    run_d(&env, "rebooted", &none, &["sleep", "1000"]);
    run_d(&env, "shim-died", &none, &["sleep", "1000"]);
    let id = env.inspect("rebooted")["id"].as_str().unwrap().to_string();
    env.simulate_reboot(false);
    // Written before this boot began, as after a real reboot.
    let pid_file = env.root.join("containers").join(&id).join("shim.pid");
    let long_ago = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(
        None,
        &pid_file,
        &long_ago,
        &long_ago,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("age shim.pid");
    env.start_berthd();
    env.wait_until(20, "shim-died to run again", || {
        let i = env.inspect("shim-died");
        i["restart_count"] == 1 && i["status"] == "running"
    });
    let i = env.inspect("rebooted");
    assert_eq!(i["status"], "exited", "{i}");
    assert!(i["reason"].as_str().unwrap().contains("rebooted"), "{i}");
    assert_eq!(i["restart_count"], 0, "{i}");
    let died = env.journal("shim-died");
    let exit = of_type(&died, "exit")[0];
    assert!(
        exit["reason"].as_str().unwrap().contains("the shim died"),
        "{exit}"
    );
    env.ok(&["rm", "-f", "rebooted", "shim-died"]);
    env.assert_clean();
}

/// A container made by `create` and never started stays created across a
/// reboot (as Docker's), with the default bridge and with one root as
/// with two; `start` then runs it for the first time (restart count 0).
/// One created and then started is ended by the reboot as any other.
#[test]
fn a_created_container_is_still_created_after_a_reboot_and_starts() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.split_roots();
    env.start_berthd();
    env.ok(&[
        "create",
        "--name",
        "fresh",
        "--",
        "sh",
        "-c",
        "echo first run",
    ]);
    env.ok(&[
        "create",
        "--name",
        "begun",
        "--network",
        "none",
        "--",
        "sleep",
        "1000",
    ]);
    env.ok(&["start", "begun"]);
    env.simulate_reboot(true);
    env.start_berthd();
    env.wait_restored();
    let fresh = env.inspect("fresh");
    assert_eq!(fresh["status"], "created", "{fresh}");
    assert!(fresh["reason"].is_null(), "{fresh}");
    let begun = env.inspect("begun");
    assert_eq!(begun["status"], "exited", "{begun}");
    assert!(
        begun["reason"].as_str().unwrap().contains("rebooted"),
        "{begun}"
    );
    // No exit for the one that never ran.
    assert!(of_type(&env.journal("fresh"), "exit").is_empty());
    assert_eq!(env.ok(&["start", "-a", "fresh"]), "first run\n");
    let fresh = env.inspect("fresh");
    assert_eq!(fresh["status"], "exited", "{fresh}");
    assert_eq!(fresh["exit_code"], 0, "{fresh}");
    assert_eq!(fresh["restart_count"], 0, "{fresh}");
    env.ok(&["rm", "-f", "fresh", "begun"]);
    env.assert_clean();
}
