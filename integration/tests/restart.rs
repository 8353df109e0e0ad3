//! berthd restarts: adoption, exits while down, dead shims, crashes in the
//! middle of create, restart loops. Nothing lost, nothing leaked.

use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{stdout, Env};

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn alive(pid: i64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
}

/// A container printing 0, 1, 2, ... one per line, quickly.
const COUNTER: &str = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.005; done";

fn check_counter(text: &str, what: &str) -> usize {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, i.to_string(), "{what}: gap or duplicate at line {i}");
        n += 1;
    }
    n
}

fn spawn_attach(env: &Env, name: &str) -> Child {
    env.cmd(&["attach", "--no-stdin", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth attach")
}

#[test]
fn sigkill_berthd_with_20_containers_loses_nothing() {
    let Some(mut env) = Env::new() else { return };
    let mut names = Vec::new();
    for i in 0..20 {
        let name = format!("c{i}");
        let cmd = if i % 2 == 0 { COUNTER } else { "sleep 1000" };
        env.ok(&["run", "-d", "--name", &name, "--", "sh", "-c", cmd]);
        names.push(name);
    }
    let pids: Vec<_> = names
        .iter()
        .map(|n| env.inspect(n)["pid"].clone())
        .collect();
    let attached: Vec<Child> = ["c0", "c2", "c4"]
        .iter()
        .map(|n| spawn_attach(&env, n))
        .collect();
    sleep_ms(300);
    env.kill_berthd();
    sleep_ms(500);
    env.start_berthd();
    env.wait_restored();
    for (name, pid) in names.iter().zip(&pids) {
        let info = env.inspect(name);
        assert_eq!(info["status"], "running", "{name}");
        assert_eq!(&info["pid"], pid, "{name} has a new PID");
    }
    sleep_ms(300);
    for name in ["c0", "c2", "c4"] {
        env.ok(&["kill", "-s", "KILL", name]);
    }
    for (name, child) in ["c0", "c2", "c4"].iter().zip(attached) {
        let out = child.wait_with_output().expect("attach output");
        assert_eq!(
            out.status.code(),
            Some(137),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Attached late: the stream starts somewhere, then never skips or repeats.
        let text = stdout(&out);
        let lines: Vec<u64> = text.lines().map(|l| l.parse().expect("number")).collect();
        assert!(lines.len() > 50, "{name}: only {} lines", lines.len());
        for w in lines.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{name}: attached stream not contiguous");
        }
        let log = stdout(&env.berth(&["logs", name]));
        let n = check_counter(&log, name);
        assert!(
            n as u64 > *lines.last().expect("lines"),
            "{name}: log shorter than the attached stream"
        );
    }
    for name in &names {
        env.ok(&["rm", "-f", name]);
    }
    env.assert_clean();
}

#[test]
fn exits_while_berthd_is_down_keep_their_codes() {
    let Some(mut env) = Env::new() else { return };
    for (name, code) in [("e0", 0), ("e3", 3), ("e42", 42)] {
        env.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--",
            "sh",
            "-c",
            &format!("sleep 0.3; exit {code}"),
        ]);
    }
    env.ok(&["run", "-d", "--name", "victim", "--", "sleep", "1000"]);
    let victim = env.inspect("victim")["pid"].as_i64().expect("pid");
    let exit_records: Vec<_> = ["e0", "e3", "e42", "victim"]
        .iter()
        .map(|n| {
            let dir = env.inspect(n)["data_dir"]
                .as_str()
                .expect("dir")
                .to_string();
            std::path::PathBuf::from(dir).join("exit")
        })
        .collect();
    env.kill_berthd();
    // Killed from outside while nobody supervises.
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill victim");
    // All four end while berthd is down: their shims' exit records say so
    // (a fixed wait let a slow machine start berthd before an exit).
    env.wait_until(10, "the exit records while berthd is down", || {
        exit_records.iter().all(|r| r.exists())
    });
    env.start_berthd();
    env.wait_restored();
    for (name, code) in [("e0", 0), ("e3", 3), ("e42", 42), ("victim", 137)] {
        let info = env.inspect(name);
        assert_eq!(info["status"], "exited", "{name}");
        assert_eq!(info["exit_code"], code, "{name}");
        assert!(info["finished_at"].is_string(), "{name}");
        assert_eq!(env.ok(&["wait", name]), format!("{code}\n"), "{name}");
    }
    assert_eq!(env.inspect("victim")["signal"], 9);
    // The shims of exited containers are gone by themselves: a berthd
    // restarted now has only the exit records.
    for name in ["e0", "e3", "e42", "victim"] {
        assert!(env.inspect(name)["shim_pid"].is_null(), "{name}");
    }
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    for (name, code) in [("e0", 0), ("e3", 3), ("e42", 42), ("victim", 137)] {
        assert_eq!(
            env.inspect(name)["exit_code"],
            code,
            "{name} from the exit record"
        );
    }
    for name in ["e0", "e3", "e42", "victim"] {
        env.ok(&["rm", name]);
    }
    env.assert_clean();
}

