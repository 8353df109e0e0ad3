//! `berth start [-a] CONTAINER...`: start created containers, or run
//! exited ones again (same ID, config and log). `-a` attaches to one
//! container and exits with its exit code, as `berth run` does.

use std::path::Path;

use clap::Args;

use super::attach::{self, SessionOpts};
use super::attach_cmd::{finish, DEFAULT_DETACH_KEYS};
use super::each::each;
use super::term::parse_detach_keys;
use super::{connect, Failure, Outcome};
use crate::api::{methods, ContainerInfo, ContainerStatus, StartParams, Target};

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the container's output (one container only).
    #[arg(short, long)]
    attach: bool,
    /// With -a: forward our stdin (if the container was made with -i).
    #[arg(short, long)]
    interactive: bool,
    /// Key sequence that detaches from a tty session.
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn start(root: &Path, a: StartArgs) -> Outcome {
    if a.attach {
        let [one] = a.containers.as_slice() else {
            return Err(Failure::new("start -a takes exactly one container"));
        };
        return start_attached(root, one, &a).await;
    }
    each(&a.containers, |name| async move {
        let mut c = connect(root).await?;
        c.call_value(
            methods::START,
            &StartParams {
                id: name,
                attach: false,
            },
        )
        .await?;
        Ok(())
    })
    .await
}

async fn start_attached(root: &Path, name: &str, a: &StartArgs) -> Outcome {
    let keys = parse_detach_keys(&a.detach_keys).map_err(Failure::new)?;
    let mut c = connect(root).await?;
    let info: ContainerInfo = c
        .call(methods::INSPECT, &Target { id: name.into() })
        .await?;
    let stdin = a.interactive && info.stdin;
    let params = StartParams {
        id: info.id.clone(),
        attach: true,
    };
    // A created container's shim is waiting (unless a reboot took it:
    // then the start makes a new shim, as for an exited one).
    let session = if info.status == ContainerStatus::Created && info.shim_pid.is_some() {
        // Attached before the start: not a byte is missed.
        let session = attach::connect(Path::new(&info.attach_socket), stdin).await?;
        c.call_value(methods::START, &params).await?;
        session
    } else {
        // A new shim holds the output until we attach (as for `run`).
        let info: ContainerInfo = c.call(methods::START, &params).await?;
        attach::connect(Path::new(&info.attach_socket), stdin).await?
    };
    finish(session.run(SessionOpts { detach_keys: keys }).await?)
}
