//! The shim under pressure: a full disk at exit, slow and silent clients,
//! floods on the control socket; and pause/resume through the shim.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime_core::attach::{TAG_ERROR, TAG_EXIT, TAG_STDOUT};

use crate::util::{fill_disk, Env, RawAttach, RawControl};

/// Keeps the filesystem holding `dir` full with one file until `free`:
/// a thread takes any space that comes back (a process holding a deleted
/// file that dies, a temp file removed after a failed write), so the disk
/// is full for as long as the test says, not for as long as luck holds.
struct Filler {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    fn new(dir: &std::path::Path) -> Filler {
        let path = dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        fill_disk(&mut f);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    fill_disk(&mut f);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Filler {
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops taking space and gives it all back.
    fn free(mut self) {
        self.stop_filling();
        std::fs::remove_file(&self.path).expect("free the disk");
    }

    fn stop_filling(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop_filling();
    }
}

#[test]
fn an_exit_on_a_full_disk_is_answered_and_recorded_once_space_returns() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.mount_root_tmpfs(64 << 20);
    env.start_berthd();
    // No network: its release at the exit would free space on the full
    // disk, and the record would be written (and the shim gone) at once.
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "victim",
            "--network",
            "none",
            "--",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let exit_file = env.root.join("containers").join(&id).join("exit");
    let filler = Filler::new(&env.root);
    env.ok(&["kill", "-s", "KILL", "victim"]);
    // The exit is known from the shim although no file could be written.
    assert_eq!(env.ok(&["wait", "victim"]), "137\n");
    assert_eq!(env.inspect("victim")["exit_code"], 137);
    assert!(
        !exit_file.exists(),
        "the disk was full, yet the exit record was written: the test did not test"
    );
    let mut state = RawControl::connect(&env, "victim");
    let answer = state.call("state", serde_json::json!({}));
    assert_eq!(answer["result"]["exit"]["exit_code"], 137, "{answer}");
    filler.free();
    env.wait_until(20, "the exit record once space returned", || {
        std::fs::read(&exit_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["exit_code"] == 137)
    });
    // Only now, with the exit on disk, does the shim go.
    env.wait_until(10, "the shim to go", || {
        !env.root
            .join("containers")
            .join(&id)
            .join("shim.pid")
            .exists()
    });
    env.ok(&["rm", "victim"]);
}

#[test]
fn a_client_that_reads_in_small_slow_gulps_is_cut_off_and_gets_no_exit_after() {
    let Some(env) = Env::new() else { return };
    let mib = 32;
    env.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "gulps",
        "--log-max-size",
        "0",
        "--",
        "sh",
        "-c",
        // Paced: only the slow client falls behind, not the good one.
        &crate::util::paced_zeros(mib),
    ]);
    let slow = RawAttach::connect(&env, "gulps", false);
    let good = RawAttach::connect(&env, "gulps", false);
    let reader = std::thread::spawn(move || {
        let mut n = 0usize;
        let end = good.drain(|b| n += b.len());
        (n, end)
    });
    let mut trigger = RawAttach::connect(&env, "gulps", true);
    trigger.send_stdin(b"go\n");
    // The client: 256 KiB, then a pause of 0.3 s, again and again.
    // It never stalls 500 ms at once; served at its pace it would take
    // 40 s and end with the exit frame.
    let mut stream = slow.stream;
    let mut gulp = 0usize;
    let mut error = None;
    let mut after_error = Vec::new();
    loop {
        let f = match runtime_core::frame::read_frame(&mut stream) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => panic!("slow client: {e}"),
        };
        if error.is_some() {
            after_error.push(f.tag);
            continue;
        }
        match f.tag {
            TAG_STDOUT => {
                gulp += f.payload.len();
                if gulp >= 256 << 10 {
                    gulp = 0;
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            TAG_ERROR => error = Some(String::from_utf8_lossy(&f.payload).into_owned()),
            TAG_EXIT => panic!("the slow client was served to the end: never cut off"),
            _ => {}
        }
    }
    let error = error.expect("an error frame");
    assert!(error.contains("cut off"), "{error}");
    assert!(
        after_error.is_empty(),
        "frames after the error: {after_error:?}"
    );
    let (n, (code, err)) = reader.join().expect("reader");
    assert_eq!(code, Some(0), "good client: {err:?}");
    assert_eq!(n, mib << 20, "the good client missed bytes");
    assert_eq!(env.ok(&["wait", "gulps"]), "0\n");
    assert_eq!(env.berth(&["logs", "gulps"]).stdout.len(), mib << 20);
    env.ok(&["rm", "gulps"]);
}