#[test]
fn output_never_blocks_while_berthd_is_down() {
    let Some(mut env) = Env::new() else { return };
    let mib = 64;
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flood",
        "--log-max-size",
        "0",
        "--",
        "sh",
        "-c",
        &format!("head -c {}m /dev/zero | tr '\\0' 'x' | fold -w 1023", mib),
    ]);
    let dir = std::path::PathBuf::from(env.inspect("flood")["state_dir"].as_str().expect("dir"));
    env.kill_berthd();
    // Nobody but the shim is there; the container must still finish.
    env.wait_until(60, "the exit record while berthd is down", || {
        dir.join("exit").exists()
    });
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("flood")["exit_code"], 0);
    let out = env.berth(&["logs", "flood"]);
    let bytes = mib << 20;
    // fold adds a newline after every 1023 bytes (and none at the very end).
    assert_eq!(out.stdout.len(), bytes + bytes / 1023);
    env.ok(&["rm", "flood"]);
}

#[test]
fn killed_shim_is_detected_while_up_and_at_start() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "orphan",
        "--",
        "sh",
        "-c",
        "echo before; sleep 1000",
    ]);
    let info = env.inspect("orphan");
    let (shim, init) = (
        info["shim_pid"].as_i64().expect("shim"),
        info["pid"].as_i64().expect("pid"),
    );
    // Output still in the pipe dies with the shim: kill it once logged.
    env.wait_until(10, "the line to be logged", || {
        stdout(&env.berth(&["logs", "orphan"])) == "before\n"
    });
    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill shim");
    env.wait_until(10, "berthd to notice the dead shim", || {
        env.inspect("orphan")["status"] == "exited"
    });
    let info = env.inspect("orphan");
    assert!(info["exit_code"].is_null(), "made-up exit code: {info}");
    assert!(
        info["reason"].as_str().unwrap_or("").contains("shim died"),
        "{info}"
    );
    env.wait_until(10, "the container process to be gone", || !alive(init));
    assert!(env.runc_containers().is_empty());
    assert_eq!(
        stdout(&env.berth(&["logs", "orphan"])),
        "before\n",
        "log kept"
    );
    let wait = env.berth(&["wait", "orphan"]);
    assert!(String::from_utf8_lossy(&wait.stderr).contains("shim died"));

    // The same with berthd down when the shim dies.
    env.ok(&["run", "-d", "--name", "orphan2", "--", "sleep", "1000"]);
    let info = env.inspect("orphan2");
    let (shim, init) = (
        info["shim_pid"].as_i64().expect("shim"),
        info["pid"].as_i64().expect("pid"),
    );
    env.kill_berthd();
    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill shim");
    env.start_berthd();
    env.wait_until(10, "dead shim found at start", || {
        env.inspect("orphan2")["status"] == "exited"
    });
    assert!(env.inspect("orphan2")["reason"]
        .as_str()
        .unwrap_or("")
        .contains("shim died"));
    env.wait_until(10, "the container process to be gone", || !alive(init));
    // It stays explained across another restart.
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    assert!(env.inspect("orphan2")["reason"]
        .as_str()
        .unwrap_or("")
        .contains("shim died"));
    env.ok(&["rm", "orphan", "orphan2"]);
    env.assert_clean();
}

#[test]
/// Either cleaned up or a working container, and `ps -a` says which.
fn berthd_killed_at_each_step_of_create_leaves_a_clean_state() {
    for step in ["before-meta", "after-meta", "after-bundle", "after-shim"] {
        let Some(mut env) = Env::stopped() else {
            return;
        };
        env.berthd_env = vec![("BERTH_TEST_CRASH_AT".into(), step.into())];
        env.start_berthd();
        let out = env.berth(&["run", "-d", "--name", "half", "--", "sleep", "1000"]);
        assert!(!out.status.success(), "{step}: run succeeded");
        let status = env.wait_berthd_exit();
        assert!(!status.success(), "{step}: berthd did not die");
        env.berthd_env.clear();
        env.start_berthd();
        if step == "after-shim" {
            // The shim had already started it: a working container, adopted.
            env.wait_until(10, "adoption", || {
                env.inspect("half")["status"] == "running"
            });
            env.ok(&["rm", "-f", "half"]);
        }
        env.assert_clean();
        // And the name is free again.
        env.ok(&["run", "--name", "half", "--", "true"]);
    }
}

