//! `berth kill [-s SIGNAL] ID`: signal the container's init.

use std::path::Path;

use clap::Args;

use super::{connect, say, signals::parse_signal, Failure, Outcome};
use crate::api::{methods, KillParams};

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal: a number, a name (KILL) or SIG-name (SIGKILL).
    #[arg(short, long, default_value = "TERM")]
    signal: String,
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn kill(root: &Path, a: KillArgs) -> Outcome {
    let signal = parse_signal(&a.signal).map_err(Failure::new)?;
    let mut c = connect(root).await?;
    c.call_value(
        methods::KILL,
        &KillParams {
            id: a.container.clone(),
            signal,
        },
    )
    .await?;
    say(&a.container)?;
    Ok(0)
}
