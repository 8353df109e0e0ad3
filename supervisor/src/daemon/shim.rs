//! Starting shims and talking to them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_core::layout::ContainerPaths;
use runtime_core::meta::ContainerMeta;
use runtime_core::shimcmd::ShimConfig;

use runtime_core::protocol::{shim_methods, ErrorCode, RpcError, ShimState, WaitParams};

use super::Daemon;
use crate::rpc::{CallError, RpcClient, Sent};

/// How long one shim may take to answer a connect + hello.
pub const SHIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one shim call (other than `wait`) may take.
pub const SHIM_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the serving shim reports once the container is created.
pub type ShimAddress = runtime_core::protocol::ShimReady;

/// Runs `berth-shim start`; the error is the shim's (often runc's) message.
/// How the shim should bring the container up.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartMode {
    /// Start it at once.
    pub start: bool,
    /// Hold its output for the first attach client.
    pub wait_attach: bool,
}

pub async fn start_shim(
    d: &Daemon,
    meta: &ContainerMeta,
    paths: &ContainerPaths,
    mode: StartMode,
) -> Result<ShimAddress, String> {
    let cfg = ShimConfig {
        id: meta.id.clone(),
        state_dir: paths.dir().to_path_buf(),
        data_dir: (paths.data_dir() != paths.dir()).then(|| paths.data_dir().to_path_buf()),
        bundle: paths.bundle(),
        runtime: meta.runtime.clone().into(),
        runc_root: d.root.runc_root(),
        stdin: meta.stdin,
        tty: meta.tty,
        log: meta.log,
        start: mode.start,
        wait_attach: mode.wait_attach,
        ready_fd: None,
        overlay: meta
            .overlay
            .clone()
            .map(|lower| runtime_core::rootfs::Overlay::of(paths, lower)),
    };
    let mut cmd = tokio::process::Command::new(&d.config.shim);
    cmd.arg("start").args(cfg.to_args());
    let inherited = std::env::var("GLIBC_TUNABLES").ok();
    cmd.env(
        "GLIBC_TUNABLES",
        runtime_core::shimcmd::tunables_env(inherited.as_deref()),
    );
    cmd.stdin(std::process::Stdio::null());
    // `start` exits as soon as it has forked the serving shim; the report
    // comes from the serving shim, which closes the pipe after it: the
    // end of `output()`.
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run shim {}: {e}", d.config.shim.display()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(if msg.is_empty() {
            format!("berth-shim start failed: {}", out.status)
        } else {
            msg
        });
    }
    read_report(&out.stdout, &paths.shim_log())
}

/// The serving shim's one-line report: its address as a JSON line, or
/// `error` and why; nothing at all when it died before it could say. The
/// JSON line is what `berth-shim start` printed in earlier releases, so a
/// shim and a berthd of different releases (an upgrade under way) still
/// understand each other; an older shim reports a failure by its exit
/// status instead (see `start`).
fn read_report(out: &[u8], shim_log: &Path) -> Result<ShimAddress, String> {
    let text = String::from_utf8_lossy(out);
    let report = text.trim();
    if let Some(msg) = report.strip_prefix("error ") {
        return Err(msg.to_string());
    }
    if report.is_empty() {
        return Err(format!(
            "berth-shim exited during start-up without a report; see {}",
            shim_log.display()
        ));
    }
    serde_json::from_str(report)
        .map_err(|e| format!("unreadable answer from berth-shim ({e}): {report:?}"))
}

/// Connects to a shim's control socket with a timeout.
pub async fn connect(paths: &ContainerPaths) -> Result<RpcClient, CallError> {
    let mut c = within_shim_timeout(paths, RpcClient::connect(&paths.shim_sock(), AGENT)).await?;
    // runc start/kill/delete run inside the shim: allow for them.
    c.set_timeout(SHIM_CALL_TIMEOUT);
    Ok(c)
}

/// Connects to a shim's control socket, asks its `state` and sends its
/// `wait` long poll, all with the hello in one write (one wake of the shim
/// instead of three: at start-up berthd adopts every shim at once); the
/// hello and `state` answered within [`SHIM_TIMEOUT`]. The run's OOM kill
/// count is not known before `state` answers, so the `wait` asks to hear
/// of any (past 0): with kills counted already it is answered at once.
/// Its reply is read with [`RpcClient::read_long_reply`].
pub async fn connect_state_wait(
    paths: &ContainerPaths,
) -> Result<(RpcClient, ShimState), CallError> {
    let sock = paths.shim_sock();
    let call = RpcClient::connect_and_call_then(&sock, AGENT, (shim_methods::STATE, &()), WAIT_ANY);
    state_within_shim_timeout(paths, call).await
}

/// [`connect_state_wait`]'s first half, for a blocking thread (berthd's
/// start-up reader): connects to the shim socket `sock` (absolute, or
/// relative to the reader's own working directory) and sends the hello,
/// `state` and `wait`. [`state_wait_sent`] reads the answers.
pub fn send_state_wait(sock: &std::path::Path) -> Result<Sent, CallError> {
    RpcClient::connect_and_send(sock, AGENT, (shim_methods::STATE, &()), WAIT_ANY)
}

/// The `wait` an adoption sends with its `state`: the run's OOM kill
/// count is not known yet, so it asks to hear of any.
const WAIT_ANY: (&str, &WaitParams) = (shim_methods::WAIT, &WaitParams { oom_kills: Some(0) });

