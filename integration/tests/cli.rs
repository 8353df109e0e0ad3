//! The CLI a Docker user expects (issue 11): usage errors, the signal
//! proxy, kill/rm/wait over several containers, tty checks, berthd being
//! unreachable, and logs/attach while berthd is down.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{stderr, stdout, Env};

/// Asserts a one-line failure with exit 125 that names `message`.
fn refused(out: &std::process::Output, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains(message), "expected {message:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
}

#[test]
fn unknown_flags_are_refused_as_flags_with_125() {
    let Some(env) = Env::new() else { return };
    refused(
        &env.berth(&["run", "-G", "all", "--", "ls"]),
        "unknown flag: -G",
    );
    refused(
        &env.berth(&["run", "--device=/dev/null", "--", "ls"]),
        "unknown flag: --device",
    );
    refused(&env.berth(&["ps", "--bogus"]), "unknown flag: --bogus");
    refused(&env.berth(&["kill", "-x", "a"]), "unknown flag: -x");
    refused(&env.berth(&["logs", "--nope", "a"]), "unknown flag: --nope");
    // Other usage errors exit 125 too.
    refused(&env.berth(&["run", "--name"]), "--name");
    refused(&env.berth(&["kill", "-s", "NOPE", "a"]), "NOPE");
    env.assert_clean();
    // After the command, flags belong to it.
    let out = env.berth(&["run", "--rm", "--", "echo", "-v", "x"]);
    assert_eq!(stdout(&out), "-v x\n", "{}", stderr(&out));
    env.assert_clean();
}

#[test]
fn tty_with_piped_stdin_is_refused() {
    let Some(env) = Env::new() else { return };
    let out = env.berth_input(&["run", "-it", "--", "sh"], b"echo x\n");
    refused(&out, "the input device is not a TTY");
    env.assert_clean();
}

/// Starts an attached `berth run` whose container traps SIGTERM (exit 3)
/// and SIGINT (exit 4); returns once the traps are set.
fn trapping_run(
    env: &Env,
    name: &str,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let script = "trap 'echo got-TERM; exit 3' TERM; trap 'echo got-INT; exit 4' INT; echo ready; while :; do sleep 0.1; done";
    let mut args = vec!["run", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut child = env
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n");
    (child, out)
}

#[test]
fn signal_proxy_forwards_term_and_int_and_exits_with_the_containers_code() {
    let Some(env) = Env::new() else { return };
    for (sig, word, code) in [
        (Signal::SIGTERM, "got-TERM", 3),
        (Signal::SIGINT, "got-INT", 4),
    ] {
        let name = format!("proxy-{code}");
        let (mut child, mut out) = trapping_run(&env, &name, &[]);
        kill(Pid::from_raw(child.id() as i32), sig).expect("signal berth run");
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("rest of output");
        let status = child.wait().expect("wait berth run");
        assert_eq!(rest, format!("{word}\n"));
        assert_eq!(status.code(), Some(code), "{sig}");
        assert_eq!(env.inspect(&name)["exit_code"], code);
        env.ok(&["rm", &name]);
    }
    env.assert_clean();
}

#[test]
fn sig_proxy_false_leaves_the_container_alone() {
    let Some(env) = Env::new() else { return };
    let (mut child, _out) = trapping_run(&env, "noproxy", &["--sig-proxy=false"]);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal berth run");
    let status = child.wait().expect("wait berth run");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    assert_eq!(env.inspect("noproxy")["status"], "running");
    env.ok(&["rm", "-f", "noproxy"]);
    env.assert_clean();
}

#[test]
fn kill_defaults_to_sigkill_takes_real_time_signals_and_several_containers() {
    let Some(env) = Env::new() else { return };
    // TERM is ignored: only the default SIGKILL ends it.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.1; done",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "rt",
        "--",
        "sh",
        "-c",
        "trap 'exit 5' 37; while :; do sleep 0.1; done",
    ]);
    env.ok(&["run", "-d", "--name", "plain", "--", "sleep", "100"]);
    // SIGRTMIN is 34 with glibc: RTMIN+3 is 37.
    // Until the trap is set, the container's init ignores the signal.
    env.wait_until(10, "the trap to take RTMIN+3", || {
        env.inspect("rt")["status"] == "exited" || {
            let _ = env.berth(&["kill", "-s", "RTMIN+3", "rt"]);
            false
        }
    });
    assert_eq!(env.ok(&["wait", "rt"]), "5\n");

    let out = env.berth(&["kill", "stubborn", "ghost", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "stubborn\nplain\n");
    assert!(
        stderr(&out).contains("no such container: ghost"),
        "{}",
        stderr(&out)
    );
    let out = env.berth(&["wait", "stubborn", "ghost", "plain", "rt"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "137\n137\n5\n");
    assert!(stderr(&out).contains("ghost"));

    env.ok(&["run", "-d", "--name", "live", "--", "sleep", "100"]);
    let out = env.berth(&["rm", "-f", "stubborn", "ghost", "plain", "rt", "live"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "stubborn\nplain\nrt\nlive\n");
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    env.assert_clean();
}

#[test]
fn berthd_unreachable_exits_125_and_names_a_permission_problem() {
    let Some(mut env) = Env::new() else { return };
    // A user that may not enter the root (0700) is told so, not "is it running?".
    let bin = tempfile::Builder::new()
        .prefix("berth-bin-")
        .tempdir()
        .expect("dir");
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::copy(env.bin.join("berth"), bin.path().join("berth")).expect("copy berth");
    for verb in [&["ps"][..], &["logs", "x"], &["attach", "x"]] {
        let out = std::process::Command::new(bin.path().join("berth"))
            .arg("--root")
            .arg(&env.root)
            .args(verb)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .expect("berth as nobody");
        refused(&out, "permission denied");
        assert!(!stderr(&out).contains("is it running"), "{}", stderr(&out));
    }
    env.kill_berthd();
    let out = env.berth(&["ps"]);
    refused(&out, "is it running?");
}

#[test]
fn logs_and_attach_by_name_while_berthd_is_killed() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "alone",
        "--",
        "sh",
        "-c",
        "echo one; read x; echo got $x; exit 6",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "done",
        "--",
        "sh",
        "-c",
        "echo bye; exit 2",
    ]);
    assert_eq!(env.ok(&["wait", "done"]), "2\n");
    env.wait_until(10, "the first line logged", || {
        env.ok(&["logs", "alone"]) == "one\n"
    });
    env.kill_berthd();

    assert_eq!(stdout(&env.berth(&["logs", "done"])), "bye\n");
    let attach = env.berth_input(&["attach", "alone"], b"hello\n");
    assert_eq!(stdout(&attach), "got hello\n", "{}", stderr(&attach));
    assert_eq!(attach.status.code(), Some(6));
    let logs = env.berth(&["logs", "alone"]);
    assert_eq!(stdout(&logs), "one\ngot hello\n", "{}", stderr(&logs));
    // An exited one is refused as with berthd up; an unknown name is named.
    let out = env.berth(&["attach", "done"]);
    assert!(
        stderr(&out).contains("done has exited (exit code 2)"),
        "{}",
        stderr(&out)
    );
    let out = env.berth(&["logs", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such container: ghost"));

    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("alone")["exit_code"], 6);
    env.ok(&["rm", "alone", "done"]);
    env.assert_clean();
}
