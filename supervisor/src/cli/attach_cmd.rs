//! `berth attach ID`: join a running container's stdio through its shim.

use std::path::Path;

use clap::Args;

use super::attach::{self, AttachEnd, SessionOpts};
use super::sigproxy::SigProxy;
use super::term::{self, parse_detach_keys};
use super::{Failure, Outcome};
use crate::api::ContainerStatus;

/// Default detach sequence, as in Docker.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not forward our stdin (watch only).
    #[arg(long)]
    no_stdin: bool,
    /// Key sequence that detaches (tty containers), e.g. ctrl-x,x.
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Forward the signals berth receives to the container (no tty).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    sig_proxy: bool,
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn attach(root: &Path, data_root: &Path, a: AttachArgs) -> Outcome {
    let keys = parse_detach_keys(&a.detach_keys).map_err(Failure::new)?;
    // Through berthd, or from the disk while it is down: the session
    // itself goes straight to the shim either way.
    let info = super::offline::inspect_anyhow(root, data_root, &a.container).await?;
    if info.status == ContainerStatus::Exited {
        let how = match (info.exit_code, info.signal) {
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "exit code unknown".to_string(),
        };
        return Err(Failure::new(format!(
            "container {} has exited ({how}): nothing to attach to; its output is in `berth logs {}`",
            info.name, info.name
        )));
    }
    let stdin = !a.no_stdin && info.stdin;
    if info.tty && stdin {
        term::check_input_is_tty()?;
    }
    let mut proxy = (a.sig_proxy && !info.tty).then(SigProxy::install);
    if let Some(p) = proxy.as_mut() {
        let shim = info.paths().shim_sock();
        p.forward_to(info.name.clone(), shim);
    }
    let session = attach::connect(Path::new(&info.attach_socket), stdin).await?;
    finish(session.run(SessionOpts { detach_keys: keys }).await?)
}

/// Turns the end of a session into the CLI's exit code.
pub fn finish(end: AttachEnd) -> Outcome {
    match end {
        AttachEnd::Exited(rec) => Ok(rec.exit_code.clamp(0, 255) as u8),
        AttachEnd::Detached => Ok(0),
        AttachEnd::Lost(msg) => Err(Failure {
            message: msg,
            code: 125,
        }),
        AttachEnd::OutputFailed(e) => Err(output_failed(e)),
    }
}

/// A closed stdout ends the session quietly with SIGPIPE's status (128+13),
/// as a shell pipeline expects; any other write error is reported.
pub fn output_failed(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure {
            message: String::new(),
            code: 141,
        }
    } else {
        Failure {
            message: format!("cannot write to stdout: {e}; the container runs on"),
            code: 125,
        }
    }
}
