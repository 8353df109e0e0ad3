//! `berth events`: the journal's content and order, replay after a berthd
//! SIGKILL (an exit that happened while it was down, once, with its true
//! time), a follower that reconnects, the size bound, bad input.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::util::{stderr, stdout, Env};

/// `berth events --json ARGS` that ends by itself (`--until 0s`): parsed.
fn replay(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json", "--until", "0s"];
    all.extend_from_slice(args);
    env.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect()
}

/// A following `berth events --json`, its lines collected as they come.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(env: &Env) -> Follower {
        let mut child = env
            .cmd(&["events", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth events");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).expect("event json");
                sink.lock().unwrap().push(v);
            }
        });
        Follower {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn seen(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops it; everything it printed, and its stderr.
    fn stop(mut self) -> (Vec<Value>, String) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().expect("reader");
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (self.seen(), err)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn kinds_of(evs: &[Value], id: &str) -> Vec<String> {
    evs.iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn id_of(env: &Env, name: &str) -> String {
    env.inspect(name)["id"].as_str().unwrap().to_string()
}

#[test]
fn a_full_lifecycle_in_order_with_exit_codes_live_and_replayed() {
    let Some(mut env) = Env::new() else { return };
    let follower = Follower::start(&env);
    // Connected once it hears something: a container of its own.
    env.wait_until(10, "the follower to connect", || {
        env.ok(&["run", "--rm", "--", "true"]);
        !follower.seen().is_empty()
    });
    // The probes' removal (--rm, in the background: with the network
    // teardown it takes a while) must not interleave with what follows.
    env.wait_until(10, "the probes' delete events", || {
        let seen = follower.seen();
        let has = |id: &Value, t: &str| seen.iter().any(|e| e["id"] == *id && e["type"] == t);
        seen.iter()
            .filter(|e| e["type"] == "create")
            .all(|e| has(&e["id"], "delete"))
    });
    let out = env.berth(&["run", "--name", "three", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let three = id_of(&env, "three");
    env.ok(&["run", "-d", "--name", "web", "--", "sleep", "100"]);
    let web = id_of(&env, "web");
    // berthd restarts: web is adopted (restore).
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    env.ok(&["kill", "-s", "KILL", "web"]);
    env.wait_until(10, "web to exit", || {
        env.inspect("web")["status"] == "exited"
    });
    env.ok(&["rm", "three", "web"]);
    let replayed = replay(&env, &["--since", "10m"]);
    let last = replayed.last().unwrap()["seq"].clone();
    env.wait_until(10, "the follower to see the last delete", || {
        follower.seen().last().is_some_and(|e| e["seq"] == last)
    });
    let (followed, follower_err) = follower.stop();
    // What the follower saw from its first event on is the journal from there.
    let first = followed[0]["seq"].as_u64().unwrap();
    let replayed_from: Vec<Value> = replayed
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() >= first)
        .cloned()
        .collect();
    // Leave out the probes run to see that the follower was connected.
    let replayed: Vec<Value> = replayed
        .into_iter()
        .filter(|e| e["name"] == "three" || e["name"] == "web")
        .collect();

    assert_eq!(
        kinds_of(&replayed, &three),
        ["create", "start", "exit", "delete"]
    );
    assert_eq!(
        kinds_of(&replayed, &web),
        ["create", "start", "restore", "exit", "delete"]
    );
    let exit_of = |id: &str| {
        replayed
            .iter()
            .find(|e| e["id"] == id && e["type"] == "exit")
            .unwrap()
            .clone()
    };
    assert_eq!(exit_of(&three)["exit_code"], 3);
    assert!(exit_of(&three).get("signal").is_none());
    assert_eq!(exit_of(&web)["exit_code"], 137);
    assert_eq!(exit_of(&web)["signal"], 9);
    // Seen live, not reconciled.
    assert!(exit_of(&web).get("reconciled_at").is_none());
    // Sequence numbers increase by one across the restart.
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The follower, which lived through the berthd SIGKILL, saw exactly
    // the journal: nothing missed, nothing twice.
    assert_eq!(followed, replayed_from, "follower stderr: {follower_err}");
    assert!(follower_err.contains("reconnect"), "{follower_err}");
    // Filters.
    let only = replay(
        &env,
        &[
            "--since",
            "10m",
            "--filter",
            "container=web",
            "--filter",
            "type=exit",
        ],
    );
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], web.as_str());
    let text = env.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "type=delete",
        "--filter",
        "container=three",
        "--filter",
        "container=web",
    ]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines().all(|l| l.contains(" container delete ")),
        "{text}"
    );
}

