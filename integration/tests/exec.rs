//! `berth exec`: processes run by the container's shim with `runc exec`,
//! streamed straight between the CLI and the shim.

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::attach::Pty;
use crate::util::{stderr, stdout, Env, RawControl};

/// A running container named `name` that does nothing for a long time.
fn sleeper(env: &Env, name: &str) {
    env.ok(&["run", "-d", "--name", name, "--", "sleep", "100000"]);
}

fn shim_pid(env: &Env, name: &str) -> i32 {
    env.inspect(name)["shim_pid"]
        .as_i64()
        .expect("shim_pid in inspect") as i32
}

/// The shim's open fds.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("shim fds")
        .count()
}

/// Zombie children of `pid`.
fn zombies_of(pid: i32) -> Vec<i32> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str()) {
            z.push(child);
        }
    }
    z
}

fn execs(env: &Env, name: &str) -> Vec<serde_json::Value> {
    env.inspect(name)["execs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn exec_passes_output_exit_code_env_workdir_user_and_stdin() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let out = env.berth(&["exec", "c", "echo", "hello from exec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from exec\n");
    // stderr to stderr, the process's exit code passed through.
    let out = env.berth(&["exec", "c", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // Exec output goes to its client only, not the container's log.
    let logs = env.ok(&["logs", "c"]);
    assert!(!logs.contains("hello from exec"), "log: {logs:?}");
    // -e, -w, -u for the exec only: numeric and by name (the container's
    // /etc/passwd says nobody is 65534).
    let out = env.ok(&[
        "exec",
        "-e",
        "K=V",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "c",
        "sh",
        "-c",
        "echo $K; pwd; id -u",
    ]);
    assert_eq!(out, "V\n/tmp\n1000\n");
    assert_eq!(
        env.ok(&["exec", "-u", "nobody", "c", "id", "-u"]),
        "65534\n"
    );
    // The container's own environment is there, -e overrides it.
    let out = env.ok(&["exec", "-e", "PATH=/bin", "c", "sh", "-c", "echo $PATH"]);
    assert_eq!(out, "/bin\n");
    // -i: our stdin, EOF closes it.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = env.berth_input(&["exec", "-i", "c", "cat"], &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
    // Without -i the process gets no input at all.
    let out = env.berth_input(&["exec", "c", "cat"], b"ignored");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // The container itself is untouched.
    assert_eq!(env.inspect("c")["status"], "running");
}

#[test]
fn detached_exec_reports_its_exit_code_in_inspect() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    // Ends when told to, not after a fixed time: the checks of the running
    // exec below took longer than a second on a loaded machine.
    let out = env.berth(&[
        "exec",
        "-d",
        "c",
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "-d prints nothing");
    let list = execs(&env, "c");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["running"], true, "{list:?}");
    assert_eq!(list[0]["args"][0], "sh");
    assert!(list[0]["pid"].as_i64().unwrap_or(0) > 0, "{list:?}");
    // Docker's ExecIDs names the same exec.
    let ids = env.ok(&["inspect", "--format", "{{json .ExecIDs}}", "c"]);
    assert_eq!(ids.trim(), format!("[{}]", list[0]["id"]), "{ids}");
    let id = list[0]["id"].clone();
    env.ok(&["exec", "c", "touch", "/tmp/go"]);
    // The trigger is an exec too: find ours by its ID.
    let ours = |env: &Env| execs(env, "c").into_iter().find(|e| e["id"] == id);
    env.wait_until(10, "the detached exec to exit", || {
        ours(&env).is_some_and(|e| e["running"] == false)
    });
    let exec = ours(&env).expect("the exec listed");
    assert_eq!(exec["exit"]["exit_code"], 3, "{exec}");
}

#[test]
fn exec_refuses_bad_input_with_one_line_and_changes_nothing() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let refused = |args: &[&str], code: i32, words: &[&str]| {
        let out = env.berth(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err:?}"
        );
        for w in words {
            assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
        }
        assert_eq!(stdout(&out), "", "{args:?}");
    };
    refused(&["exec", "-u", "nobody2", "c", "true"], 125, &["nobody2"]);
    refused(
        &["exec", "-w", "/no/such/dir", "c", "true"],
        125,
        &["/no/such/dir"],
    );
    refused(
        &["exec", "-w", "/etc/passwd", "c", "true"],
        125,
        &["not a directory"],
    );
    refused(&["exec", "-w", "relative", "c", "true"], 125, &["absolute"]);
    refused(&["exec", "c", "no-such-command"], 127, &["no-such-command"]);
    refused(&["exec", "c", "/etc/passwd"], 126, &["permission denied"]);
    refused(&["exec", "nosuch", "true"], 125, &["nosuch"]);
    // Not running: created, paused, exited.
    env.ok(&["create", "--name", "made", "--", "sleep", "100"]);
    refused(&["exec", "made", "true"], 125, &["made", "not running"]);
    env.ok(&["pause", "c"]);
    refused(&["exec", "c", "true"], 125, &["paused"]);
    env.ok(&["unpause", "c"]);
    env.ok(&["run", "--name", "done", "--", "true"]);
    refused(&["exec", "done", "true"], 125, &["done", "not running"]);
    // Nothing was run, nothing changed.
    assert!(execs(&env, "c").is_empty(), "{:?}", execs(&env, "c"));
    assert_eq!(env.inspect("c")["status"], "running");
    assert_eq!(env.inspect("made")["status"], "created");
    assert_eq!(env.inspect("done")["status"], "exited");
    let leftovers: Vec<_> = std::fs::read_dir(env.inspect("c")["state_dir"].as_str().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn exec_tty_through_a_real_pty_resizes_and_detaches() {
    let Some(env) = Env::new() else { return };
    // The container has no tty: exec gets its own.
    sleeper(&env, "c");
    let mut pty = Pty::new(30, 100);
    let mut cli = pty.spawn(&env, &["exec", "-it", "c", "sh"]);
    pty.type_text(b"tty; echo typed-$((6*7))\r");
    pty.wait_for(&env, "typed-42");
    pty.wait_for(&env, "/dev/pts/");
    pty.type_text(b"stty size\r");
    pty.wait_for(&env, "30 100");
    pty.resize(40, 120);
    kill(Pid::from_raw(cli.id() as i32), Signal::SIGWINCH).expect("SIGWINCH");
    pty.ask_until(&env, b"stty size\r", "40 120");
    // Detach keys: the CLI leaves, the exec'd shell runs on.
    pty.type_text(b"\x10\x11");
    let status = pty.wait_exit(&env, &mut cli, "detach with ctrl-p ctrl-q");
    assert!(status.success(), "detach exit: {status}");
    let list = execs(&env, "c");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["running"], true, "{list:?}");
    // And an exec that ends by itself ends the session with its code.
    pty.clear();
    let mut cli = pty.spawn(&env, &["exec", "-it", "c", "sh"]);
    pty.type_text(b"exit 9\r");
    let status = pty.wait_exit(&env, &mut cli, "exit 9");
    assert_eq!(status.code(), Some(9));
}

#[test]
fn an_exec_session_survives_a_berthd_sigkill_with_its_exit_code() {
    let Some(mut env) = Env::new() else { return };
    sleeper(&env, "c");
    let mut cli = env
        .cmd(&[
            "exec",
            "c",
            "sh",
            "-c",
            "echo before; sleep 3; echo after; exit 5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let mut out = cli.stdout.take().expect("stdout");
    let mut first = [0u8; 7];
    out.read_exact(&mut first).expect("first line");
    assert_eq!(&first, b"before\n");
    env.kill_berthd();
    env.start_berthd();
    let status = cli.wait().expect("wait exec");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("rest");
    assert_eq!(status.code(), Some(5), "rest: {rest:?}");
    assert_eq!(rest, "after\n");
    // The new berthd adopted the shim and lists the exec with its code.
    env.wait_restored();
    let list = execs(&env, "c");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["exit"]["exit_code"], 5, "{list:?}");
}

#[test]
fn twenty_execs_at_once_each_get_their_own_output_and_code() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let children: Vec<_> = (0..20)
        .map(|i| {
            let script = format!("for j in 1 2 3; do echo exec-{i}-$j; sleep 0.1; done; exit {i}");
            env.cmd(&["exec", "c", "sh", "-c", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn exec")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("exec output");
        assert_eq!(out.status.code(), Some(i as i32), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("exec-{i}-1\nexec-{i}-2\nexec-{i}-3\n"),
            "exec {i}"
        );
    }
}

#[test]
fn two_hundred_execs_leave_no_zombie_and_no_fd_in_the_shim() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let shim = shim_pid(&env, "c");
    // One first, so whatever the first exec sets up once is in the baseline.
    env.ok(&["exec", "c", "true"]);
    // berthd's per-call connections to the shim close a moment after each
    // call: the baseline is the fewest seen over a second.
    let fds = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            fd_count(shim)
        })
        .min()
        .unwrap_or(0);
    for i in 0..200 {
        let out = env.berth(&["exec", "c", "sh", "-c", "echo x; exit 1"]);
        assert_eq!(out.status.code(), Some(1), "exec {i}: {}", stderr(&out));
    }
    // A leaked pipe, pty or client stays; transient connections go.
    env.wait_until(10, "the shim's fds back to their count", || {
        fd_count(shim) <= fds
    });
    assert_eq!(
        zombies_of(shim),
        Vec::<i32>::new(),
        "zombies under the shim"
    );
    // The shim lets go of every exit berthd was told of; the records
    // stay on disk, where inspect finds them: the 64 most recent, once
    // their exits are journaled (a busy container must not fill its
    // directory with one file per exec ever run).
    env.wait_until(10, "the shim to hold no ended exec", || {
        let state = RawControl::connect(&env, "c").call("state", serde_json::Value::Null);
        state["result"]["execs"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    env.wait_until(10, "the oldest exec records to be forgotten", || {
        execs(&env, "c").len() == 64
    });
    let all = execs(&env, "c");
    // The first exec (`true`, exit 0) is the oldest: gone.
    assert!(
        all.iter()
            .all(|e| e["exit"]["exit_code"] == 1 && e["running"] == false),
        "{all:?}"
    );
    let dir = PathBuf::from(env.inspect("c")["data_dir"].as_str().unwrap());
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .count();
    assert_eq!(files, 128, "an .exit and an .event per exec kept");
}

#[test]
fn forty_execs_ending_while_berthd_is_killed_are_each_journaled_exactly_once() {
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
        "100000",
    ]);
    // Far more than the 16 exits the shim used to keep in memory.
    const N: usize = 40;
    for i in 0..N {
        let script = format!("while [ ! -e /trigger/go ]; do sleep 0.05; done; exit {i}");
        env.ok(&["exec", "-d", "c", "sh", "-c", &script]);
    }
    let pids: Vec<i32> = execs(&env, "c")
        .iter()
        .map(|e| e["pid"].as_i64().unwrap() as i32)
        .collect();
    assert_eq!(pids.len(), N);
    env.kill_berthd();
    std::fs::write(trigger.join("go"), "").unwrap();
    env.wait_until(20, "every exec to be reaped", || {
        pids.iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    env.start_berthd();
    env.wait_restored();
    let exits = |env: &Env| -> Vec<serde_json::Value> {
        env.journal("c")
            .into_iter()
            .filter(|e| e["type"] == "exec_exit")
            .collect()
    };
    env.wait_until(20, "every exec's exit event", || exits(&env).len() >= N);
    // Once more: a berthd killed and started again journals nothing twice.
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    std::thread::sleep(Duration::from_millis(1500));
    let all = exits(&env);
    let mut codes: Vec<i64> = all
        .iter()
        .map(|e| e["exit_code"].as_i64().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, (0..N as i64).collect::<Vec<_>>(), "{all:?}");
    let mut ids: Vec<&str> = all.iter().map(|e| e["exec_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "each exec once: {all:?}");
    // With the container ended its shim goes; the codes stay in inspect.
    let shim = shim_pid(&env, "c");
    env.ok(&["kill", "c"]);
    env.wait_until(20, "the shim to exit", || {
        !std::path::Path::new(&format!("/proc/{shim}")).exists()
    });
    let listed = execs(&env, "c");
    assert_eq!(listed.len(), N, "{listed:?}");
    let mut codes: Vec<i64> = listed
        .iter()
        .map(|e| e["exit"]["exit_code"].as_i64().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, (0..N as i64).collect::<Vec<_>>());
}

#[test]
fn a_background_child_holding_stdout_does_not_hold_the_exec() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let out = env.berth(&["exec", "c", "sh", "-c", "sleep 600 & echo started; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "started\n");
    // Bounded drain: the exec ended while the child still holds its
    // stdout (moby#33039 is a session that hangs until the child exits).
    let top = env.ok(&["top", "c"]);
    assert!(
        top.contains("sleep 600"),
        "the child is gone already: {top}"
    );
    assert_eq!(env.inspect("c")["status"], "running");
}

#[test]
fn a_detached_exec_with_a_tty_runs_on_its_own_pty_and_reports_its_code() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    let out = env.berth(&[
        "exec",
        "-dt",
        "c",
        "sh",
        "-c",
        "tty > /tmp/dt.tty; echo output nobody reads; exit 3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "-dt prints nothing");
    env.wait_until(10, "the detached exec to exit", || {
        execs(&env, "c")
            .first()
            .is_some_and(|e| e["running"] == false)
    });
    let list = execs(&env, "c");
    assert_eq!(list[0]["exit"]["exit_code"], 3, "{list:?}");
    // It had a terminal of its own (the container has none).
    let tty = env.ok(&["exec", "c", "cat", "/tmp/dt.tty"]);
    assert!(tty.starts_with("/dev/pts/"), "{tty:?}");
}

#[test]
fn exec_refuses_bad_detach_keys_and_env_in_one_line_and_runs_nothing() {
    let Some(env) = Env::new() else { return };
    sleeper(&env, "c");
    for (args, word) in [
        (
            &["exec", "--detach-keys", "ctrl-", "-it", "c", "true"][..],
            "ctrl-",
        ),
        (&["exec", "-e", "=v", "c", "true"][..], "=v"),
    ] {
        let out = env.berth(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.contains(word), "{args:?}: {err:?} lacks {word:?}");
    }
    assert!(execs(&env, "c").is_empty(), "{:?}", execs(&env, "c"));
    // -e NAME passes the caller's value on, as Docker.
    let out = env
        .cmd(&[
            "exec",
            "-e",
            "BERTH_TEST_PASSED",
            "c",
            "sh",
            "-c",
            "echo $BERTH_TEST_PASSED",
        ])
        .env("BERTH_TEST_PASSED", "from-us")
        .output()
        .expect("exec");
    assert_eq!(stdout(&out), "from-us\n", "{}", stderr(&out));
}
