//! Container input: pipes from the client, EOF handling, byte exactness.

use std::io::Read;

use crate::util::{stderr, stdout, Env};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("urandom");
    buf
}

#[test]
fn stdin_pipe_reaches_the_container_and_eof_closes_it() {
    let Some(env) = Env::new() else { return };
    let out = env.berth_input(&["run", "-i", "--", "sh"], b"echo from-stdin; exit 4\n");
    assert_eq!(stdout(&out), "from-stdin\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4));
    let out = env.berth_input(&["run", "-i", "--", "wc", "-l"], b"a\nb\nc\n");
    assert_eq!(stdout(&out).trim(), "3");
}

#[test]
fn stdin_round_trips_binary_data_exactly() {
    let Some(env) = Env::new() else { return };
    let data = random_bytes(8 << 20);
    let out = env.berth_input(&["run", "-i", "--rm", "--", "cat"], &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "bytes differ");
}

#[test]
fn without_i_stdin_is_empty() {
    let Some(env) = Env::new() else { return };
    let out = env.berth_input(&["run", "--", "cat"], b"should not arrive");
    assert_eq!(stdout(&out), "");
    assert!(out.status.success());
}

#[test]
fn closed_stdout_ends_the_client_quietly_and_the_container_runs_on() {
    let Some(env) = Env::new() else { return };
    // `berth run --rm ... | head -c 100`: the reader goes away mid-stream.
    let mut child = env
        .cmd(&[
            "run",
            "--rm",
            "--name",
            "piped",
            "--",
            "sh",
            "-c",
            "while true; do echo y; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run berth");
    let mut first = [0u8; 100];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("first bytes");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "berth run kept going after its stdout was closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_eq!(
        status.code(),
        Some(141),
        "exit like SIGPIPE; stderr {err:?}"
    );
    assert_eq!(err, "", "quiet, as in a pipeline");
    // The container runs on, and --rm still removes it once it exits.
    assert_eq!(env.inspect("piped")["status"], "running");
    env.ok(&["kill", "-s", "KILL", "piped"]);
    env.assert_clean();
}

#[test]
fn a_container_that_never_stops_writing_cannot_starve_its_shim() {
    let Some(env) = Env::new() else { return };
    // `yes` keeps the output pipe readable forever; the shim must still
    // serve its control socket (kill, state) and new attach clients.
    env.ok(&["run", "-d", "--name", "flood", "--", "yes"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut attach = env
        .cmd(&["attach", "--no-stdin", "flood"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth attach");
    // Read on a thread: a starved shim would never answer, and the test
    // must fail rather than hang.
    let mut out = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut some = [0u8; 4096];
        let _ = tx.send(out.read_exact(&mut some).map(|()| some));
    });
    let some = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the shim serves a new attach client while output floods")
        .expect("attached output");
    assert!(some.starts_with(b"y\n"), "{:?}", &some[..16]);
    env.ok(&["kill", "-s", "KILL", "flood"]);
    env.wait_until(10, "the exit", || {
        env.inspect("flood")["status"] == "exited"
    });
    let _ = attach.wait();
    env.ok(&["rm", "flood"]);
    env.assert_clean();
}
