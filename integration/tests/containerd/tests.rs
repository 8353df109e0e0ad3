use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::harness::{is_zombie, threads, Bg, Ctrd, RUNTIME, SHIM};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ctrd_run_rm_gives_output_and_exit_code() {
    let Some(c) = Ctrd::new() else { return };
    let rootfs = c.rootfs.to_string_lossy().into_owned();
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--rootfs",
        &rootfs,
        "r1",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(text(&out.stdout), "out\n", "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{}", c.log());
    // --rm: the task, the container and the shim are gone.
    assert!(c.tasks().is_empty());
    assert!(!c.ok(&["container", "ls", "-q"]).contains("r1"));
    c.wait_until(10, "the shim to exit", || c.shims().is_empty());
    assert!(!c.bundle("r1").exists(), "the bundle was removed");
}

#[test]
fn ctrd_detached_exec_pause_resume_ps_metrics_kill_delete() {
    let Some(c) = Ctrd::new() else { return };
    c.run_detached("d1", &["/bin/sh", "-c", "while true; do sleep 1; done"]);
    let (pid, status) = c.task("d1").expect("listed");
    assert_eq!(status, "RUNNING");
    // The container's cgroup directories, which its delete must remove.
    let cgroups: Vec<std::path::PathBuf> =
        match runtime_core::cgroup::of_pid(pid as i32).expect("the task's cgroup") {
            runtime_core::cgroup::Cgroup::V2(d) => vec![d],
            runtime_core::cgroup::Cgroup::V1(dirs) => dirs.into_values().collect(),
        };
    assert!(cgroups.iter().any(|d| d.ends_with("d1")), "{cgroups:?}");

    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "d1",
        "/bin/sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    assert_eq!(text(&out.stdout), "in-exec\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(5));

    let ps = c.ok(&["task", "ps", "d1"]);
    assert!(
        ps.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "the init is in ps: {ps}"
    );

    c.ok(&["task", "pause", "d1"]);
    assert_eq!(c.task("d1").expect("listed").1, "PAUSED");
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        state.contains("State:\tS") || state.contains("State:\tD"),
        "{state}"
    );
    c.ok(&["task", "resume", "d1"]);
    assert_eq!(c.task("d1").expect("listed").1, "RUNNING");

    let metrics = c.ok(&["task", "metrics", "d1"]);
    let pids_current = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pids.current"))
        .map(str::trim)
        .and_then(|v| v.parse::<u64>().ok())
        .expect("pids.current in metrics");
    assert!(pids_current >= 1, "{metrics}");
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");

    c.ok(&["task", "kill", "-s", "KILL", "d1"]);
    c.wait_until(10, "the task to stop", || {
        c.task("d1").is_some_and(|(_, s)| s == "STOPPED")
    });
    // A stopped process cannot be signalled: containerd's NotFound.
    let again = c.ctr(&["task", "kill", "d1"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("process already finished"),
        "{}",
        text(&again.stderr)
    );

    let del = c.ctr(&["task", "delete", "d1"]);
    assert!(del.status.success(), "{}", text(&del.stderr));
    assert!(
        text(&del.stderr).contains("exit code 137"),
        "{}",
        text(&del.stderr)
    );
    assert!(c.task("d1").is_none());
    // The shim's delete of the stopped task (`stopped`, without runc)
    // left no cgroup behind.
    for d in cgroups.iter().filter(|d| d.ends_with("d1")) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    c.ok(&["container", "rm", "d1"]);
    c.wait_until(10, "the shim to exit", || c.shims().is_empty());
}

