//! `berth-shim start`: daemonize the real shim and report its address.
//!
//! berthd runs this short-lived process. It forks; the child becomes the
//! serving shim (the same code as `berth-shim serve`, without a second
//! exec: one less program load on every container start) and reports over
//! a readiness pipe: "ok" (container created, sockets accepting) or an
//! error. The parent prints one JSON line and exits, so the serving shim is
//! orphaned (it calls setsid itself): it is never a child of berthd past
//! start-up and a killed berthd takes no shim with it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, fork, ForkResult};

use runtime_core::shimcmd::ShimConfig;

/// Runs `start`; prints the address line on success, the reason on failure.
pub fn start(config: &ShimConfig) -> ExitCode {
    match run(config) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(c: &ShimConfig) -> Result<String, String> {
    let shim_log = c.paths().shim_log();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&shim_log)
        .map_err(|e| format!("open {}: {e}", shim_log.display()))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: `start` is single threaded (nothing has spawned a thread), so
    // the child may run any code; it never returns into our caller.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.map_err(|e| format!("fork berth-shim serve: {e}"))?;
    let child = match forked {
        ForkResult::Child => {
            drop(read_end);
            // Cosmetic: if it fails, ps shows `start`.
            let _ = show_as_serve();
            // stdout is berthd's pipe: it must see EOF when `start` exits.
            let redirected = dup2(null.as_raw_fd(), 0)
                .and_then(|_| dup2(null.as_raw_fd(), 1))
                .and_then(|_| dup2(log.as_raw_fd(), 2));
            if let Err(e) = redirected {
                eprintln!("berth-shim: redirect stdio: {e}");
                std::process::exit(1);
            }
            drop((null, log));
            let mut config = c.clone();
            config.ready_fd = Some(write_end.into_raw_fd());
            let code = crate::server::serve(config);
            // Flush nothing of the parent's: leave at once with the code.
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
        }
        ForkResult::Parent { child } => child,
    };
    drop(write_end);
    drop((null, log));
    let mut report = String::new();
    File::from(read_end)
        .read_to_string(&mut report)
        .map_err(|e| format!("read shim readiness: {e}"))?;
    let report = report.trim();
    if let Some(line) = report.strip_prefix("ok ") {
        // The shim runs on; it reparents to init when we exit.
        return Ok(line.to_string());
    }
    let status = waitpid(child, None).map_err(|e| format!("wait for shim: {e}"))?;
    match report.strip_prefix("error ") {
        Some(msg) => Err(msg.to_string()),
        None => Err(format!(
            "berth-shim {} during start-up; see {}",
            runtime_core::runc::status_text(status),
            shim_log.display()
        )),
    }
}

/// Makes `ps` show the forked shim as `berth-shim serve ...` rather than
/// `start ...`: the verb in the command line is overwritten in place (the
/// two words have the same length), through /proc/self/mem.
fn show_as_serve() -> std::io::Result<()> {
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
