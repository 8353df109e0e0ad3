//! OOM kills: a container over its `--memory` limit is killed by the
//! kernel; berth reports it as Docker does (exit 137, `State.OOMKilled`,
//! an `oom` event before the exit), also when berthd was down at the time;
//! a container that stays within its limit shows none of it.

use serde_json::Value;

use crate::util::{Env, RawControl};

/// A shell that doubles a string until the OOM killer stops it (busybox
/// ash holds the whole string, and its copies, in its own heap).
const HOG: &str = "x=0123456789abcdef; while :; do x=$x$x; done";

fn kinds(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

/// `run [-d] --name NAME` of `sh -c SCRIPT` under a 16 MiB limit
/// without swap and without a network.
fn limited<'a>(name: &'a str, detach: bool, script: &'a str) -> Vec<&'a str> {
    let mut args = vec!["run"];
    if detach {
        args.push("-d");
    }
    args.extend([
        "--name",
        name,
        "--network",
        "none",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        "--",
        "sh",
        "-c",
        script,
    ]);
    args
}

fn run_hog(env: &Env, name: &str) {
    let out = env.berth(&limited(name, false, HOG));
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        crate::util::stderr(&out)
    );
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let Some(env) = Env::new() else { return };
    run_hog(&env, "hog");
    let info = env.inspect("hog");
    assert_eq!(info["exit_code"], 137, "{info}");
    assert_eq!(info["oom_killed"], true, "{info}");
    let docker = env.ok(&[
        "inspect",
        "--format",
        "{{.State.OOMKilled}} {{.State.ExitCode}}",
        "hog",
    ]);
    assert_eq!(docker.trim(), "true 137");
    let evs = env.journal("hog");
    assert_eq!(kinds(&evs), ["create", "start", "oom", "exit"], "{evs:?}");
    assert!(
        evs[2]["time"].as_str() <= evs[3]["time"].as_str(),
        "{evs:?}"
    );
    assert_eq!(evs[3]["exit_code"], 137);

    // Within its limit: nothing of the sort.
    env.ok(&[
        "run",
        "--name",
        "calm",
        "--network",
        "none",
        "--memory",
        "16m",
        "--",
        "sh",
        "-c",
        "x=0123456789abcdef; x=$x$x$x$x; exit 0",
    ]);
    let info = env.inspect("calm");
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(info["oom_killed"], false, "{info}");
    let evs = env.journal("calm");
    assert_eq!(kinds(&evs), ["create", "start", "exit"], "{evs:?}");
    // Killed by a user's SIGKILL: 137 too, but no OOM.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "killed",
        "--network",
        "none",
        "--memory",
        "16m",
        "--",
        "sleep",
        "100",
    ]);
    env.ok(&["kill", "killed"]);
    env.wait_until(10, "killed to exit", || {
        env.inspect("killed")["status"] == "exited"
    });
    let info = env.inspect("killed");
    assert_eq!(
        (info["exit_code"].clone(), info["oom_killed"].clone()),
        (Value::from(137), Value::from(false))
    );
    env.ok(&["rm", "hog", "calm", "killed"]);
}

#[test]
fn an_oom_kill_while_berthd_is_down_is_journaled_once_at_its_time() {
    let Some(mut env) = Env::new() else { return };
    // The hog starts when the test says so, through a bind mount.
    let trigger = env.dir.path().join("trigger");
    std::fs::create_dir(&trigger).unwrap();
    let volume = format!("{}:/trigger", trigger.display());
    let script = format!("while [ ! -e /trigger/go ]; do sleep 0.05; done; {HOG}");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "--network",
        "none",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        "-v",
        &volume,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let id = env.inspect("hog")["id"].as_str().unwrap().to_string();
    env.kill_berthd();
    std::fs::write(trigger.join("go"), "").unwrap();
    let exit_file = env.root.join("containers").join(&id).join("exit");
    env.wait_until(20, "the shim's exit record", || exit_file.exists());
    env.restore_and_crash(2);
    env.start_berthd();
    env.wait_restored();
    let info = env.inspect("hog");
    assert_eq!(
        (info["exit_code"].clone(), info["oom_killed"].clone()),
        (Value::from(137), Value::from(true)),
        "{info}"
    );
    let evs = env.journal("hog");
    // Each of three berthds reconciled it; it is journaled once.
    assert_eq!(kinds(&evs), ["create", "start", "oom", "exit"], "{evs:?}");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&exit_file).unwrap()).unwrap();
    assert_eq!(evs[2]["time"], record["oom_at"], "the time the shim saw it");
    assert_eq!(evs[3]["time"], record["finished_at"]);
    assert!(evs[2]["reconciled_at"].is_string(), "{evs:?}");
    env.ok(&["rm", "hog"]);
}

/// Writes /go into a running container (its init's root, from the host).
fn go(pid: i64) {
    std::fs::write(format!("/proc/{pid}/root/go"), b"").expect("write /go");
}

fn init_pid(env: &Env, name: &str) -> i64 {
    env.inspect(name)["pid"].as_i64().expect("init pid")
}

fn ooms(env: &Env, name: &str) -> Vec<Value> {
    env.journal(name)
        .into_iter()
        .filter(|e| e["type"] == "oom")
        .collect()
}

