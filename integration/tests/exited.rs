//! An exited container holds no process: its shim goes once the exit
//! record is on disk, and every verb works on from the disk (`wait`,
//! `inspect`, `logs`, `attach`'s refusal, `start` with a new shim, `rm`
//! doing the runtime's delete), also after a berthd SIGKILL.

use crate::util::{stderr, stdout, Env};

/// True once `pid` is no process (or only a zombie nobody reaped yet).
fn gone(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// Starts `ex` (whose run ends once /go exists), makes it exit, and
/// waits until its shim is gone; returns the shim's PID.
fn run_to_exit(env: &Env, first: bool) -> i64 {
    if first {
        env.ok(&[
            "run",
            "-d",
            "--name",
            "ex",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.05; done; rm /go; echo out; echo err >&2; exit 3",
        ]);
    } else {
        env.ok(&["start", "ex"]);
    }
    let shim = env.inspect("ex")["shim_pid"]
        .as_i64()
        .expect("a running container's shim pid");
    // Detached: the container exits as soon as /go exists, and its exit
    // kills whatever still runs in it, possibly `touch` itself before it
    // returns (exit 137, seen under CI load). The exec is only the trigger.
    env.ok(&["exec", "-d", "ex", "touch", "/go"]);
    env.wait_until(10, "the exited container's shim to go", || gone(shim));
    shim
}

fn check_exited(env: &Env, runs: usize) {
    assert_eq!(env.ok(&["wait", "ex"]), "3\n");
    let info = env.inspect("ex");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["exit_code"], 3);
    assert!(info["shim_pid"].is_null(), "{info}");
    assert!(info["finished_at"].is_string(), "{info}");
    // From the exit record: the shim that knew it is gone.
    assert!(info["started_at"].is_string(), "{info}");
    assert!(
        env.our_processes().is_empty(),
        "no process for an exited container: {:?}",
        env.our_processes()
    );
    let logs = env.berth(&["logs", "ex"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), "out\n".repeat(runs));
    assert_eq!(stderr(&logs), "err\n".repeat(runs));
    let attach = env.berth(&["attach", "ex"]);
    assert!(!attach.status.success());
    assert!(
        stderr(&attach).contains("has exited"),
        "{}",
        stderr(&attach)
    );
}

#[test]
fn an_exited_container_holds_no_process_and_its_verbs_work_from_disk() {
    let Some(mut env) = Env::new() else { return };
    let first = run_to_exit(&env, true);
    check_exited(&env, 1);
    // The runtime still holds the stopped container until rm or start.
    let id = env.inspect("ex")["id"].as_str().unwrap().to_string();
    assert_eq!(env.runc_containers(), vec![id.clone()]);
    // start: a new shim runs it again.
    let second = run_to_exit(&env, false);
    assert_ne!(first, second);
    check_exited(&env, 2);
    // A berthd killed and restarted adopts it from the disk alone.
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    check_exited(&env, 2);
    assert_eq!(env.inspect("ex")["restart_count"], 1);
    run_to_exit(&env, false);
    check_exited(&env, 3);
    // rm does the runtime's delete itself.
    env.ok(&["rm", "ex"]);
    env.assert_clean();
}

/// A restart policy runs an exited container again under a new shim; once
/// it gives up, no process is left.
#[test]
fn a_restart_policy_leaves_no_process_once_it_gives_up() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--network",
        "none",
        "--restart",
        "on-failure:2",
        "--",
        "sh",
        "-c",
        "echo ran; exit 4",
    ]);
    env.wait_until(20, "two restarts and the last exit", || {
        let info = env.inspect("flaky");
        info["restart_count"] == 2 && info["status"] == "exited" && info["shim_pid"].is_null()
    });
    env.wait_until(10, "no process left", || env.our_processes().is_empty());
    assert_eq!(env.ok(&["wait", "flaky"]), "4\n");
    assert_eq!(env.ok(&["logs", "flaky"]), "ran\nran\nran\n");
    env.ok(&["rm", "flaky"]);
    env.assert_clean();
}
