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
