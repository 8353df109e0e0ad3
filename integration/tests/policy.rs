//! Restart policies (`--restart`), Docker's rules: counts, the doubling
//! delay, a user's stop, berthd SIGKILLs and a simulated reboot; `update`.

use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::util::{stderr, stdout, Env};

fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == t).collect()
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time")).expect("rfc3339")
}

fn restart_state(env: &Env, name: &str) -> Value {
    env.inspect(name)["restart"].clone()
}

/// Settled: exited with no restart waiting.
fn settled_exited(env: &Env, name: &str) -> bool {
    let i = env.inspect(name);
    i["status"] == "exited" && i["restart"]["restarting_at"].is_null()
}

#[test]
fn on_failure_restarts_n_times_with_doubling_delays() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "f",
        "--restart",
        "on-failure:3",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    env.wait_until(30, "three restarts and a final exit", || {
        restart_state(&env, "f")["count"] == 3 && settled_exited(&env, "f")
    });
    let evs = env.journal("f");
    let exits = of_type(&evs, "exit");
    let restarts = of_type(&evs, "restart");
    assert_eq!(exits.len(), 4, "{evs:?}");
    assert_eq!(restarts.len(), 3, "{evs:?}");
    // Each restart waits at least the policy's delay after the exit before it.
    for (i, (exit, restart)) in exits.iter().zip(&restarts).enumerate() {
        assert_eq!(restart["restart_count"], i as u64 + 1);
        let gap = time(&restart["time"])
            .duration_since(time(&exit["time"]))
            .unwrap_or_default();
        let min = Duration::from_millis(100 << i);
        assert!(
            gap >= min,
            "restart {} came {gap:?} after its exit (< {min:?})",
            i + 1
        );
    }
    let info = env.inspect("f");
    assert_eq!(info["restart"]["policy"], "on-failure:3");
    assert_eq!(info["restart"]["delay_ms"], 400);
    assert_eq!(info["restart"]["last_exits"].as_array().unwrap().len(), 4);
    assert_eq!(info["exit_code"], 1);
    // Docker's inspect keys for the same.
    let docker = env.ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.State.Restarting}}",
        "f",
    ]);
    assert_eq!(docker.trim(), "on-failure 3 false");
    // Exit 0 is not a failure.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        "--",
        "true",
    ]);
    env.wait_until(10, "ok to exit", || settled_exited(&env, "ok"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(restart_state(&env, "ok")["count"], 0);
    assert!(of_type(&env.journal("ok"), "restart").is_empty());
    env.ok(&["rm", "f", "ok"]);
}

#[test]
fn always_restarts_until_the_user_stops_it_and_start_resumes_it() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--restart",
        "always",
        "--",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    env.wait_until(30, "two restarts", || {
        restart_state(&env, "a")["count"].as_u64().unwrap_or(0) >= 2
    });
    env.wait_until(10, "a to be running", || {
        env.inspect("a")["status"] == "running"
    });
    env.ok(&["stop", "-t", "1", "a"]);
    let info = env.inspect("a");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["restart"]["stopped_by_user"], true);
    let restarts = of_type(&env.journal("a"), "restart").len();
    // Long enough for several restarts if the policy were still on.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.inspect("a")["status"], "exited");
    assert_eq!(of_type(&env.journal("a"), "restart").len(), restarts);
    // A user's start turns the policy back on, from a count of zero.
    env.ok(&["start", "a"]);
    let info = env.inspect("a");
    assert_eq!(info["restart"]["stopped_by_user"], false);
    env.wait_until(30, "a restart after the user's start", || {
        restart_state(&env, "a")["count"].as_u64().unwrap_or(0) >= 1
    });
    env.ok(&["rm", "-f", "a"]);
}

#[test]
fn unless_stopped_after_stop_stays_stopped_across_berthd_restarts() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "u",
        "--restart",
        "unless-stopped",
        "--",
        "sleep",
        "1000",
    ]);
    env.ok(&["stop", "-t", "1", "u"]);
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    std::thread::sleep(Duration::from_millis(500));
    let info = env.inspect("u");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["restart"]["count"], 0);
    assert!(of_type(&env.journal("u"), "restart").is_empty());
    env.ok(&["rm", "u"]);
}