/// [`connect_state_wait`] on a connection [`send_state_wait`] made:
/// the same answers within the same time.
pub async fn state_wait_sent(
    paths: &ContainerPaths,
    sent: Sent,
) -> Result<(RpcClient, ShimState), CallError> {
    state_within_shim_timeout(paths, RpcClient::replies_to(sent, shim_methods::STATE)).await
}

/// The hello and `state` answered within [`SHIM_TIMEOUT`]; later calls on
/// the connection get [`SHIM_CALL_TIMEOUT`], as [`connect`]'s do.
async fn state_within_shim_timeout(
    paths: &ContainerPaths,
    answers: impl std::future::Future<Output = Result<(RpcClient, ShimState), CallError>>,
) -> Result<(RpcClient, ShimState), CallError> {
    let (mut c, state) = within_shim_timeout(paths, answers).await?;
    c.set_timeout(SHIM_CALL_TIMEOUT);
    Ok((c, state))
}

/// How berthd introduces itself to a shim.
const AGENT: &str = concat!("berthd ", env!("CARGO_PKG_VERSION"));

/// `connecting`, given [`SHIM_TIMEOUT`] to answer.
async fn within_shim_timeout<T>(
    paths: &ContainerPaths,
    connecting: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(SHIM_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Transport(format!(
                "shim at {} did not answer within {SHIM_TIMEOUT:?}",
                paths.shim_sock().display()
            )))
        })
}

/// Finds the runtime binary: a path as is, a bare name through PATH.
pub fn resolve_runtime(runtime: &Path) -> Result<PathBuf, String> {
    if runtime.components().count() > 1 {
        return if runtime.is_file() {
            Ok(runtime.to_path_buf())
        } else {
            Err(format!("OCI runtime {} does not exist", runtime.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(runtime))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "OCI runtime {:?} not found in PATH: install runc or start berthd with --runtime PATH",
                runtime.display().to_string()
            )
        })
}

/// The live shim PID from shim.pid, if that process is still a berth-shim.
pub fn live_shim_pid(paths: &ContainerPaths) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(paths.shim_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // A zombie is not alive; "pid (comm) Z ..." has the state after the ')'.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let is_shim = cmdline
        .split(|&b| b == 0)
        .next()
        .is_some_and(|arg0| arg0.ends_with(b"berth-shim"));
    (is_shim && !zombie).then_some(pid)
}

/// Forcibly removes a container whose shim is gone: runc delete -f kills
/// any process left and removes runc's state.
pub async fn force_delete_runtime_state(d: &Daemon, meta: &ContainerMeta) {
    let runc = runtime_core::runc::Runc {
        binary: meta.runtime.clone().into(),
        root: d.root.runc_root(),
        log: d.root.container(&meta.id).runc_log(),
    };
    let cmd = runc.delete(&meta.id, true);
    let mut cmd = tokio::process::Command::from(cmd);
    match cmd.status().await {
        Ok(s) if s.success() => {}
        Ok(s) => log::debug!("runc delete -f {}: {s} (probably already gone)", meta.id),
        Err(e) => log::warn!("runc delete -f {}: {e}", meta.id),
    }
}

/// Deletes the container through its shim (runc delete, then the shim's
/// sockets and pid file); with no shim left, makes sure the runtime holds
/// nothing either. A shim that lives but does not answer is an error:
/// nothing is deleted under it. The one way `rm` and a re-run `start`
/// get rid of the old shim.
pub async fn delete(d: &Daemon, meta: &ContainerMeta) -> Result<(), RpcError> {
    let paths = d.root.container(&meta.id);
    let failed = match connect(&paths).await {
        Ok(mut c) => match c
            .call_value(runtime_core::protocol::shim_methods::DELETE, &())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
        Err(e) => e,
    };
    // A shim whose container has exited goes by itself (it removes its
    // pid file first), possibly while we were asking it: then the
    // runtime's delete is ours to do.
    if matches!(failed, CallError::Remote(_)) || live_shim_pid(&paths).is_some() {
        return Err(from_call(&meta.id, failed));
    }
    force_delete_runtime_state(d, meta).await;
    Ok(())
}

/// A shim call's failure as the API's error.
pub fn from_call(id: &str, e: CallError) -> RpcError {
    match e {
        CallError::Remote(r) => r,
        CallError::Transport(t) | CallError::Untrusted(t) => RpcError::new(
            ErrorCode::Internal,
            format!("container {id}: shim unreachable: {t}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_an_address_or_the_reason() {
        let log = Path::new("/r/c/shim.log");
        // What this release's shim writes.
        let ready = runtime_core::protocol::ShimReady {
            pid: 5,
            init_pid: 6,
            control: "/r/c/shim.sock".into(),
            attach: "/r/c/attach.sock".into(),
            state: None,
        };
        let line = format!("{}\n", serde_json::to_string(&ready).unwrap());
        let ok = read_report(line.as_bytes(), log).expect("this release's report");
        assert_eq!((ok.pid, ok.init_pid), (5, 6));
        // What `berth-shim start` of an earlier release printed.
        let old = read_report(b"{\"pid\":7,\"init_pid\":8}\n", log).expect("an older report");
        assert_eq!((old.pid, old.init_pid), (7, 8));
        let err = read_report(b"error runc create failed: no such file\n", log).unwrap_err();
        assert_eq!(err, "runc create failed: no such file");
        let died = read_report(b"", log).unwrap_err();
        assert!(
            died.contains("without a report") && died.contains("/r/c/shim.log"),
            "{died}"
        );
        let garbled = read_report(b"{nope\n", log).unwrap_err();
        assert!(
            garbled.starts_with("unreadable answer from berth-shim"),
            "{garbled}"
        );
    }
}
