//! `berth logs`: following across many fast rotations with several
//! followers and berthd restarts (issue 9 item 1), the end of a follow when
//! the shim dies (item 5), rotation bounds (item 3), and the docker-like
//! flags `--tail`, `--since`, `--until`, `-t`.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{stderr, stdout, Env};

/// A `berth logs` child, killed if the test fails before it ends.
struct Follower(Option<Child>);

impl Follower {
    fn spawn(env: &Env, args: &[&str]) -> Follower {
        let child = env
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth logs");
        Follower(Some(child))
    }

    /// Waits (at most `secs`) for it to end; its stdout and stderr.
    fn finish(mut self, secs: u64) -> (String, String) {
        let mut child = self.0.take().expect("child");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("berth logs did not end within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // (Pipes are drained by wait_with_output even after the exit, but a
        // follower that printed more than a pipe holds cannot exit first.)
        let out = child.wait_with_output().expect("output");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Whether it holds a file under `dir` open (it has started reading),
    /// or has already read everything and ended.
    fn has_open_under(&mut self, dir: &std::path::Path) -> bool {
        let Some(c) = &mut self.0 else { return false };
        if c.try_wait().is_ok_and(|s| s.is_some()) {
            return true;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", c.id())) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
    }

    /// Reads all output to EOF, then waits; for followers that print a lot.
    fn collect(mut self, secs: u64) -> (String, String) {
        let child = self.0.take().expect("child");
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(out) => {
                let out = out.expect("output");
                (
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            Err(_) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                panic!("berth logs did not end within {secs} s");
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Checks that `text` is exactly the lines `from..=to`, in order.
fn assert_numbered(who: &str, text: &str, from: u64, to: u64) {
    let mut expect = from;
    for line in text.lines() {
        let n: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("{who}: unexpected line {line:?}"));
        assert!(
            n >= expect,
            "{who}: line {n} printed twice (expected {expect})"
        );
        assert_eq!(n, expect, "{who}: lines {expect}..{n} missing");
        expect += 1;
    }
    assert_eq!(expect, to + 1, "{who}: ended after line {}", expect - 1);
}

/// Issue 9 item 1: three followers from the start, one that joins late and
/// a plain `berth logs` taken mid-rotation, 64 KiB segments (a few hundred
/// of them), berthd SIGKILLed and restarted meanwhile: every line exactly
/// once, in order.
#[test]
fn logs_follow_every_line_once_across_fast_rotation_and_berthd_restarts() {
    let Some(mut env) = Env::new() else { return };
    let total = 300_000u64;
    env.ok(&[
        "run",
        "-d",
        "--name",
        "numbers",
        "--log-max-size",
        "64k",
        "--log-max-files",
        "400",
        "--",
        "sh",
        "-c",
        "sleep 0.5; seq 1 150000; sleep 0.5; seq 150001 300000",
    ]);
    let dir = PathBuf::from(env.inspect("numbers")["state_dir"].as_str().expect("dir"));
    let followers: Vec<_> = (0..3)
        .map(|_| Follower::spawn(&env, &["logs", "-f", "numbers"]))
        .collect();
    env.wait_until(30, "the log to rotate", || dir.join("log.3").exists());
    // A snapshot taken while the log rotates: a gap-free prefix.
    let snap = env.berth(&["logs", "numbers"]);
    assert!(snap.status.success(), "{}", stderr(&snap));
    let snap = stdout(&snap);
    // The container may be mid-line when the snapshot is taken: its last
    // record is then a partial one, printed as is without a newline (the
    // rest of that line comes later). Only whole lines are checked.
    let whole = &snap[..snap.rfind('\n').map_or(0, |i| i + 1)];
    let last = whole.lines().count() as u64;
    assert_numbered("snapshot", whole, 1, last);
    env.kill_berthd();
    env.start_berthd();
    let mut late = Follower::spawn(&env, &["logs", "-f", "numbers"]);
    // It needs berthd only to resolve the name; once it has a segment
    // open, berthd may go.
    env.wait_until(20, "the late follower to open the log", || {
        late.has_open_under(&dir)
    });
    env.kill_berthd();
    env.start_berthd();
    for (i, f) in followers.into_iter().chain([late]).enumerate() {
        let (out, err) = f.collect(120);
        assert!(err.is_empty(), "follower {i}: {err}");
        assert_numbered(&format!("follower {i}"), &out, 1, total);
    }
    let segments = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().starts_with("log."))
                .unwrap_or(false)
        })
        .count();
    assert!(segments > 50, "only {segments} segments: no fast rotation");
    env.ok(&["rm", "numbers"]);
}

/// Issue 9 item 5: when the shim dies, berthd records `lost` and nobody
/// writes `exit`; `logs -f` must end anyway.
#[test]
fn logs_follow_ends_when_the_shim_dies() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "doomed",
        "--",
        "sh",
        "-c",
        "echo before; exec sleep 600",
    ]);
    let dir = PathBuf::from(env.inspect("doomed")["state_dir"].as_str().expect("dir"));
    let follower = Follower::spawn(&env, &["logs", "-f", "doomed"]);
    env.wait_until(10, "the first line", || {
        std::fs::read_to_string(dir.join("log")).is_ok_and(|l| l.contains("before"))
    });
    kill(Pid::from_raw(shim_pid(&dir)), Signal::SIGKILL).expect("kill shim");
    let (out, _) = follower.finish(30);
    assert_eq!(out, "before\n");
    assert!(dir.join("lost").exists());
    env.ok(&["rm", "-f", "doomed"]);