/// Runs an idle container `name` with policy on-failure:5; its id.
fn run_on_failure_5(env: &Env, name: &str) -> String {
    env.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "on-failure:5",
        "--",
        "sleep",
        "1000",
    ]);
    env.inspect(name)["id"].as_str().unwrap().to_string()
}

#[test]
fn an_exit_while_berthd_is_down_is_restarted_once_when_it_returns() {
    let Some(mut env) = Env::new() else { return };
    let id = run_on_failure_5(&env, "p");
    let pid = env.inspect("p")["pid"].as_i64().unwrap() as i32;
    env.kill_berthd();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let exit_file = env.root.join("containers").join(&id).join("exit");
    env.wait_until(10, "the exit record", || exit_file.exists());
    env.start_berthd();
    env.wait_until(20, "the restart", || {
        let i = env.inspect("p");
        i["status"] == "running" && i["restart"]["count"] == 1
    });
    let new_pid = env.inspect("p")["pid"].as_i64().unwrap() as i32;
    assert_ne!(new_pid, pid);
    // More berthd SIGKILLs: nothing is done twice.
    for _ in 0..2 {
        env.kill_berthd();
        env.start_berthd();
        env.wait_restored();
    }
    let info = env.inspect("p");
    assert_eq!(info["status"], "running");
    assert_eq!(info["pid"], new_pid);
    assert_eq!(info["restart"]["count"], 1);
    let evs = env.journal("p");
    assert_eq!(of_type(&evs, "restart").len(), 1, "{evs:?}");
    let exits = of_type(&evs, "exit");
    assert_eq!(exits.len(), 1, "{evs:?}");
    assert_eq!(exits[0]["exit_code"], 137);
    assert!(exits[0]["reconciled_at"].is_string());
    env.ok(&["rm", "-f", "p"]);
}

/// berthd died after its policy ran the container again but before it
/// counted the restart: adopting the container completes the count. (The
/// start-up reader tells the adoption which containers have a policy
/// record at all; if it missed this one, the count would stay at 2.) With
/// one root and with two, where the record is read by a different path.
#[test]
fn a_restart_berthd_died_during_is_counted_when_the_container_is_adopted() {
    for split in [false, true] {
        let Some(mut env) = Env::stopped() else {
            return;
        };
        let data = if split {
            env.split_roots()
        } else {
            env.root.clone()
        };
        env.start_berthd();
        let id = run_on_failure_5(&env, "p");
        env.kill_berthd();
        let record = serde_json::json!({
            "policy": {"name": "on-failure", "max_retries": 5},
            "count": 2,
            "delay_ms": 400,
            "decided_exit": "code 1 at 2026-01-01T00:00:00Z",
            "pending": {
                "due": "2026-01-01T00:00:00Z",
                "attempt": 3,
                "exit": "code 1 at 2026-01-01T00:00:00Z",
                "announced": true
            }
        });
        let path = data.join("containers").join(&id).join("restart.json");
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        env.start_berthd();
        env.wait_restored();
        let info = env.inspect("p");
        assert_eq!(info["status"], "running", "split roots: {split}");
        assert_eq!(info["restart"]["count"], 3, "split roots: {split}: {info}");
        assert!(info["restart"]["restarting_at"].is_null(), "{info}");
        env.ok(&["rm", "-f", "p"]);
    }
}

#[test]
fn a_simulated_reboot_brings_always_and_unless_stopped_back() {
    let Some(mut env) = Env::new() else { return };
    for (name, policy) in [
        ("always", "always"),
        ("unless", "unless-stopped"),
        ("never", "no"),
        ("stopped", "unless-stopped"),
    ] {
        env.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "--",
            "sleep",
            "1000",
        ]);
    }
    env.ok(&["stop", "-t", "1", "stopped"]);
    env.simulate_reboot(false);
    env.start_berthd();
    env.wait_until(30, "always and unless-stopped to come back", || {
        env.inspect("always")["status"] == "running" && env.inspect("unless")["status"] == "running"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.inspect("never")["status"], "exited");
    assert_eq!(env.inspect("stopped")["status"], "exited");
    assert_eq!(restart_state(&env, "always")["count"], 1);
    assert_eq!(restart_state(&env, "unless")["count"], 1);
    env.ok(&["rm", "-f", "always", "unless", "never", "stopped"]);
    env.assert_clean();
}

