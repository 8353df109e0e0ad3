//! The lifecycle verbs: create, start (-a), stop, restart, top, and the bad
//! input each refuses with one line, a non-zero exit and nothing changed.

use std::time::Duration;

use crate::util::{stderr, stdout, Env};

/// One line on stderr naming `words`, non-zero, and `status` unchanged.
fn refused(env: &Env, args: &[&str], name: &str, words: &[&str]) {
    let before = env.inspect(name);
    let out = env.berth(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "berth {args:?} succeeded");
    for w in words {
        assert!(err.contains(w), "berth {args:?}: expected {w:?} in {err:?}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    let after = env.inspect(name);
    for field in ["status", "pid", "restart_count", "exit_code"] {
        assert_eq!(
            before[field], after[field],
            "berth {args:?} changed {field}"
        );
    }
}

#[test]
fn create_then_start_attached_gets_all_output_and_the_exit_code() {
    let Some(env) = Env::new() else { return };
    let id = env.ok(&[
        "create",
        "--name",
        "job",
        "--",
        "sh",
        "-c",
        "echo hi; echo err >&2; exit 3",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 16, "{id}");
    let info = env.inspect("job");
    assert_eq!(info["status"], "created");
    assert_eq!(info["id"], id);
    let out = env.berth(&["start", "-a", "job"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(stderr(&out), "err\n");
    env.ok(&["rm", "job"]);
    env.assert_clean();
}

#[test]
fn start_of_an_exited_container_runs_it_again_and_appends_its_log() {
    let Some(env) = Env::new() else { return };
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--",
        "sh",
        "-c",
        "echo run; exit 4",
    ]);
    assert_eq!(env.ok(&["wait", "again"]), "4\n");
    assert_eq!(env.inspect("again")["restart_count"], 0);
    assert_eq!(env.ok(&["start", "again"]), "again\n");
    assert_eq!(env.ok(&["wait", "again"]), "4\n");
    let info = env.inspect("again");
    assert_eq!(info["id"], id.trim(), "same container");
    assert_eq!(info["restart_count"], 1);
    assert_eq!(env.ok(&["logs", "again"]), "run\nrun\n", "log appended");
    // Attached, the second run's output and code come back as with run.
    let out = env.berth(&["start", "-a", "again"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "run\n");
    assert_eq!(env.inspect("again")["restart_count"], 2);
    assert_eq!(env.ok(&["logs", "again"]), "run\nrun\nrun\n");
    env.ok(&["rm", "again"]);
    env.assert_clean();
}

#[test]
fn stop_waits_for_the_deadline_without_a_handler_and_not_with_one() {
    let Some(env) = Env::new() else { return };
    // PID 1 without a SIGTERM handler ignores it: killed at the deadline
    // (137, SIGKILL's status; SIGTERM would have been 143).
    env.ok(&["run", "-d", "--name", "deaf", "--", "sleep", "1000"]);
    assert_eq!(env.ok(&["stop", "-t", "2", "deaf"]), "deaf\n");
    let info = env.inspect("deaf");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["exit_code"], 137);
    // One that takes SIGTERM and goes on: SIGTERM first, then it keeps
    // running (ticks after the trap's line) until SIGKILL at the deadline.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--",
        "sh",
        "-c",
        "trap 'echo got-term' TERM; echo up; while true; do sleep 0.1; echo tick; done",
    ]);
    env.wait_until(10, "the trap to be set", || {
        env.ok(&["logs", "stubborn"]).contains("up")
    });
    env.ok(&["stop", "-t", "2", "stubborn"]);
    assert_eq!(env.inspect("stubborn")["exit_code"], 137);
    let log = env.ok(&["logs", "stubborn"]);
    let after_term = log
        .split_once("got-term\n")
        .unwrap_or_else(|| panic!("SIGTERM never reached it: {log:?}"))
        .1;
    assert!(
        after_term.contains("tick"),
        "SIGKILL came right after SIGTERM, not at the deadline: {log:?}"
    );
    env.ok(&["rm", "stubborn"]);
    // With a handler it exits on SIGTERM, long before the deadline.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "--",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    env.wait_until(10, "the trap to be set", || {
        env.ok(&["logs", "polite"]).contains("up")
    });
    env.ok(&["stop", "-t", "60", "polite"]);
    // Its own exit on SIGTERM (0), not SIGKILL's 137; exited as stop returns.
    let info = env.inspect("polite");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["exit_code"], 0);
    assert!(env.ok(&["logs", "polite"]).contains("bye"));
    // -s picks the first signal.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' USR1; echo up; while true; do sleep 0.1; done",
    ]);
    env.wait_until(10, "the trap to be set", || {
        env.ok(&["logs", "usr1"]).contains("up")
    });
    env.ok(&["stop", "-s", "USR1", "-t", "60", "usr1"]);
    assert_eq!(env.inspect("usr1")["exit_code"], 7);
    // Stopping what is not running succeeds quietly and changes nothing.
    let before = env.inspect("deaf");
    assert_eq!(env.ok(&["stop", "deaf"]), "deaf\n");
    assert_eq!(env.inspect("deaf")["finished_at"], before["finished_at"]);
    env.ok(&["create", "--name", "fresh", "--", "true"]);
    env.ok(&["stop", "fresh"]);
    assert_eq!(env.inspect("fresh")["status"], "created");
    env.ok(&["rm", "deaf", "polite", "usr1", "fresh"]);
    env.assert_clean();
}

