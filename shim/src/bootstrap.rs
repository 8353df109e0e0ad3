//! Start-up of `serve`: leaving the parent's session and fds behind,
//! binding the sockets, and creating the container (`runc create` or
//! `runc run --detach`) with its stdio. Nothing here knows the event loop.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use mio::net::UnixListener;

use runtime_core::layout::ContainerPaths;
use runtime_core::runc::{CreateOpts, Runc};
use runtime_core::shimcmd::ShimConfig;
use runtime_core::sockpath;

use crate::process::PIPE_SIZE;
use crate::reaper::Reaper;
use crate::runtime::check_status;
use crate::stdio::{self, ShimStdio};

/// New session, cwd /, child subreaper, and no inherited fds but stdio and `keep`.
pub fn detach_from_parent(keep: Option<i32>) {
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    let _ = nix::sys::prctl::set_child_subreaper(true);
    match keep {
        Some(fd) if fd > 3 => {
            close_range(3, fd as u32 - 1);
            close_range(fd as u32 + 1, u32::MAX);
        }
        Some(3) => close_range(4, u32::MAX),
        _ => close_range(3, u32::MAX),
    }
}

/// Closes every fd in `first..=last`: leftovers we own through no Rust
/// object. One syscall, and no directory buffer left to fragment the heap
/// of a process that then idles for the container's whole life.
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; none in the range is
    // owned by a live Rust object at this point of start-up.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::close_range(first, last, 0) };
    if rc != 0 {
        log::warn!(
            "close_range({first}, {last}): {}",
            std::io::Error::last_os_error()
        );
    }
}

pub fn bind(paths: &ContainerPaths, name: &str) -> Result<UnixListener, String> {
    let path = paths.dir().join(name);
    let _ = fs::remove_file(&path);
    let (short, _handle) = sockpath::short(&path).map_err(|e| e.to_string())?;
    let listener =
        UnixListener::bind(&short).map_err(|e| format!("bind {}: {e}", path.display()))?;
    fs::set_permissions(&short, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}

/// Creates pipes or the console socket and runs `runc create`; while the
/// runtime works, runs `meanwhile` (the shim's own preparation: its
/// sockets and the log), so that work is off the start's critical path
/// (the runtime's tens of milliseconds leave a core idle between its
/// steps). Either failing fails the whole: the runtime's container is
/// deleted.
pub fn create_container<M>(
    cfg: &ShimConfig,
    paths: &ContainerPaths,
    runc: &Runc,
    reaper: &mut Reaper,
    meanwhile: impl FnOnce() -> Result<M, String>,
) -> Result<(ShimStdio, Option<OwnedFd>, i32, M), String> {
    let _ = fs::remove_file(paths.init_pid());
    let mut opts = CreateOpts {
        start: cfg.start,
        pid_file: Some(paths.init_pid()),
        console_socket: None,
    };
    let mut console = None;
    let (shim_stdio, child) = if cfg.tty {
        let sock = paths.console_sock();
        let _ = fs::remove_file(&sock);
        let (short, _h) = sockpath::short(&sock).map_err(|e| e.to_string())?;
        let l = std::os::unix::net::UnixListener::bind(&short)
            .map_err(|e| format!("bind {}: {e}", sock.display()))?;
        opts.console_socket = Some(sock.clone());
        console = Some(l);
        (None, None)
    } else {
        let (s, c) = stdio::pipes(cfg.stdin, PIPE_SIZE).map_err(|e| format!("pipes: {e}"))?;
        (Some(s), Some(c))
    };
    let mut cmd = runc.create(&cfg.id, &cfg.bundle, &opts);
    if let Some(c) = child {
        cmd.stdin(c.stdin).stdout(c.stdout).stderr(c.stderr);
    }
    let mark = runc.log_mark();
    let began = Instant::now();
    let spawned = cmd.spawn();
    // Drop our copies of the child's ends so EOF means the container closed them.
    drop(cmd);
    let child = spawned.map_err(|e| format!("runtime {}: {e}", runc.binary.display()))?;
    let prepared = meanwhile();
    let status = reaper.wait_for(child.id() as i32);
    // Logged for operators and for scripts/bench's breakdown of a start.
    log::info!(
        "runtime {} took {:.1} ms",
        if cfg.start { "run --detach" } else { "create" },
        began.elapsed().as_secs_f64() * 1000.0
    );
    let result = (|| {
        check_status(runc, mark, status, "create")?;
        let prepared = prepared?;
        let shim_stdio = match (shim_stdio, &console) {
            (Some(s), _) => s,
            (None, Some(l)) => stdio::receive_pty(l, cfg.stdin).map_err(|e| e.to_string())?,
            (None, None) => return Err("no stdio".to_string()),
        };
        let pid_text = fs::read_to_string(paths.init_pid()).map_err(|e| {
            format!(
                "runtime wrote no pid file {}: {e}",
                paths.init_pid().display()
            )
        })?;
        let pid: i32 = pid_text
            .trim()
            .parse()
            .map_err(|e| format!("bad pid file {:?}: {e}", pid_text))?;
        Ok((shim_stdio, pid, prepared))
    })();
    if console.is_some() {
        let _ = fs::remove_file(paths.console_sock());
    }
    match result {
        Ok((s, pid, prepared)) => {
            let pty = if cfg.tty {
                s.stdout
                    .as_ref()
                    .and_then(|r| r.as_fd().try_clone_to_owned().ok())
            } else {
                None
            };
            Ok((s, pty, pid, prepared))
        }
        Err(msg) => {
            // Leave nothing half-made behind: runc state and any init.
            let mut del = runc.delete(&cfg.id, true);
            if let Ok(c) = del.spawn() {
                reaper.wait_for(c.id() as i32);
            }
            Err(msg)
        }
    }
}
