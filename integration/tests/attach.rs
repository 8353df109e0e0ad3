//! Attach straight through the shim: ptys, many clients, slow clients,
//! byte-exact stdin, garbage on the socket.

// openpty and TIOCSWINSZ are syscalls with no safe wrapper for the size.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{stderr, stdout, Env, RawAttach};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// A terminal for the CLI: we hold the master, the CLI gets the slave.
/// Shared with the exec tests.
pub struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    pub fn new(rows: u16, cols: u16) -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let pty = Pty {
            master: std::fs::File::from(pty.master),
            slave: std::fs::File::from(pty.slave),
            seen: Arc::default(),
        };
        pty.resize(rows, cols);
        let mut reader = pty.master.try_clone().expect("dup master");
        let seen = pty.seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    return;
                }
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        pty
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: TIOCSWINSZ reads one winsize from a valid local.
        unsafe { set_winsize(self.master.as_raw_fd(), &ws) }.expect("TIOCSWINSZ");
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup slave"))
    }

    pub fn spawn(&self, env: &Env, args: &[&str]) -> std::process::Child {
        env.cmd(args)
            .stdin(self.stdio())
            .stdout(self.stdio())
            .stderr(self.stdio())
            .spawn()
            .expect("spawn berth on a pty")
    }

    pub fn type_text(&mut self, text: &[u8]) {
        self.master.write_all(text).expect("type");
    }

    pub fn wait_for(&self, env: &Env, needle: &str) {
        env.wait_until(10, needle, || {
            String::from_utf8_lossy(&self.seen.lock().expect("lock")).contains(needle)
        });
    }

    /// Waits for the CLI to exit; kills it and fails, showing the screen, if it does not.
    pub fn wait_exit(
        &self,
        env: &Env,
        child: &mut std::process::Child,
        what: &str,
    ) -> std::process::ExitStatus {
        for _ in 0..500 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let screen = String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned();
        panic!(
            "{what}: the CLI did not exit; screen: {screen:?}\nberthd log:\n{}",
            env.berthd_log()
        );
    }

    /// Types `question` again every half second until the screen shows
    /// `needle`: for an answer that changes once an asynchronous step
    /// (a resize travelling CLI -> shim -> pty) has landed, without
    /// guessing how long that takes.
    pub fn ask_until(&mut self, env: &Env, question: &[u8], needle: &str) {
        let mut last: Option<std::time::Instant> = None;
        env.wait_until(10, needle, || {
            if String::from_utf8_lossy(&self.seen.lock().expect("lock")).contains(needle) {
                return true;
            }
            if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                self.master.write_all(question).expect("type");
                last = Some(std::time::Instant::now());
            }
            false
        });
    }

    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

#[test]
fn interactive_tty_resize_detach_and_reattach() {
    let Some(env) = Env::new() else { return };
    let mut pty = Pty::new(30, 100);
    let mut cli = pty.spawn(&env, &["run", "-it", "--name", "box", "--", "sh"]);
    pty.type_text(b"echo typed-$((6*7))\r");
    pty.wait_for(&env, "typed-42");
    pty.type_text(b"stty size\r");
    pty.wait_for(&env, "30 100");
    // The terminal changes size: the kernel would send SIGWINCH to the
    // foreground process; we send it to the CLI ourselves.
    pty.resize(40, 120);
    kill(Pid::from_raw(cli.id() as i32), Signal::SIGWINCH).expect("SIGWINCH");
    pty.ask_until(&env, b"stty size\r", "40 120");
    // ctrl-p then a broken-off sequence: the held-back ctrl-p reaches sh
    // unchanged (sh echoes it as ^P), and the session stays.
    pty.type_text(b"\x10x");
    std::thread::sleep(Duration::from_millis(100));
    pty.type_text(b"\x15"); // ctrl-u clears the line
    pty.type_text(b"\x10\x11");
    let status = pty.wait_exit(&env, &mut cli, "detach with ctrl-p ctrl-q");
    assert!(status.success(), "detach exit: {status}");
    assert_eq!(env.inspect("box")["status"], "running");

    let mut pty2 = Pty::new(24, 80);
    let mut again = pty2.spawn(&env, &["attach", "--detach-keys", "ctrl-x,x", "box"]);
    pty2.type_text(b"stty size\r");
    pty2.wait_for(&env, "24 80");
    pty2.clear();
    pty2.type_text(b"\x18x");
    assert!(pty2
        .wait_exit(&env, &mut again, "detach with ctrl-x x")
        .success());
    let mut pty3 = Pty::new(24, 80);
    let mut last = pty3.spawn(&env, &["attach", "box"]);
    pty3.type_text(b"exit 5\r");
    let status = pty3.wait_exit(&env, &mut last, "exit from the shell");
    assert_eq!(status.code(), Some(5));
    assert_eq!(env.inspect("box")["exit_code"], 5);
}

