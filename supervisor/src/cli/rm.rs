//! `berth rm [-f] CONTAINER...`: remove containers; -f kills running ones
//! first. Each removed name is printed; failures go to stderr, exit 1.

use std::path::Path;

use clap::Args;

use super::each::Failures;
use super::{connect, say, Outcome};
use crate::api::{methods, RemoveParams};

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill the container first if it is running.
    #[arg(short, long)]
    force: bool,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn rm(root: &Path, a: RmArgs) -> Outcome {
    let mut c = connect(root).await?;
    let mut failed = Failures::default();
    for id in a.containers {
        let params = RemoveParams {
            id: id.clone(),
            force: a.force,
        };
        match c.call_value(methods::REMOVE, &params).await {
            Ok(_) => say(&id)?,
            Err(e) => failed.add(&id, e.to_string()),
        }
    }
    failed.outcome()
}
