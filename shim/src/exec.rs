//! Starting an exec'd process: `runc exec --detach --pid-file --process`
//! (`--console-socket` for `-t`), reaped by the shim (it is the
//! subreaper). The result is a `Process` like the init, which the event
//! loop puts in its table; exec output goes to that exec's attach clients
//! only, never to the container's log (as Docker). Nothing here knows the
//! event loop.
//!
//! An exec that is not detached holds its output (reads nothing) until its
//! first client attaches or `HOLD_LIMIT` passes, so a client that connects
//! a moment after the process started loses nothing, not even the exit of
//! a process that was quicker than the client.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use runtime_core::layout::ContainerPaths;
use runtime_core::protocol::{valid_exec_id, ErrorCode, ExecParams, RpcError};
use runtime_core::runc::{ExecOpts, Runc};
use runtime_core::sockpath;

use crate::phase::Phase;
use crate::process::{Process, Record, PIPE_SIZE};
use crate::reaper::Reaper;
use crate::runtime::check_status;
use crate::stdio::{self, ShimStdio};

/// Execs running at once in one container.
pub const MAX_RUNNING_EXECS: usize = 256;

fn internal(msg: String) -> RpcError {
    RpcError::new(ErrorCode::Internal, msg)
}

/// Checks what can be checked before anything runs: the ID's form and
/// the command. `taken` says whether an ID is in use.
pub fn check(p: &ExecParams, taken: impl Fn(&str) -> bool) -> Result<Vec<String>, RpcError> {
    let invalid = |m: String| RpcError::new(ErrorCode::InvalidArgument, m);
    if !valid_exec_id(&p.exec_id) {
        return Err(invalid(format!(
            "invalid exec ID {:?}: 1 to 64 of [0-9A-Za-z_-]",
            p.exec_id
        )));
    }
    if taken(&p.exec_id) {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!("exec ID {} is already in use", p.exec_id),
        ));
    }
    let args: Vec<String> = p
        .process
        .get("args")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    if args.is_empty() {
        return Err(invalid("exec: no command given".to_string()));
    }
    Ok(args)
}

/// Runs `runc exec` for a checked request; the running process, its
/// exit record to be written at `paths.exec_exit(ID)`.
pub fn spawn(
    runc: &Runc,
    reaper: &mut Reaper,
    container_id: &str,
    paths: &ContainerPaths,
    p: &ExecParams,
    args: Vec<String>,
) -> Result<Process, RpcError> {
    let opts = ExecOpts {
        process: paths.exec_process_file(&p.exec_id),
        pid_file: paths.exec_pid_file(&p.exec_id),
        console_socket: p.tty.then(|| paths.exec_console_socket(&p.exec_id)),
    };
    let spawned = run(runc, reaper, container_id, p, &opts);
    for f in [Some(&opts.process), Some(&opts.pid_file)]
        .into_iter()
        .chain([opts.console_socket.as_ref()])
        .flatten()
    {
        let _ = fs::remove_file(f);
    }
    let (stdio, pid) = spawned?;
    let pty = if p.tty {
        stdio
            .stdout
            .as_ref()
            .and_then(|r| r.as_fd().try_clone_to_owned().ok())
    } else {
        None
    };
    log::info!("exec {} started: pid {pid}", p.exec_id);
    Ok(Process::new(
        pid,
        args,
        stdio,
        pty,
        Phase::Running,
        !p.detach,
        Record::Exec {
            id: p.exec_id.clone(),
            path: paths.exec_exit(&p.exec_id),
        },
    ))
}

/// Writes the process file, makes the stdio and runs `runc exec`; the
/// shim's ends of the stdio and the process's PID.
fn run(
    runc: &Runc,
    reaper: &mut Reaper,
    container_id: &str,
    p: &ExecParams,
    opts: &ExecOpts,
) -> Result<(ShimStdio, i32), RpcError> {
    let text = serde_json::to_vec(&p.process).map_err(|e| internal(e.to_string()))?;
    fs::write(&opts.process, text)
        .map_err(|e| internal(format!("write {}: {e}", opts.process.display())))?;
    let _ = fs::remove_file(&opts.pid_file);
    let mut console = None;
    let mut cmd = runc.exec(container_id, opts);
    let mut shim_stdio = None;
    if let Some(sock) = &opts.console_socket {
        console = Some(console_listener(sock)?);
    } else if p.detach {
        shim_stdio = Some(ShimStdio {
            input: None,
            stdout: None,
            stderr: None,
        });
    } else {
        let (s, c) =
            stdio::pipes(p.stdin, PIPE_SIZE).map_err(|e| internal(format!("pipes: {e}")))?;
        cmd.stdin(c.stdin).stdout(c.stdout).stderr(c.stderr);
        shim_stdio = Some(s);
    }
    let mark = runc.log_mark();
    let spawned = cmd.spawn();
    // Drop our copies of the child's ends so EOF means the process closed them.
    drop(cmd);
    let child = spawned.map_err(|e| {
        RpcError::new(
            ErrorCode::Runtime,
            format!("{}: {e}", runc.binary.display()),
        )
    })?;
    let status = reaper.wait_for(child.id() as i32);
    check_status(runc, mark, status, "exec").map_err(|m| RpcError::new(ErrorCode::Runtime, m))?;
    // The process runs from here on: read its pid first, so that a
    // failure to take its stdio below can end it instead of leaving it
    // running in no table (the reaper collects it as a stranger).
    let pid_text = fs::read_to_string(&opts.pid_file).map_err(|e| {
        internal(format!(
            "runtime wrote no pid file {}: {e}",
            opts.pid_file.display()
        ))
    })?;
    let pid: i32 = pid_text
        .trim()
        .parse()
        .map_err(|e| internal(format!("bad pid file {pid_text:?}: {e}")))?;
    let shim_stdio = match (shim_stdio, &console) {
        (Some(s), _) => Ok(s),
        (None, Some(l)) => stdio::receive_pty(l, p.stdin).map_err(|e| internal(e.to_string())),
        (None, None) => Err(internal("exec: no stdio".to_string())),
    };
    shim_stdio.map(|s| (s, pid)).inspect_err(|_| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    })
}

fn console_listener(sock: &Path) -> Result<std::os::unix::net::UnixListener, RpcError> {
    let _ = fs::remove_file(sock);
    let (short, _h) = sockpath::short(sock).map_err(|e| internal(e.to_string()))?;
    std::os::unix::net::UnixListener::bind(&short)
        .map_err(|e| internal(format!("bind {}: {e}", sock.display())))
}
