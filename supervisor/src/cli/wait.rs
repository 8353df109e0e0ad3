//! `berth wait ID`: block until the container exits, print its exit code.

use std::path::Path;

use clap::Args;

use super::{connect, say, Failure, Outcome};
use crate::api::{methods, Target, WaitResult};

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn wait(root: &Path, a: WaitArgs) -> Outcome {
    let mut c = connect(root).await?;
    let r: WaitResult = c
        .call(
            methods::WAIT,
            &Target {
                id: a.container.clone(),
            },
        )
        .await?;
    match r.exit_code {
        Some(code) => {
            say(&code.to_string())?;
            Ok(0)
        }
        None => Err(Failure::new(format!(
            "{}: exit code unknown: {}",
            a.container,
            r.reason.unwrap_or_else(|| "no exit record".into())
        ))),
    }
}