#[test]
fn an_exit_while_berthd_was_down_is_journaled_once_with_its_true_time() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "c", "--", "sleep", "100"]);
    let id = id_of(&env, "c");
    let pid = env.inspect("c")["pid"].as_i64().unwrap() as i32;
    let follower = Follower::start(&env);
    env.wait_until(10, "the follower to connect", || {
        env.ok(&["run", "--rm", "--", "true"]);
        !follower.seen().is_empty()
    });
    env.kill_berthd();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let exit_file = env.root.join("containers").join(&id).join("exit");
    env.wait_until(10, "the shim's exit record", || exit_file.exists());
    std::thread::sleep(Duration::from_millis(200));
    // Restart berthd three times; each reconciles the same exit.
    env.restore_and_crash(3);
    env.start_berthd();
    env.wait_restored();
    let info = env.inspect("c");
    assert_eq!(info["exit_code"], 137);
    let exits = replay(
        &env,
        &[
            "--since",
            "10m",
            "--filter",
            "type=exit",
            "--filter",
            "container=c",
        ],
    );
    assert_eq!(exits.len(), 1, "{exits:?}");
    let exit = &exits[0];
    assert_eq!(exit["id"], id.as_str());
    assert_eq!(exit["exit_code"], 137);
    assert_eq!(exit["signal"], 9);
    // The shim's time, not the time berthd found out.
    assert_eq!(exit["time"], info["finished_at"]);
    let reconciled_at = exit["reconciled_at"].as_str().expect("marked reconciled");
    assert!(reconciled_at > exit["time"].as_str().unwrap());
    env.wait_until(10, "the follower to reconnect and hear the exit", || {
        follower
            .seen()
            .iter()
            .any(|e| e["type"] == "exit" && e["id"] == id.as_str())
    });
    // One more event after it: anything duplicated would come before.
    env.ok(&["run", "--rm", "--name", "after", "--", "true"]);
    env.wait_until(10, "the follower to hear the last delete", || {
        follower
            .seen()
            .iter()
            .any(|e| e["type"] == "delete" && e["name"] == "after")
    });
    let (followed, err) = follower.stop();
    let followed_exits: Vec<_> = followed
        .iter()
        .filter(|e| e["type"] == "exit" && e["id"] == id.as_str())
        .collect();
    assert_eq!(followed_exits, vec![exit], "follower stderr: {err}");
    env.ok(&["rm", "c"]);
}

#[test]
fn the_journal_stays_within_its_size_bound() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.berthd_args = ["--events-max-size", "2k", "--events-max-files", "3"]
        .map(String::from)
        .to_vec();
    env.start_berthd();
    for _ in 0..20 {
        env.ok(&["run", "--rm", "--", "true"]);
    }
    // `run --rm` leaves the removal to berthd: wait for the last one.
    env.assert_clean();
    let dir = env.root.join("events");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().len()))
        .collect();
    assert!(files.len() <= 3, "{files:?}");
    let total: u64 = files.iter().map(|f| f.1).sum();
    assert!(total <= 3 * 2048, "{total} bytes in {files:?}");
    // What is left on disk (a new berthd has only that) is the newest,
    // contiguous, ending with the last delete.
    env.kill_berthd();
    env.start_berthd();
    let evs = replay(&env, &["--since", "1h"]);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        *seqs.last().unwrap(),
        80,
        "20 runs x create, start, exit, delete"
    );
    assert!(seqs[0] > 1, "older events were rotated away");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(evs.last().unwrap()["type"], "delete");
}

#[test]
fn bad_events_input_is_one_line_and_exit_125() {
    let Some(env) = Env::new() else { return };
    for (args, needle) in [
        (
            vec!["events", "--since", "yesterday-ish"],
            "invalid time \"yesterday-ish\"",
        ),
        (vec!["events", "--until", "soon"], "invalid time \"soon\""),
        (
            vec!["events", "--filter", "colour=red"],
            "invalid filter key \"colour\"",
        ),
        (
            vec!["events", "--filter", "type=explode"],
            "invalid event type \"explode\"",
        ),
        (
            vec!["events", "--filter", "container"],
            "expected KEY=VALUE",
        ),
    ] {
        let out = env.berth(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(stdout(&out).is_empty());
    }
    // Nothing was journaled by the refusals.
    assert!(replay(&env, &["--since", "1h"]).is_empty());
}

#[test]
fn the_journal_lives_under_the_data_root() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let data = env.dir.path().join("data");
    env.berthd_args = vec!["--data-root".into(), data.display().to_string()];
    env.start_berthd();
    env.ok(&["run", "--rm", "--name", "d", "--", "true"]);
    env.assert_clean();
    let journal = std::fs::read_to_string(data.join("events/events.log")).unwrap();
    assert_eq!(journal.lines().count(), 4, "{journal}");
    assert!(!env.root.join("events").exists());
}