#[test]
fn many_clients_see_the_same_stream() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "count",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo $i; i=$((i+1)); done",
    ]);
    let mut readers = Vec::new();
    for _ in 0..10 {
        let client = RawAttach::connect(&env, "count", false);
        readers.push(std::thread::spawn(move || {
            let mut text = Vec::new();
            let (code, err) = client.drain(|b| text.extend_from_slice(b));
            (text, code, err)
        }));
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    env.ok(&["kill", "-s", "KILL", "count"]);
    let mut last_lines = Vec::new();
    for r in readers {
        let (text, code, err) = r.join().expect("reader");
        assert_eq!(code, Some(137), "client ended with {err:?}");
        let text = String::from_utf8(text).expect("utf8");
        // Drop the first (possibly partial) line: the client joined mid-stream.
        let nums: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| l.parse().expect("number"))
            .collect();
        assert!(nums.len() > 100);
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "gap or duplicate"
        );
        last_lines.push(text.lines().last().map(str::to_string));
    }
    assert!(
        last_lines.windows(2).all(|w| w[0] == w[1]),
        "clients ended differently: {last_lines:?}"
    );
}

#[test]
fn stdin_round_trips_100_mib_through_cat_and_sha256sum() {
    let Some(env) = Env::new() else { return };
    let path = env.dir.path().join("big");
    let mut data = vec![0u8; 100 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("urandom");
    std::fs::write(&path, &data).expect("write big");
    let out = env
        .cmd(&["run", "-i", "--rm", "--", "cat"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("cat");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "copy differs");
    let inside = env
        .cmd(&["run", "-i", "--rm", "--", "sha256sum"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("sha256sum");
    let local = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("local sha256sum");
    let want = stdout(&local)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string();
    assert_eq!(
        stdout(&inside).split_whitespace().next(),
        Some(want.as_str())
    );
}

#[test]
fn stuck_client_is_cut_off_and_blocks_nobody() {
    let Some(env) = Env::new() else { return };
    // Far more than a client's queue (4 MiB), at a pace the good client
    // keeps up with: only the stuck one falls behind.
    let mib = 32;
    env.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "firehose",
        "--log-max-size",
        "0",
        "--",
        "sh",
        "-c",
        &crate::util::paced_zeros(mib),
    ]);
    let stuck = RawAttach::connect(&env, "firehose", false);
    let good = RawAttach::connect(&env, "firehose", false);
    let reader = std::thread::spawn(move || {
        let mut n = 0usize;
        let end = good.drain(|b| n += b.len());
        (n, end)
    });
    let mut trigger = RawAttach::connect(&env, "firehose", true);
    trigger.send_stdin(b"go\n");
    let (n, (code, err)) = reader.join().expect("reader");
    assert_eq!(code, Some(0), "good client: {err:?}");
    assert_eq!(n, mib << 20, "good client missed bytes");
    assert_eq!(env.ok(&["wait", "firehose"]), "0\n");
    let log = env.berth(&["logs", "firehose"]);
    assert_eq!(log.stdout.len(), mib << 20, "log missed bytes");
    // The stuck client finds, after what fit in its queue, a reason and the end.
    let (code, err) = stuck.drain(|_| {});
    assert_eq!(code, None);
    let err = err.expect("an error frame for the stuck client");
    assert!(err.contains("cut off"), "{err}");
}

#[test]
fn garbage_on_the_attach_socket_is_refused_and_the_shim_serves_on() {
    let Some(env) = Env::new() else { return };
    env.ok(&[
        "run",
        "-d",
        "--name",
        "sturdy",
        "--",
        "sh",
        "-c",
        "while true; do echo alive; sleep 0.05; done",
    ]);
    let sock = env.inspect("sturdy")["attach_socket"]
        .as_str()
        .expect("sock")
        .to_string();
    let attempts: [&[u8]; 3] = [
        b"\x17\xff\x00garbage that is not a frame at all \x01\x02\x03\x04",
        &[0, 0x7f, 0xff, 0xff, 0xff], // a frame header announcing 2 GiB
        &[0, 0, 0, 0, 40, b'{', b'"', b'm'], // half a handshake, then close
    ];
    for bytes in attempts {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        s.write_all(bytes).expect("write garbage");
        if bytes.len() == 8 {
            drop(s);
            continue;
        }
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.first() == Some(&runtime_core::attach::TAG_ERROR),
            "no error frame: {answer:?}"
        );
        let text = String::from_utf8_lossy(&answer[5..]).to_string();
        assert!(text.contains("bad attach"), "{text}");
    }
    // Still serving: a proper client gets output.
    let client = RawAttach::connect(&env, "sturdy", false);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let f = runtime_core::frame::read_frame(&mut &client.stream)
        .expect("frame")
        .expect("some frame");
    assert_eq!(f.tag, runtime_core::attach::TAG_STDOUT);
    assert_eq!(env.inspect("sturdy")["status"], "running");
    env.ok(&["rm", "-f", "sturdy"]);
}

#[test]
fn attaching_to_an_exited_container_is_refused_with_the_reason() {
    let Some(env) = Env::new() else { return };
    let run = env.berth(&["run", "--name", "done", "--", "sh", "-c", "exit 4"]);
    assert_eq!(run.status.code(), Some(4));
    let out = env.berth(&["attach", "done"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("done has exited (exit code 4)") && err.contains("berth logs done"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    env.ok(&["rm", "done"]);
    env.assert_clean();
}
