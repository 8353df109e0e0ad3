//! `berth-shim start`: daemonize the real shim and report its address.
//!
//! berthd runs this short-lived process; it spawns `berth-shim serve` with a
//! readiness pipe, waits for "ok" (container created, sockets accepting) or
//! an error, prints one JSON line and exits. The serving shim is then
//! orphaned to init (it calls setsid itself), so it never is a child of
//! berthd past start-up and a killed berthd takes no shim with it.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, ExitCode, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

use crate::config::ShimConfig;

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
    let shim_log = runtime_core::layout::ContainerPaths::from_dir(&c.state_dir).shim_log();
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&shim_log)
        .map_err(|e| format!("open {}: {e}", shim_log.display()))?;
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Only the serving shim may inherit the write end; we are single threaded.
    fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| format!("fcntl: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .args(&c.raw)
        .arg("--ready-fd")
        .arg(write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn berth-shim serve: {e}"))?;
    drop(write_end);
    let mut report = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut report)
        .map_err(|e| format!("read shim readiness: {e}"))?;
    let report = report.trim();
    if let Some(line) = report.strip_prefix("ok ") {
        // The shim runs on; it reparents to init when we exit.
        return Ok(line.to_string());
    }
    let status = child.wait().map_err(|e| format!("wait for shim: {e}"))?;
    match report.strip_prefix("error ") {
        Some(msg) => Err(msg.to_string()),
        None => Err(format!(
            "berth-shim exited during start-up ({status}); see {}",
            shim_log.display()
        )),
    }
}