#[test]
fn the_control_socket_bounds_waits_connections_and_silence() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "busy", "--", "sleep", "1000"]);
    // Pending waits per connection are bounded; the extra ones are refused.
    let mut greedy = RawControl::connect(&env, "busy");
    for _ in 0..10 {
        greedy.send("wait", serde_json::json!({}));
    }
    for _ in 0..2 {
        let r = greedy.recv();
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("pending waits"), "{r}");
    }
    // A flood of requests whose replies are never read: the shim drops the
    // connection rather than holding the replies.
    let mut flood = RawControl::connect(&env, "busy");
    flood
        .stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = serde_json::json!({"id": 1, "method": "state", "params": {}}).to_string();
    let mut frame = Vec::new();
    runtime_core::frame::encode_into(&mut frame, 0, req.as_bytes()).unwrap();
    let mut dropped = false;
    for _ in 0..200_000 {
        if flood.stream.write_all(&frame).is_err() {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "200,000 unread replies were kept");
    // Every slot taken by idle clients that said hello: a newcomer (berthd)
    // still gets in, the least recently active is closed for it.
    let idle: Vec<RawControl> = (0..64).map(|_| RawControl::connect(&env, "busy")).collect();
    assert_eq!(env.inspect("busy")["status"], "running");
    env.ok(&["kill", "-s", "CONT", "busy"]);
    drop(idle);
    // A client that never says anything is closed.
    let mut silent = RawControl::connect_silent(&env, "busy");
    silent
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = silent.stream.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0);
    // Attach connections that never handshake cannot lock attach out.
    let id = env.inspect("busy")["id"].as_str().unwrap().to_string();
    let sock = env.root.join("containers").join(id).join("attach.sock");
    let mute: Vec<_> = (0..130)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect attach"))
        .collect();
    let client = RawAttach::connect(&env, "busy", false);
    drop(client);
    drop(mute);
    env.ok(&["rm", "-f", "busy"]);
}

#[test]
fn pause_freezes_output_resume_thaws_it_and_kill_works_while_paused() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done",
    ]);
    let lines = || env.ok(&["logs", "ticker"]).lines().count();
    env.wait_until(10, "some output", || lines() > 2);
    let mut c = RawControl::connect(&env, "ticker");
    let r = c.call("pause", serde_json::json!({}));
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        c.call("state", serde_json::json!({}))["result"]["status"],
        "paused"
    );
    let r = c.call("pause", serde_json::json!({}));
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already paused")),
        "{r}"
    );
    let frozen = lines();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(), frozen, "a paused container wrote output");
    let r = c.call("resume", serde_json::json!({}));
    assert!(r.get("error").is_none(), "{r}");
    env.wait_until(10, "output after resume", || lines() > frozen);
    let r = c.call("resume", serde_json::json!({}));
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not paused")),
        "{r}"
    );
    let r = c.call("pause", serde_json::json!({}));
    assert!(r.get("error").is_none(), "{r}");
    env.ok(&["kill", "-s", "KILL", "ticker"]);
    assert_eq!(env.ok(&["wait", "ticker"]), "137\n");
    env.ok(&["rm", "ticker"]);
}
