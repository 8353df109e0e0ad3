//! `berth exec [-i] [-t] [-d] [-e K=V] [-w DIR] [-u USER] CONTAINER CMD...`:
//! one more process in a running container. berthd has the shim start it;
//! the session then goes straight to the shim's attach socket (as
//! `attach`), so it survives a berthd restart and its exit code with it.
//!
//! Exit codes as `docker exec`: the process's own; 126 when it cannot be
//! executed (or the runtime refused it), 127 when it does not exist;
//! 125 when berth itself failed or the request was bad.

use std::path::Path;

use clap::Args;

use runtime_core::protocol::ErrorCode;

use super::attach::{self, SessionOpts};
use super::attach_cmd::{finish, DEFAULT_DETACH_KEYS};
use super::term::{self, parse_detach_keys};
use super::{connect, Failure, Outcome};
use crate::api::{methods, ExecRequest, ExecResult};
use crate::rpc::CallError;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and forward ours to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a pty.
    #[arg(short, long)]
    tty: bool,
    /// Run it in the background; its exit code shows in `berth inspect`.
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (K=V, or K to pass ours on).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[arg(short, long)]
    workdir: Option<String>,
    /// NAME|UID[:GROUP|GID], looked up in the container's /etc/passwd.
    #[arg(short, long)]
    user: Option<String>,
    /// Key sequence that detaches (with -it), e.g. ctrl-x,x.
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Container ID, ID prefix or name.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn exec(root: &Path, a: ExecArgs) -> Outcome {
    let own = |message: String| Failure { message, code: 125 };
    let keys = parse_detach_keys(&a.detach_keys).map_err(own)?;
    if a.tty && a.interactive && !a.detach {
        term::check_input_is_tty()?;
    }
    let env = a
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            // As Docker: a bare name passes our value on, or nothing.
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect();
    let req = ExecRequest {
        id: a.container,
        command: a.command,
        env,
        workdir: a.workdir,
        user: a.user,
        tty: a.tty,
        stdin: a.interactive && !a.detach,
        detach: a.detach,
    };
    let mut c = connect(root).await.map_err(|f| own(f.message))?;
    let started: ExecResult = c.call(methods::EXEC, &req).await.map_err(exec_failure)?;
    drop(c);
    if a.detach {
        return Ok(0);
    }
    let session = attach::connect_to(
        Path::new(&started.attach_socket),
        req.stdin,
        Some(started.exec_id),
    )
    .await
    .map_err(|f| own(f.message))?;
    finish(session.run(SessionOpts { detach_keys: keys }).await?)
}

/// The exit code for a refused exec, from berthd's typed error code.
fn exec_failure(e: CallError) -> Failure {
    let code = match e.code() {
        Some(ErrorCode::CommandNotFound) => 127,
        Some(ErrorCode::CommandNotExecutable | ErrorCode::Runtime) => 126,
        _ => 125,
    };
    Failure {
        message: e.to_string(),
        code,
    }
}
