//! Runtime calls made to completion: spawn runc, reap it through the
//! shim's one reaper (never `Child::wait`), and turn a failure into the
//! runtime's own message. Nothing here knows the event loop.

use std::process::Command;

use runtime_core::protocol::{ErrorCode, RpcError};
use runtime_core::runc::Runc;

use crate::reaper::Reaper;

/// Runs one runtime command to completion; a failure carries the
/// runtime's own message.
pub fn call(
    runc: &Runc,
    reaper: &mut Reaper,
    mut cmd: Command,
    op: &'static str,
) -> Result<(), RpcError> {
    let runtime_error = |message: String| RpcError::new(ErrorCode::Runtime, message);
    let mark = runc.log_mark();
    let child = cmd
        .spawn()
        .map_err(|e| runtime_error(format!("{}: {e}", runc.binary.display())))?;
    let status = reaper.wait_for(child.id() as i32);
    check_status(runc, mark, status, op).map_err(runtime_error)
}

/// Turns a runc exit status into Ok or the runtime's own message.
pub fn check_status(
    runc: &Runc,
    mark: u64,
    status: nix::sys::wait::WaitStatus,
    op: &'static str,
) -> Result<(), String> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        other => {
            let fallback = runtime_core::runc::failure_text(&runc.binary, op, other);
            Err(runc.error_since(mark, &fallback))
        }
    }
}
