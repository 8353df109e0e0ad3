//! `berth wait CONTAINER...`: block until each container exits and print
//! its exit code, one line each in the order given (as `docker wait`);
//! a container that cannot be waited for is reported on stderr, exit 1.

use std::path::Path;

use clap::Args;

use super::kill::partial;
use super::{connect, say, Outcome};
use crate::api::{methods, Target, WaitResult};

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn wait(root: &Path, a: WaitArgs) -> Outcome {
    let mut c = connect(root).await?;
    let mut failed = Vec::new();
    for id in a.containers {
        let r: Result<WaitResult, _> = c.call(methods::WAIT, &Target { id: id.clone() }).await;
        match r {
            Ok(WaitResult {
                exit_code: Some(code),
                ..
            }) => say(&code.to_string())?,
            Ok(WaitResult { reason, .. }) => failed.push(format!(
                "{id}: exit code unknown: {}",
                reason.unwrap_or_else(|| "no exit record".into())
            )),
            Err(e) => failed.push(e.to_string()),
        }
    }
    partial(failed)
}