#[test]
fn restart_loop_loses_nothing_and_leaks_nothing() {
    let Some(mut env) = Env::new() else { return };
    let mut expected = Vec::new();
    for round in 0..20 {
        let name = format!("r{round}");
        let code = round % 7;
        env.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            &format!("echo {name}; sleep 0.{}; exit {code}", round % 4),
        ]);
        expected.push((name, code));
        if round % 3 == 0 {
            // A quick one removed as it goes, racing the restart.
            env.ok(&["run", "-d", "--rm", "--", "true"]);
        }
        env.kill_berthd();
        env.start_berthd();
    }
    env.wait_restored();
    for (name, code) in &expected {
        assert_eq!(env.ok(&["wait", name]), format!("{code}\n"), "{name}");
        assert_eq!(stdout(&env.berth(&["logs", name])), format!("{name}\n"));
    }
    env.wait_until(10, "--rm containers to go", || {
        env.ps_all().len() == expected.len()
    });
    for (name, _) in &expected {
        env.ok(&["rm", name]);
    }
    env.assert_clean();
}

/// A container whose meta.json cannot be read at start-up is left alone:
/// not listed, never removed (its shim and container keep running), the
/// reason in berthd's log. Once the file is readable again, the next
/// berthd adopts it as if nothing happened. (Any failure to read it used
/// to remove the directory as half-made.)
#[test]
fn a_container_whose_definition_cannot_be_read_is_left_alone() {
    let Some(mut env) = Env::new() else {
        return;
    };
    env.ok(&["run", "-d", "--name", "kept", "--", "sleep", "1000"]);
    let info = env.inspect("kept");
    let id = info["id"].as_str().expect("id").to_string();
    let pid = info["pid"].as_i64().expect("pid");
    let dir = std::path::PathBuf::from(info["data_dir"].as_str().expect("data_dir"));
    let meta = dir.join("meta.json");
    let good = std::fs::read(&meta).expect("meta.json");
    env.kill_berthd();
    // Put the definition back whatever happens, so the guard of `env`
    // (dropped after this) can remove the container.
    struct Restore<'a>(&'a std::path::Path, &'a [u8]);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, self.1);
        }
    }
    let _restore = Restore(&meta, &good);
    std::fs::write(&meta, b"{ damaged").expect("damage meta.json");
    env.start_berthd();
    env.wait_restored();
    assert!(
        env.ps_all().iter().all(|c| c["id"] != id.as_str()),
        "a container with an unreadable definition was listed"
    );
    assert!(dir.exists(), "the container's directory was removed");
    assert!(alive(pid), "the container's process was stopped");
    let log = env.berthd_log();
    assert!(
        log.contains(&id) && log.contains("left alone"),
        "berthd did not say why: {log}"
    );

    std::fs::write(&meta, &good).expect("repair meta.json");
    env.kill_berthd();
    env.start_berthd();
    env.wait_until(20, "the adoption", || {
        env.ps_all()
            .iter()
            .any(|c| c["id"] == id.as_str() && c["status"] == "running")
    });
    assert_eq!(env.inspect("kept")["pid"].as_i64(), Some(pid));
}

/// A SIGTERM while berthd is still restoring its containers stops it
/// through its shutdown steps (exit 0, the API socket gone), where the
/// signal's default action used to kill it. A FIFO as one container's
/// meta.json holds the restore in place: its reader waits in open(2) for
/// a writer that never comes.
#[test]
fn sigterm_during_the_start_up_restore_stops_berthd_cleanly() {
    let Some(mut env) = Env::new() else {
        return;
    };
    env.ok(&["run", "-d", "--name", "a", "--", "sleep", "1000"]);
    env.kill_berthd();
    let held = env.root.join("containers").join("0".repeat(64));
    std::fs::create_dir(&held).expect("held container directory");
    nix::unistd::mkfifo(
        &held.join("meta.json"),
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .expect("mkfifo");
    // The killed berthd's socket name is still there: gone first, then
    // the new one is bound after the handlers are installed and before
    // the restore begins, which never ends while the FIFO is there.
    let sock = env.root.join("berthd.sock");
    std::fs::remove_file(&sock).expect("remove the killed berthd's socket");
    env.spawn_berthd();
    env.wait_until(10, "the API socket", || sock.exists());
    let status = env.stop_berthd();
    assert!(status.success(), "{status:?}; log:\n{}", env.berthd_log());
    assert!(!sock.exists(), "the API socket was left behind");
    std::fs::remove_dir_all(&held).expect("remove the held directory");
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("a")["status"], "running");
    env.ok(&["rm", "-f", "a"]);
}
