//! `berth-shim start`: daemonize the real shim; it reports to berthd.
//!
//! berthd runs this short-lived process. It forks; the child becomes the
//! serving shim (the same code as `berth-shim serve`, without a second
//! exec: one less program load on every container start) and the parent
//! exits at once, so the serving shim is orphaned (it calls setsid
//! itself): it is never a child of berthd past start-up and a killed
//! berthd takes no shim with it. The serving shim reports straight to
//! berthd on the pipe that is this process's stdout: one line, its
//! address and state as JSON (container created, sockets accepting; the
//! line earlier releases' `start` printed) or `error` and the reason, then
//! it closes the pipe. berthd reads until
//! that end of file; nobody else has to wake up between the runtime's
//! exit and berthd's (the parent used to wait for the report and print it
//! itself: one more process scheduled and exiting on every start's
//! critical path).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use nix::unistd::{dup2, fork, ForkResult};

use runtime_core::shimcmd::ShimConfig;

/// Runs `start`: exits 0 once the serving shim is forked (it reports
/// on stdout itself), 1 with the reason on stderr when it cannot be.
pub fn start(config: &ShimConfig) -> ExitCode {
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(c: &ShimConfig) -> Result<(), String> {
    let shim_log = c.paths().shim_log();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&shim_log)
        .map_err(|e| format!("open {}: {e}", shim_log.display()))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    // berthd's pipe, as the serving shim's report fd: a copy of our
    // stdout above the stdio range, close-on-exec (stdout itself becomes
    // /dev/null there).
    let report = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stdout: {e}"))?;
    // SAFETY: `start` is single threaded (nothing has spawned a thread), so
    // the child may run any code; it never returns into our caller.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.map_err(|e| format!("fork berth-shim serve: {e}"))?;
    match forked {
        ForkResult::Child => {
            let redirected = dup2(null.as_raw_fd(), 0)
                .and_then(|_| dup2(null.as_raw_fd(), 1))
                .and_then(|_| dup2(log.as_raw_fd(), 2));
            if let Err(e) = redirected {
                // The report fd is still berthd's pipe: say why there.
                let _ = writeln!(File::from(report), "error berth-shim: redirect stdio: {e}");
                std::process::exit(1);
            }
            drop((null, log));
            let mut config = c.clone();
            config.ready_fd = Some(report.into_raw_fd());
            let code = crate::server::serve(config);
            // Flush nothing of the parent's: leave at once with the code.
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
        }
        ForkResult::Parent { .. } => {
            // Our copy closed: berthd's end of file is the serving shim's.
            drop(report);
            Ok(())
        }
    }
}

/// Makes `ps` show the forked shim as `berth-shim serve ...` rather than
/// `start ...`: the verb in the command line is overwritten in place (the
/// two words have the same length), through /proc/self/mem.
pub fn show_as_serve() -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after "pid (comm)" start at field 3; arg_start is field 48.
    let arg_start: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(48 - 3))
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| invalid("no arg_start in /proc/self/stat"))?;
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let mut args = cmdline.split(|&b| b == 0);
    let argv0_len = args.next().map_or(0, <[u8]>::len) as u64;
    if args.next() != Some(&b"start"[..]) {
        return Err(invalid("argv[1] is not `start`"));
    }
    let mem = OpenOptions::new().write(true).open("/proc/self/mem")?;
    mem.write_all_at(b"serve", arg_start + argv0_len + 1)
}
