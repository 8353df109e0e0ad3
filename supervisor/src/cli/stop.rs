//! `berth stop [-t SECS] [-s SIGNAL] CONTAINER...` (Docker's stop): the
//! signal, up to SECS for the container to exit, then SIGKILL. Stopping a
//! container that is not running succeeds quietly.

use std::path::Path;

use clap::Args;

use super::each::each;
use super::signals::parse_signal;
use super::{connect, Failure, Outcome};
use crate::api::{methods, StopParams};

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the exit before SIGKILL (default: the
    /// container's --stop-timeout, else 10).
    #[arg(short, long)]
    pub time: Option<u64>,
    /// The first signal: a number, a name (TERM) or SIG-name (default: the
    /// container's --stop-signal or its image's, else TERM).
    #[arg(short, long)]
    pub signal: Option<String>,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Stops one container (also the first half of `restart`).
pub async fn stop_one(
    root: &Path,
    id: String,
    signal: Option<i32>,
    time: Option<u64>,
) -> Result<(), Failure> {
    let mut c = connect(root).await?;
    c.call_value(
        methods::STOP,
        &StopParams {
            id,
            signal,
            timeout: time,
        },
    )
    .await?;
    Ok(())
}

pub async fn stop(root: &Path, a: StopArgs) -> Outcome {
    let signal = a
        .signal
        .as_deref()
        .map(parse_signal)
        .transpose()
        .map_err(Failure::new)?;
    each(&a.containers, |name| stop_one(root, name, signal, a.time)).await
}
