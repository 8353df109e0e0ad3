//! `berth pause CONTAINER...` and `berth unpause CONTAINER...`: freeze
//! and thaw every process of the containers.

use std::path::Path;

use clap::Args;

use super::each::each;
use super::{connect, Outcome};
use crate::api::{methods, Target};

#[derive(Args, Debug)]
pub struct PauseArgs {
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn pause(root: &Path, a: PauseArgs) -> Outcome {
    call_each(root, &a.containers, methods::PAUSE).await
}

pub async fn unpause(root: &Path, a: PauseArgs) -> Outcome {
    call_each(root, &a.containers, methods::UNPAUSE).await
}

async fn call_each(root: &Path, containers: &[String], method: &str) -> Outcome {
    each(containers, |id| async move {
        let mut c = connect(root).await?;
        c.call_value(method, &Target { id }).await?;
        Ok(())
    })
    .await
}