/// A container whose init forks a process that the OOM killer takes,
/// and lives on: `oom` events while it runs, one per kill, none
/// repeated at its exit; kills while berthd was down are journaled when
/// it returns, once however often it restarts.
#[test]
fn an_oom_kill_of_a_non_init_process_is_an_event_while_the_container_runs() {
    let Some(mut env) = Env::new() else { return };
    // The child hogs once the file /go appears; the init outlives it.
    let script = format!(
        "while [ ! -e /go ]; do sleep 0.05; done; sh -c '{HOG}'; echo child-gone; exec sleep 1000"
    );
    for name in ["live", "offline"] {
        env.ok(&limited(name, true, &script));
    }
    go(init_pid(&env, "live"));
    env.wait_until(20, "an oom event for live", || {
        !ooms(&env, "live").is_empty()
    });
    env.wait_until(10, "the child to be gone", || {
        env.ok(&["logs", "live"]).contains("child-gone")
    });
    let info = env.inspect("live");
    assert_eq!(info["status"], "running", "{info}");
    let evs = env.journal("live");
    assert_eq!(kinds(&evs), ["create", "start", "oom"], "{evs:?}");
    assert!(evs[2]["reconciled_at"].is_null(), "{evs:?}");

    // While berthd is down (`logs` reads the disk meanwhile).
    let offline = init_pid(&env, "offline");
    let offline_id = env.inspect("offline")["id"].as_str().unwrap().to_string();
    env.kill_berthd();
    go(offline);
    env.wait_until(20, "offline's child to be gone", || {
        env.ok(&["logs", "offline"]).contains("child-gone")
    });
    // The kill happened while berthd was down once the shim has counted
    // it: the shim dates a kill when it sees it, which on a loaded
    // machine can come after the child's last words reached the log, and
    // so after a berthd started right then (CI failed once that way).
    let mut shim = RawControl::connect_id(&env, &offline_id);
    env.wait_until(20, "offline's shim to count the kill", || {
        shim.call("state", Value::Null)["result"]["oom_kills"] == 1
    });
    drop(shim);
    env.restore_and_crash(2);
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("offline")["status"], "running");
    let evs = env.journal("offline");
    assert_eq!(
        kinds(&evs),
        ["create", "start", "restore", "oom", "restore", "restore"],
        "{evs:?}"
    );
    assert!(evs[3]["reconciled_at"].is_string(), "{evs:?}");
    // At the exit no second `oom`: the run's kill is journaled already.
    env.ok(&["rm", "-f", "live", "offline"]);
    for name in ["live", "offline"] {
        assert_eq!(ooms(&env, name).len(), 1, "{name}: {:?}", env.journal(name));
    }
}

/// A child is OOM-killed first (journaled live), then the init itself:
/// the init's kill gets its own `oom` too, numbered 2, before the exit;
/// both when berthd sees it live and when berthd was down at the time
/// (the exit record counts the run's kills).
#[test]
fn a_later_oom_kill_of_the_init_is_journaled_too_also_while_berthd_is_down() {
    let Some(mut env) = Env::new() else { return };
    let script = format!(
        "while [ ! -e /go ]; do sleep 0.05; done; sh -c '{HOG}'; echo child-gone; \
         while [ ! -e /go2 ]; do sleep 0.05; done; {HOG}"
    );
    for name in ["up", "down"] {
        env.ok(&limited(name, true, &script));
    }
    let up = init_pid(&env, "up");
    let down = init_pid(&env, "down");
    let down_shim = env.inspect("down")["shim_pid"].as_i64().expect("shim pid");
    go(up);
    go(down);
    for name in ["up", "down"] {
        env.wait_until(20, "the child's oom event", || !ooms(&env, name).is_empty());
    }
    // The init of "up" hogs while berthd watches.
    std::fs::write(format!("/proc/{up}/root/go2"), b"").expect("write /go2");
    assert_eq!(env.ok(&["wait", "up"]), "137\n");
    // The init of "down" hogs while berthd is down; its shim retires.
    env.kill_berthd();
    std::fs::write(format!("/proc/{down}/root/go2"), b"").expect("write /go2");
    env.wait_until(20, "down's shim to retire", || {
        !std::path::Path::new(&format!("/proc/{down_shim}")).exists()
    });
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.ok(&["wait", "down"]), "137\n");
    for name in ["up", "down"] {
        env.wait_until(10, "the exit event", || {
            kinds(&env.journal(name)).contains(&"exit")
        });
        let evs = env.journal(name);
        let numbers: Vec<_> = ooms(&env, name)
            .iter()
            .map(|e| e["oom_kill"].as_u64())
            .collect();
        assert_eq!(numbers, [Some(1), Some(2)], "{name}: {evs:?}");
        // Docker's order: the oom, then the exit.
        let k = kinds(&evs);
        assert_eq!(
            k.iter().rposition(|&k| k == "oom").map(|i| i + 1),
            k.iter().position(|&k| k == "exit"),
            "{name}: {k:?}"
        );
    }
    env.ok(&["rm", "-f", "up", "down"]);
    for name in ["up", "down"] {
        assert_eq!(ooms(&env, name).len(), 2, "{name}: {:?}", env.journal(name));
    }
}