    // The same while berthd is down: nobody writes `lost` until it is back.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "doomed2",
        "--",
        "sh",
        "-c",
        "echo again; exec sleep 600",
    ]);
    let dir = PathBuf::from(env.inspect("doomed2")["state_dir"].as_str().expect("dir"));
    let mut follower = Follower::spawn(&env, &["logs", "-f", "doomed2"]);
    env.wait_until(10, "the follower to open the log", || {
        follower.has_open_under(&dir)
    });
    env.wait_until(10, "the first line", || {
        std::fs::read_to_string(dir.join("log")).is_ok_and(|l| l.contains("again"))
    });
    env.kill_berthd();
    kill(Pid::from_raw(shim_pid(&dir)), Signal::SIGKILL).expect("kill shim");
    let (out, _) = follower.finish(30);
    assert_eq!(out, "again\n");
    assert!(
        !dir.join("lost").exists(),
        "berthd is down: who wrote lost?"
    );
    env.start_berthd();
    env.wait_restored();
    env.ok(&["rm", "-f", "doomed2"]);
}

fn shim_pid(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid")
}

/// `--tail`, `--since`, `--until`, `-t`, as docker has them.
#[test]
fn logs_tail_since_until_and_timestamps() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "--name",
        "few",
        "--log-max-size",
        "4k",
        "--log-max-files",
        "50",
        "--",
        "sh",
        "-c",
        "seq 1 500; printf unfinished",
    ]);
    assert_eq!(
        env.ok(&["logs", "--tail", "3", "few"]),
        "499\n500\nunfinished"
    );
    assert_eq!(env.ok(&["logs", "-n", "0", "few"]), "");
    assert_eq!(
        env.ok(&["logs", "--tail", "all", "few"]).lines().count(),
        501
    );
    let stamped = env.ok(&["logs", "-t", "--tail", "2", "few"]);
    let lines: Vec<_> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    for (line, want) in lines.iter().zip(["500", "unfinished"]) {
        let (ts, rest) = line.split_once(' ').expect("timestamp");
        assert_eq!(rest, want);
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }
    assert_eq!(
        env.ok(&["logs", "--since", "2099-01-01T00:00:00Z", "few"]),
        ""
    );
    assert_eq!(env.ok(&["logs", "--until", "2000-01-01", "few"]), "");
    assert_eq!(
        env.ok(&["logs", "--since", "1h", "few"]).lines().count(),
        501
    );
    let bad = env.berth(&["logs", "--since", "yesterday", "few"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid time \"yesterday\""),
        "{}",
        stderr(&bad)
    );
    env.ok(&["rm", "few"]);
}

/// Issue 9 item 3 and issue 11: bounded rotation settings, sizes parsed
/// with fractions and units, an overflow refused rather than read as 0.
#[test]
fn log_rotation_settings_are_bounded() {
    let Some(env) = Env::new() else { return };
    for (flag, value, want) in [
        (
            "--log-max-files",
            "4000000000",
            "out of range: keep 1 to 10000 files",
        ),
        ("--log-max-files", "0", "out of range"),
        (
            "--log-max-size",
            "17179869184g",
            "invalid size \"17179869184g\"",
        ),
        ("--log-max-size", "2t", "out of range"),
    ] {
        let out = env.berth(&["run", flag, value, "--", "true"]);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(
            stderr(&out).contains(want),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
    assert!(env.ps_all().is_empty(), "a refused run left a container");
    // 1.5m is 1.5 MiB; a long line is split into 16 KiB records.
    env.ok(&[
        "run",
        "--name",
        "wide",
        "--log-max-size",
        "1.5m",
        "--",
        "sh",
        "-c",
        "head -c 40000 /dev/zero | tr '\\0' x; echo",
    ]);
    let dir = PathBuf::from(env.inspect("wide")["state_dir"].as_str().expect("dir"));
    let raw = std::fs::read_to_string(dir.join("log")).expect("log");
    let sizes: Vec<(char, usize)> = raw
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let tag = parts.nth(2).expect("tag").chars().next().expect("tag");
            (tag, parts.next().unwrap_or("").len())
        })
        .collect();
    assert!(sizes.iter().all(|&(_, n)| n <= 16384), "{sizes:?}");
    assert_eq!(sizes.last().map(|s| s.0), Some('F'));
    assert_eq!(sizes.iter().map(|s| s.1).sum::<usize>(), 40000);
    assert_eq!(stdout(&env.berth(&["logs", "wide"])).len(), 40001);
    env.ok(&["rm", "wide"]);
}