#[test]
fn restart_runs_a_running_container_again() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo start; while true; do sleep 0.1; done",
    ]);
    env.wait_until(10, "output", || env.ok(&["logs", "svc"]) == "start\n");
    let pid = env.inspect("svc")["pid"].clone();
    assert_eq!(env.ok(&["restart", "-t", "30", "svc"]), "svc\n");
    let info = env.inspect("svc");
    assert_eq!(info["status"], "running");
    assert_eq!(info["restart_count"], 1);
    assert_ne!(info["pid"], pid);
    env.wait_until(10, "the second run's output", || {
        env.ok(&["logs", "svc"]) == "start\nstart\n"
    });
    env.ok(&["rm", "-f", "svc"]);
    env.assert_clean();
}

#[test]
fn top_lists_the_containers_processes() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--",
        "sh",
        "-c",
        "sleep 1000 & sleep 999",
    ]);
    env.wait_until(10, "both sleeps", || {
        let out = env.ok(&["top", "busy"]);
        out.contains("sleep 1000") && out.contains("sleep 999")
    });
    let out = env.ok(&["top", "busy"]);
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["PID", "USER", "TIME", "COMMAND"]);
    let pid = env.inspect("busy")["pid"].to_string();
    assert!(lines[1..].iter().any(|l| l.starts_with(&pid)), "{out}");
    assert!(
        out.contains("sleep 1000") && out.contains("sleep 999"),
        "{out}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split_whitespace().nth(1) == Some("root")),
        "{out}"
    );
    env.ok(&["rm", "-f", "busy"]);
    env.assert_clean();
}

#[test]
fn verbs_refuse_bad_input_with_one_line_and_change_nothing() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "up", "--", "sleep", "1000"]);
    env.ok(&["run", "-d", "--name", "done", "--", "true"]);
    env.wait_until(10, "exit", || env.inspect("done")["status"] == "exited");
    env.ok(&["create", "--name", "made", "--", "true"]);
    refused(&env, &["start", "up"], "up", &["up", "running"]);
    refused(&env, &["top", "done"], "done", &["done", "exited"]);
    refused(&env, &["top", "made"], "made", &["made", "created"]);
    refused(&env, &["stop", "-s", "BOGUS", "up"], "up", &["BOGUS"]);
    refused(&env, &["start", "-a", "up", "done"], "up", &["exactly one"]);
    let out = env.berth(&["start", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such container"),
        "{}",
        stderr(&out)
    );
    for verb in ["stop", "restart", "top"] {
        let out = env.berth(&[verb, "nosuch"]);
        assert!(!out.status.success(), "{verb}");
        assert!(
            stderr(&out).contains("no such container"),
            "{verb}: {}",
            stderr(&out)
        );
    }
    // Several at once: the good ones go ahead, the bad one is named.
    let out = env.berth(&["stop", "-t", "1", "up", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "up\n");
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    assert_eq!(env.inspect("up")["status"], "exited");
    env.ok(&["rm", "up", "done", "made"]);
    env.assert_clean();
}

#[test]
fn created_containers_survive_a_berthd_restart_and_start_later() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&["create", "--name", "later", "--", "sh", "-c", "echo late"]);
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("later")["status"], "created");
    let out = env.berth(&["start", "-a", "later"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "late\n");
    env.ok(&["rm", "later"]);
    env.assert_clean();
}

