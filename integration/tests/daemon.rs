//! berthd's own behaviour at the edges: dead shims, exhausted fds, full
//! disks, hostile roots, interrupted creates, bad strings.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{stderr, stdout, Env};

/// `berth wait` with a timeout, so a hang fails the test instead of CI.
fn wait_with_timeout(env: &Env, name: &str, secs: u64) -> std::process::Output {
    let child = env
        .cmd(&["wait", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wait");
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    });
    let out = child.wait_with_output().expect("wait output");
    drop(killer);
    out
}

#[test]
fn wait_returns_for_an_exited_container_whose_shim_died() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "nine", "--", "sh", "-c", "exit 9"]);
    env.wait_until(10, "the exit", || env.inspect("nine")["status"] == "exited");
    let shim_pid: i32 = std::fs::read_to_string(
        std::path::Path::new(env.inspect("nine")["state_dir"].as_str().unwrap()).join("shim.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    kill(Pid::from_raw(shim_pid), Signal::SIGKILL).unwrap();
    env.wait_until(10, "the shim to die", || {
        !std::path::Path::new(&format!("/proc/{shim_pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{shim_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
    });
    let out = wait_with_timeout(&env, "nine", 10);
    assert!(
        out.status.success(),
        "wait failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "9");
    env.ok(&["rm", "nine"]);
    env.assert_clean();
}
