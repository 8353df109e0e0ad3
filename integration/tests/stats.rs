//! `berth stats`: numbers from the container's cgroup that move with what
//! the container does; a clear error for one that is not running.

use serde_json::Value;

use crate::util::{stderr, stdout, Env};

fn rows(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["stats", "--no-stream", "--json"];
    all.extend_from_slice(args);
    env.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stats json"))
        .collect()
}

#[test]
fn stats_show_memory_a_container_allocates_and_cpu_it_burns() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "idle", "--", "sleep", "1000"]);
    // 64 MiB in a tmpfs is memory charged to the container's cgroup.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "mem",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 && touch /tmp/done && sleep 1000",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    env.wait_until(20, "the 64 MiB to be written", || {
        env.berth(&["logs", "mem"])
            .stderr
            .windows(10)
            .any(|w| w == b"64+0 recor")
    });
    let all = rows(&env, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let get = |name: &str| all.iter().find(|r| r["name"] == name).unwrap().clone();
    let (idle, mem, hog) = (get("idle"), get("mem"), get("hog"));
    let mib = |v: &Value| v["memory_usage"].as_u64().unwrap() >> 20;
    assert!(mib(&mem) >= 64, "mem uses {} MiB: {mem}", mib(&mem));
    assert!(mib(&idle) < 16, "idle uses {} MiB: {idle}", mib(&idle));
    assert!(hog["cpu_percent"].as_f64().unwrap() > 1.0, "{hog}");
    assert!(idle["cpu_percent"].as_f64().unwrap() < hog["cpu_percent"].as_f64().unwrap());
    for r in [&idle, &mem, &hog] {
        assert!(r["pids"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["memory_limit"].as_u64().unwrap() > r["memory_usage"].as_u64().unwrap());
    }
    // The table, for named containers only.
    let table = env.ok(&["stats", "--no-stream", "mem"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].contains("MEM USAGE / LIMIT") && lines[0].contains("BLOCK I/O"));
    assert!(
        lines[1].contains(" mem ") && lines[1].contains("MiB / "),
        "{table}"
    );
    env.ok(&["rm", "-f", "idle", "mem", "hog"]);
}

#[test]
fn stats_of_a_container_that_is_not_running_is_a_clear_error() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "--name", "done", "--", "true"]);
    let out = env.berth(&["stats", "--no-stream", "done"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "berth: container done is not running (exited): it has no resource use to show"
    );
    assert!(stdout(&out).is_empty());
    let out = env.berth(&["stats", "--no-stream", "nosuch"]);
    assert!(
        stderr(&out).contains("no such container: nosuch"),
        "{}",
        stderr(&out)
    );
    env.ok(&["rm", "done"]);
}

/// Without `--no-stream`, one sample per container per refresh (once a
/// second, as `docker stats`), until the named container stops: then the
/// stream ends by itself.
#[test]
fn stats_stream_until_the_container_stops() {
    use std::io::{BufRead, BufReader};
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let mut child = env
        .cmd(&["stats", "--json", "busy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth stats");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a sample").expect("read");
        let row: Value = serde_json::from_str(&line).expect("stats json");
        assert_eq!(row["name"], "busy", "{row}");
        assert!(row["cpu_percent"].as_f64().unwrap() > 1.0, "{row}");
    }
    env.ok(&["kill", "busy"]);
    // Drained to its end: the stream stops once busy has exited.
    for line in lines {
        line.expect("read");
    }
    let status = child.wait().expect("wait berth stats");
    assert!(status.success(), "{status}");
    env.ok(&["rm", "busy"]);
}
