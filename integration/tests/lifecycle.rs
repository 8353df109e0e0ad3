//! Containers across berthd restarts and stops.

use crate::util::{stdout, Env};

#[test]
fn containers_survive_berthd_sigkill_and_are_adopted() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--",
        "sh",
        "-c",
        "while true; do echo x; sleep 0.05; done",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "ends",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 9",
    ]);
    let pid = env.inspect("keep")["pid"].clone();
    env.kill_berthd();
    std::thread::sleep(std::time::Duration::from_millis(800));
    env.start_berthd();
    env.wait_until(10, "restore", || {
        env.ps_all().iter().all(|c| c["status"] != "restoring")
    });
    let keep = env.inspect("keep");
    assert_eq!(keep["status"], "running");
    assert_eq!(keep["pid"], pid, "same process after restart");
    let ends = env.inspect("ends");
    assert_eq!(ends["status"], "exited");
    assert_eq!(ends["exit_code"], 9);
    env.ok(&["rm", "-f", "keep"]);
}

#[test]
fn graceful_stop_leaves_containers_running() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "stay", "--", "sleep", "100"]);
    let status = env.stop_berthd();
    assert!(status.success(), "berthd exit: {status}");
    assert_eq!(env.runc_containers().len(), 1);
    env.start_berthd();
    env.wait_until(10, "adoption", || {
        env.inspect("stay")["status"] == "running"
    });
    env.ok(&["rm", "-f", "stay"]);
    env.assert_clean();
}

#[test]
fn second_berthd_on_same_root_refuses() {
    let Some(env) = Env::new() else { return };
    let out = std::process::Command::new(env.bin.join("berthd"))
        .arg("--root")
        .arg(&env.root)
        .output()
        .expect("second berthd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another berthd is already running"), "{err}");
    // The first one still answers.
    assert!(stdout(&env.berth(&["ps"])).contains("ID"));
}
