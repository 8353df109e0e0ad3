//! OOM kills: a container over its `--memory` limit is killed by the
//! kernel; berth reports it as Docker does (exit 137, `State.OOMKilled`,
//! an `oom` event before the exit), also when berthd was down at the time;
//! a container that stays within its limit shows none of it.

use serde_json::Value;

use crate::util::Env;

/// A shell that doubles a string until the OOM killer stops it (busybox
/// ash holds the whole string, and its copies, in its own heap).
const HOG: &str = "x=0123456789abcdef; while :; do x=$x$x; done";

fn kinds(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

fn run_hog(env: &Env, name: &str) {
    let out = env.berth(&[
        "run",
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
        HOG,
    ]);
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