#[test]
fn ctrd_tty_is_a_real_pty_with_the_clients_size() {
    let Some(c) = Ctrd::new() else { return };
    let ws = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let rootfs = c.rootfs.to_string_lossy().into_owned();
    let mut child = c
        .cmd(&[
            "run",
            "--rm",
            "-t",
            "--runtime",
            RUNTIME,
            "--rootfs",
            &rootfs,
            "t1",
            "/bin/sh",
            "-c",
            // ctr sends the size (ResizePty) just after Start: wait for it.
            "tty; i=0; until stty size 2>/dev/null | grep -q 33; do \
             i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done; stty size; exit 4",
        ])
        .stdin(Stdio::from(
            slave.as_fd().try_clone_to_owned().expect("dup"),
        ))
        .stdout(Stdio::from(
            slave.as_fd().try_clone_to_owned().expect("dup"),
        ))
        .stderr(Stdio::from(
            slave.as_fd().try_clone_to_owned().expect("dup"),
        ))
        .spawn()
        .expect("spawn ctr");
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave fd (ctr's) closes.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let status = child.wait().expect("wait ctr");
    let out = text(&reader.join().expect("reader"));
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(
        out.contains("33 77"),
        "the pty has the client's size: {out}"
    );
    assert_eq!(status.code(), Some(4), "{out}");
}

#[test]
fn ctrd_exit_while_containerd_is_down_keeps_its_true_status() {
    let Some(mut c) = Ctrd::new() else { return };
    c.run_detached(
        "x1",
        &[
            "/bin/sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.05; done; exit 7",
        ],
    );
    c.kill_containerd();
    std::fs::write(c.rootfs.join("go"), b"").expect("trigger");
    // The shim records the exit on disk before telling anyone.
    let record = c.bundle("x1").join("exit");
    c.wait_until(10, "the exit record", || record.exists());
    c.start_containerd();
    assert_eq!(c.task("x1").expect("listed after restart").1, "STOPPED");
    let del = c.ctr(&["task", "delete", "x1"]);
    assert!(del.status.success(), "{}", text(&del.stderr));
    assert!(
        text(&del.stderr).contains("exit code 7"),
        "the true status after the restart: {}",
        text(&del.stderr)
    );
}

#[test]
fn ctrd_restart_finds_every_task_running_with_the_same_pids() {
    let Some(mut c) = Ctrd::new() else { return };
    // The number: containerd restarted with 20 tasks running.
    let ids: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for id in &ids {
        c.run_detached(id, &["/bin/sleep", "1000"]);
    }
    let mut before = c.tasks();
    before.sort();
    assert_eq!(before.len(), ids.len());
    let mut shims_before = c.shims();
    shims_before.sort();
    assert_eq!(shims_before.len(), ids.len(), "one shim per task");
    c.kill_containerd();
    c.start_containerd();
    let mut after = c.tasks();
    after.sort();
    assert_eq!(
        after, before,
        "same tasks, PIDs and status after the restart"
    );
    let mut shims_after = c.shims();
    shims_after.sort();
    assert_eq!(
        shims_after, shims_before,
        "containerd reconnected to the same shims"
    );
    assert!(after.iter().all(|(_, _, s)| s == "RUNNING"), "{after:?}");
    // And they are still under control: kill and wait through the new containerd.
    c.ok(&["task", "kill", "-s", "KILL", "k0"]);
    c.wait_until(10, "k0 to stop", || {
        c.task("k0").is_some_and(|(_, s)| s == "STOPPED")
    });
}

#[test]
fn ctrd_killed_shim_leaves_no_container_behind() {
    let Some(c) = Ctrd::new() else { return };
    c.run_detached("s1", &["/bin/sleep", "1000"]);
    let (pid, _) = c.task("s1").expect("listed");
    let shim: i32 = std::fs::read_to_string(c.bundle("s1").join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    kill(Pid::from_raw(shim), Signal::SIGKILL).expect("kill the shim");
    // containerd runs `shim delete` on the bundle, then removes it.
    c.wait_until(15, "containerd to clean up after the shim", || {
        !c.bundle("s1").exists()
    });
    assert!(c.task("s1").is_none(), "{:?}", c.tasks());
    c.wait_until(10, "the container's init to die", || is_zombie(pid as i32));
    assert!(c.shims().is_empty());
    assert!(
        c.log().contains("cleaning up dead shim"),
        "containerd saw the shim die"
    );
}

#[test]
fn ctrd_shim_refuses_bad_command_lines() {
    let Some(c) = Ctrd::new() else { return };
    let shim = c.bin.join(SHIM);
    let out = std::process::Command::new(&shim)
        .args(["-nope", "start"])
        .output()
        .expect("run shim");
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr).trim(),
        "containerd-shim-berth-v2: flag provided but not defined: -nope"
    );
    let out = std::process::Command::new(&shim)
        .args([
            "-namespace",
            "default",
            "-address",
            "/x",
            "-id",
            "../x",
            "start",
        ])
        .current_dir(c.dir.path())
        .output()
        .expect("run shim");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("invalid task id \"../x\""),
        "{}",
        text(&out.stderr)
    );
    assert!(!c.dir.path().join("address").exists(), "nothing written");
}