#[test]
fn pause_unpause_and_exec_are_journaled() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "p",
        "--network",
        "none",
        "--",
        "sleep",
        "100",
    ]);
    let id = id_of(&env, "p");
    env.ok(&["pause", "p"]);
    env.ok(&["unpause", "p"]);
    let out = env.berth(&["exec", "p", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // A refused pause (not paused: unpause) journals nothing.
    assert!(!env.berth(&["unpause", "p"]).status.success());
    let evs = |env: &Env| {
        replay(
            env,
            &["--since", "10m", "--filter", &format!("container={id}")],
        )
    };
    env.wait_until(10, "the exec's exit event", || {
        kinds_of(&evs(&env), &id).contains(&"exec_exit".to_string())
    });
    let all = evs(&env);
    assert_eq!(
        kinds_of(&all, &id),
        [
            "create",
            "start",
            "pause",
            "unpause",
            "exec_start",
            "exec_exit"
        ],
        "{all:?}"
    );
    let (start, exit) = (&all[4], &all[5]);
    assert!(start["exec_id"].is_string(), "{start}");
    assert_eq!(start["exec_id"], exit["exec_id"]);
    assert_eq!(exit["exit_code"], 7);
    assert!(exit["time"].as_str() >= start["time"].as_str(), "{all:?}");
    let text = stdout(&env.berth(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "type=exec_exit",
    ]));
    assert!(
        text.contains("exec_id=") && text.contains("exit_code=7"),
        "{text}"
    );
    env.ok(&["rm", "-f", "p"]);
}

#[test]
fn exec_exits_while_berthd_is_down_are_journaled_once_when_it_returns() {
    let Some(mut env) = Env::new() else { return };
    let trigger = env.dir.path().join("trigger");
    std::fs::create_dir(&trigger).unwrap();
    let volume = format!("{}:/trigger", trigger.display());
    env.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "none",
        "-v",
        &volume,
        "--",
        "sleep",
        "100",
    ]);
    let id = id_of(&env, "c");
    let wait_for = |f: &str, code: u8| {
        format!("while [ ! -e /trigger/{f} ]; do sleep 0.05; done; exit {code}")
    };
    env.ok(&["exec", "-d", "c", "sh", "-c", &wait_for("one", 5)]);
    env.ok(&["exec", "-d", "c", "sh", "-c", &wait_for("two", 6)]);
    let execs = env.inspect("c")["execs"].clone();
    let pids: Vec<i32> = execs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pid"].as_i64().unwrap() as i32)
        .collect();
    assert_eq!(pids.len(), 2, "{execs}");
    let first_exit = std::path::Path::new(env.inspect("c")["data_dir"].as_str().unwrap())
        .join(format!("exec-{}.exit", execs[0]["id"].as_str().unwrap()));
    // The first exec ends while berthd is down; the second after it is back.
    env.kill_berthd();
    std::fs::write(trigger.join("one"), "").unwrap();
    // Its end is dated when the shim takes the status the reaper
    // collected, which can come a moment after the PID is gone: wait for
    // the record the shim writes after dating it, or a berthd started
    // between the two would find the exit later than itself.
    env.wait_until(10, "the first exec's exit record", || first_exit.exists());
    env.restore_and_crash(2);
    env.start_berthd();
    env.wait_restored();
    std::fs::write(trigger.join("two"), "").unwrap();
    let exits = |env: &Env| {
        replay(
            env,
            &[
                "--since",
                "10m",
                "--filter",
                "type=exec_exit",
                "--filter",
                &format!("container={id}"),
            ],
        )
    };
    env.wait_until(10, "the second exec's exit event", || {
        exits(&env).len() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    let all = exits(&env);
    let codes: Vec<i64> = all
        .iter()
        .map(|e| e["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [5, 6], "{all:?}");
    assert!(all[0]["reconciled_at"].is_string(), "{all:?}");
    assert!(all[1]["reconciled_at"].is_null(), "{all:?}");
    env.ok(&["rm", "-f", "c"]);
}

/// An exec still running when its container's init exits dies with the pid
/// namespace; the shim then retires at once. Its `exec_exit` is journaled
/// all the same, exactly once (Docker emits exec_die for it too).
#[test]
fn an_exec_killed_by_the_containers_exit_is_journaled_once() {
    let Some(env) = Env::new() else { return };
    let trigger = env.dir.path().join("trigger");
    std::fs::create_dir(&trigger).unwrap();
    let volume = format!("{}:/trigger", trigger.display());
    env.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "none",
        "-v",
        &volume,
        "--",
        "sh",
        "-c",
        "while [ ! -e /trigger/go ]; do sleep 0.05; done; exit 2",
    ]);
    let id = id_of(&env, "c");
    env.ok(&["exec", "-d", "c", "sleep", "100"]);
    // Lets berthd's follower of the exec back off to a long poll interval,
    // so the container's exit (and the shim's retirement) falls between
    // two polls, as it did when the event was lost.
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(trigger.join("go"), "").unwrap();
    assert_eq!(env.ok(&["wait", "c"]), "2\n");
    let exits = |env: &Env| {
        replay(
            env,
            &[
                "--since",
                "10m",
                "--filter",
                "type=exec_exit",
                "--filter",
                &format!("container={id}"),
            ],
        )
    };
    env.wait_until(10, "the exec's exit event", || !exits(&env).is_empty());
    // Anything journaled twice would be there by now.
    std::thread::sleep(Duration::from_millis(300));
    let all = exits(&env);
    assert_eq!(all.len(), 1, "{all:?}");
    // SIGKILLed with the pid namespace: 128 + 9.
    assert_eq!(all[0]["exit_code"].as_i64(), Some(137), "{all:?}");
    env.ok(&["rm", "-f", "c"]);
}