#[test]
fn update_changes_policy_and_limits_and_refuses_what_it_cannot_do() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "web", "--", "sleep", "1000"]);
    env.ok(&["update", "--memory", "128m", "--cpus", "1", "web"]);
    let pid = env.inspect("web")["pid"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let limit = if let Some(line) = cgroup
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
    {
        let path = line.splitn(3, ':').nth(2).unwrap();
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
            .unwrap()
    } else {
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).unwrap()
    };
    assert_eq!(limit.trim(), (128u64 << 20).to_string());
    // The limit is what stats shows now.
    let stats = env.ok(&["stats", "--no-stream", "--json", "web"]);
    let row: Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(row["memory_limit"], 128u64 << 20);
    env.ok(&["update", "--restart", "on-failure:2", "web"]);
    assert_eq!(restart_state(&env, "web")["policy"], "on-failure:2");
    for (args, needle) in [
        (
            vec!["update", "--restart", "sometimes", "web"],
            "invalid restart policy \"sometimes\"",
        ),
        (
            vec!["update", "--restart", "on-failure:-1", "web"],
            "the retry count must be a whole number",
        ),
        (
            vec!["update", "--memory", "lots", "web"],
            "invalid --memory \"lots\"",
        ),
        (
            vec!["update", "--memory", "1k", "web"],
            "the minimum memory limit is 6 MiB",
        ),
        (
            vec!["update", "--cpus", "1000", "web"],
            "invalid --cpus 1000",
        ),
        (vec!["update", "web"], "nothing to update"),
    ] {
        let out = env.berth(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    // Nothing changed by the refusals.
    assert_eq!(restart_state(&env, "web")["policy"], "on-failure:2");
    env.ok(&["stop", "-t", "1", "web"]);
    let out = env.berth(&["update", "--memory", "64m", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "container web is not running (exited): limits can only be changed while it runs"
        ),
        "{}",
        stderr(&out)
    );
    env.ok(&["rm", "web"]);
}

#[test]
fn bad_restart_policies_on_run_change_nothing() {
    let Some(env) = Env::new() else { return };
    for (policy, needle) in [
        ("sometimes", "invalid restart policy \"sometimes\""),
        ("on-failure:-1", "invalid restart policy \"on-failure:-1\""),
        ("always:3", "a retry count can only be given to on-failure"),
    ] {
        let out = env.berth(&["run", "-d", "--restart", policy, "--", "true"]);
        assert_eq!(out.status.code(), Some(125), "{policy}");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
    let out = env.berth(&["run", "--rm", "--restart", "always", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cannot be used together"),
        "{}",
        stderr(&out)
    );
    env.assert_clean();
}

#[test]
fn stop_during_the_delay_cancels_the_restart() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    // After 4 restarts the next delay is 1.6 s: time to stop it in between.
    env.wait_until(30, "a restart waiting for a 1.6 s delay", || {
        let r = restart_state(&env, "loop");
        r["count"].as_u64().unwrap_or(0) >= 4 && r["restarting_at"].is_string()
    });
    let before = restart_state(&env, "loop");
    env.ok(&["stop", "loop"]);
    let after = restart_state(&env, "loop");
    assert!(after["restarting_at"].is_null(), "{after}");
    assert_eq!(after["stopped_by_user"], true);
    let due = time(&before["restarting_at"]);
    while SystemTime::now() < due + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = env.inspect("loop");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["restart"]["count"], before["count"]);
    env.ok(&["rm", "loop"]);
}

/// `rm -f` while the policy is running the container again (its new shim
/// and network being made: status `creating`) removes it, as Docker's
/// rm -f of a restarting container: the restart is cancelled, nothing is
/// left, one `delete` event.
#[test]
fn rm_f_while_the_policy_runs_it_again_removes_it() {
    let Some(env) = Env::new() else { return };
    // The default bridge: its network setup makes each re-run long
    // enough to be caught in the act.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--restart",
        "always",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    let mut caught = false;
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while !caught && std::time::Instant::now() < give_up {
        caught = env.inspect("r")["status"] == "creating";
    }
    assert!(caught, "never saw the policy re-running r");
    let out = env.berth(&["rm", "-f", "r"]);
    assert!(out.status.success(), "rm -f: {}", stderr(&out));
    let evs = env.journal("r");
    assert_eq!(of_type(&evs, "delete").len(), 1, "{evs:?}");
    // No restart comes back after the removal.
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.ps_all().is_empty(), "{:?}", env.ps_all());
    env.assert_clean();
}