/// The `ctr events` lines of `topic` for container `id`.
fn events_of(ev: &Bg, topic: &str, id: &str) -> Vec<String> {
    let tag = format!("\"container_id\":\"{id}\"");
    ev.output()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == topic) && l.contains(&tag))
        .map(str::to_string)
        .collect()
}

#[test]
fn ctrd_task_events_reach_containerd() {
    let Some(c) = Ctrd::new() else { return };
    let ev = c.events();
    c.events_ready(&ev);
    c.run_detached("v1", &["/bin/sh", "-c", "while true; do sleep 1; done"]);
    let out = c.ctr(&["task", "exec", "--exec-id", "x1", "v1", "/bin/true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.ok(&["task", "pause", "v1"]);
    c.ok(&["task", "resume", "v1"]);
    c.ok(&["task", "kill", "-s", "KILL", "v1"]);
    c.wait_until(10, "the task to stop", || {
        c.task("v1").is_some_and(|(_, s)| s == "STOPPED")
    });
    c.ok(&["task", "delete", "v1"]);
    // In the order the shim sent them (one sender, in order).
    let topics = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ];
    c.wait_until(10, "the delete event", || {
        !events_of(&ev, "/tasks/delete", "v1").is_empty()
    });
    let all = ev.output();
    let mut at = 0;
    for t in topics {
        let mut found = events_of(&ev, t, "v1");
        if t == "/tasks/exit" {
            // The init's exit (the exec's came right after exec-started).
            found.retain(|l| l.contains("\"id\":\"v1\""));
        }
        assert!(!found.is_empty(), "no {t} event for v1:\n{all}");
        let pos = all.find(&found[0]).unwrap_or(0);
        assert!(pos >= at, "{t} came out of order:\n{all}");
        at = pos;
    }
    // Two exits: the exec's (id x1, status 0) and the init's (137).
    let exits = events_of(&ev, "/tasks/exit", "v1");
    assert!(
        exits.iter().any(|l| l.contains("\"id\":\"x1\"")),
        "the exec's exit: {exits:?}"
    );
    assert!(
        exits
            .iter()
            .any(|l| l.contains("\"id\":\"v1\"") && l.contains("\"exit_status\":137")),
        "the init's exit with its status: {exits:?}"
    );
}

#[test]
fn ctrd_one_thread_serves_while_a_wait_is_parked() {
    let Some(c) = Ctrd::new() else { return };
    c.run_detached("w1", &["/bin/sleep", "1000"]);
    let shim: i32 = std::fs::read_to_string(c.bundle("w1").join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    // containerd's Wait for this exec stays open in the shim while the
    // exec runs; everything else must still be answered meanwhile.
    let mut waiter = c.background(
        "exec",
        &[
            "task",
            "exec",
            "--exec-id",
            "long",
            "w1",
            "/bin/sleep",
            "1000",
        ],
    );
    c.wait_until(10, "the exec to run", || {
        c.ok(&["task", "ps", "w1"]).lines().skip(1).count() == 2
    });
    assert_eq!(c.task("w1").expect("listed").1, "RUNNING");
    c.ok(&["task", "pause", "w1"]);
    c.ok(&["task", "resume", "w1"]);
    // One thread serves containerd, reaps and records exits; the event
    // sender comes and goes with events (a pty adds its two copiers).
    c.wait_until(15, "the shim to be down to one thread", || {
        threads(shim) == 1
    });
    c.ok(&["task", "kill", "--exec-id", "long", "-s", "KILL", "w1"]);
    c.wait_until(10, "the waiting client to get the exit", || {
        matches!(waiter.child.try_wait(), Ok(Some(_)))
    });
    let status = waiter.child.wait().expect("wait");
    assert_eq!(status.code(), Some(137), "{}", waiter.output());
}

#[test]
fn ctrd_oom_kill_is_a_task_oom_event_and_137() {
    let Some(c) = Ctrd::new() else { return };
    let ev = c.events();
    c.events_ready(&ev);
    let rootfs = c.rootfs.to_string_lossy().into_owned();
    // 16 MiB, and a shell string that doubles until the kernel kills it.
    let out = c.ctr(&[
        "run",
        "--rm",
        "--memory-limit",
        "16777216",
        "--runtime",
        RUNTIME,
        "--rootfs",
        &rootfs,
        "m1",
        "/bin/sh",
        "-c",
        "a=x; while true; do a=$a$a; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    c.wait_until(10, "the OOM event", || {
        !events_of(&ev, "/tasks/oom", "m1").is_empty()
    });
    let exits = events_of(&ev, "/tasks/exit", "m1");
    assert!(
        exits.iter().any(|l| l.contains("\"exit_status\":137")),
        "{exits:?}"
    );
    // The OOM is announced before the exit it caused (the counter is read
    // once more at the exit, whatever the wake-up's timing).
    let all = ev.output();
    let oom_at = all.find(&events_of(&ev, "/tasks/oom", "m1")[0]);
    let exit_at = all.find(&exits[0]);
    assert!(oom_at < exit_at, "TaskOOM before TaskExit:\n{all}");
}

/// Runs `ctr ARGS` with a pipe as its stdin; once `running` says the
/// process runs, writes `input` and closes the pipe. ctr sends CloseIO when
/// its stdin ends (its stdin closer is armed only after the task or exec
/// exists, hence the wait): a process that reads to EOF finishes only if
/// the shim then lets go of the stdin fifo, so the run has a deadline (and
/// is killed by the guard on failure). (exit code, stdout, stderr).
fn ctr_with_stdin(
    c: &Ctrd,
    name: &str,
    args: &[&str],
    input: &[u8],
    mut running: impl FnMut() -> bool,
) -> (Option<i32>, String, String) {
    use std::io::Write;
    let err = c.dir.path().join(format!("{name}.err"));
    let out = c.dir.path().join(format!("{name}.out"));
    let child = c
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(std::fs::File::create(&err).expect("error file"))
        .spawn()
        .expect("spawn ctr");
    let mut bg = Bg { child, out };
    c.wait_until(20, "the process to run", &mut running);
    let mut stdin = bg.child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    let mut status = None;
    c.wait_until(
        30,
        "the process to see the end of its stdin (CloseIO)",
        || {
            if let Ok(Some(s)) = bg.child.try_wait() {
                status = Some(s);
            }
            status.is_some()
        },
    );
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    (status.and_then(|s| s.code()), bg.output(), stderr)
}

#[test]
fn ctrd_stdin_reaches_the_task_and_closeio_ends_it() {
    let Some(c) = Ctrd::new() else { return };
    let rootfs = c.rootfs.to_string_lossy().into_owned();
    let input = b"line one\nline two\n";
    // The init: `cat` exits only once CloseIO dropped the shim's end.
    let (code, out, err) = ctr_with_stdin(
        &c,
        "init",
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--rootfs",
            &rootfs,
            "i1",
            "/bin/cat",
        ],
        input,
        || c.task("i1").is_some_and(|(_, s)| s == "RUNNING"),
    );
    assert_eq!(out.as_bytes(), input, "stderr: {err}");
    assert_eq!(code, Some(0), "{err}");

    // An exec: the same through `ctr task exec`.
    c.run_detached("i2", &["/bin/sleep", "1000"]);
    let (code, out, err) = ctr_with_stdin(
        &c,
        "exec",
        &[
            "task",
            "exec",
            "--exec-id",
            "cat",
            "i2",
            "/bin/sh",
            "-c",
            "cat; echo done",
        ],
        input,
        || c.ok(&["task", "ps", "i2"]).lines().skip(1).count() >= 2,
    );
    assert_eq!(out, "line one\nline two\ndone\n", "stderr: {err}");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(c.task("i2").expect("listed").1, "RUNNING");
}