#[test]
fn a_start_cut_short_by_berthd_dying_leaves_the_container_exited_as_it_was() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "twice", "--", "sh", "-c", "exit 5"]);
    assert_eq!(env.ok(&["wait", "twice"]), "5\n");
    // What a berthd killed between setting the old exit record aside and
    // the new shim leaves: the record aside, no shim, no exit.
    let dir = std::path::PathBuf::from(env.inspect("twice")["state_dir"].as_str().unwrap());
    env.ok(&["stop", "twice"]);
    // The exited container's shim goes by itself (pid file first).
    env.wait_until(10, "the shim to go", || !dir.join("shim.pid").exists());
    env.kill_berthd();
    std::fs::rename(dir.join("exit"), dir.join("exit.previous")).unwrap();
    env.start_berthd();
    env.wait_restored();
    let info = env.inspect("twice");
    assert_eq!(info["status"], "exited");
    assert_eq!(info["exit_code"], 5);
    // And it can be started again.
    env.ok(&["start", "twice"]);
    assert_eq!(env.ok(&["wait", "twice"]), "5\n");
    env.ok(&["rm", "twice"]);
    env.assert_clean();
}

#[test]
fn pause_stops_a_counter_and_unpause_resumes_it() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done",
    ]);
    let lines = || env.ok(&["logs", "counter"]).lines().count();
    env.wait_until(10, "counting", || lines() > 5);
    assert_eq!(env.ok(&["pause", "counter"]), "counter\n");
    assert_eq!(env.inspect("counter")["status"], "paused");
    // docker's STATUS wording: "Up 2 seconds (Paused)".
    assert!(env.ok(&["ps"]).contains("(Paused)"));
    let frozen = lines();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(lines(), frozen, "output went on while paused");
    // top still lists a paused container's processes.
    assert!(env.ok(&["top", "counter"]).contains("sh -c"));
    refused(
        &env,
        &["pause", "counter"],
        "counter",
        &["counter", "paused"],
    );
    refused(
        &env,
        &["start", "counter"],
        "counter",
        &["counter", "paused"],
    );
    assert_eq!(env.ok(&["unpause", "counter"]), "counter\n");
    assert_eq!(env.inspect("counter")["status"], "running");
    env.wait_until(10, "counting again", || lines() > frozen + 5);
    refused(
        &env,
        &["unpause", "counter"],
        "counter",
        &["counter", "running"],
    );
    // stop of a paused container: thawed after the SIGTERM; this PID 1
    // has no handler, so the SIGKILL at the deadline ends it.
    env.ok(&["pause", "counter"]);
    env.ok(&["stop", "-t", "1", "counter"]);
    assert_eq!(env.inspect("counter")["status"], "exited");
    refused(
        &env,
        &["pause", "counter"],
        "counter",
        &["counter", "exited"],
    );
    refused(
        &env,
        &["unpause", "counter"],
        "counter",
        &["counter", "exited"],
    );
    // kill -s KILL of a paused container works too.
    env.ok(&["run", "-d", "--name", "frozen", "--", "sleep", "1000"]);
    env.ok(&["pause", "frozen"]);
    env.ok(&["kill", "-s", "KILL", "frozen"]);
    env.wait_until(10, "the kill", || {
        env.inspect("frozen")["status"] == "exited"
    });
    assert_eq!(env.inspect("frozen")["exit_code"], 137);
    env.ok(&["rm", "counter", "frozen"]);
    env.assert_clean();
}

#[test]
fn a_paused_container_with_a_handler_stops_gracefully() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--",
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    env.wait_until(10, "the trap", || env.ok(&["logs", "svc"]).contains("up"));
    env.ok(&["pause", "svc"]);
    env.ok(&["stop", "-t", "60", "svc"]);
    // Thawed, it ran its trap (3), not killed at the deadline (137).
    assert_eq!(env.inspect("svc")["exit_code"], 3);
    env.ok(&["rm", "svc"]);
    env.assert_clean();
}
