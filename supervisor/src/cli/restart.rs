//! `berth restart [-t SECS] CONTAINER...`: stop (SIGTERM, then SIGKILL
//! after SECS), then start again: same ID, config and log.

use std::path::Path;

use clap::Args;

use super::each::each;
use super::stop::stop_one;
use super::{connect, Outcome};
use crate::api::{methods, StartParams};

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Seconds to wait for the exit before SIGKILL (default: the
    /// container's --stop-timeout, else 10).
    #[arg(short, long)]
    time: Option<u64>,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn restart(root: &Path, a: RestartArgs) -> Outcome {
    each(&a.containers, |name| async move {
        stop_one(root, name.clone(), None, a.time).await?;
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
