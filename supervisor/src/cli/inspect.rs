//! `berth inspect ID`: the container's state as JSON.

use std::path::Path;

use clap::Args;

use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo, Target};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Container ID, ID prefix or name.
    container: String,
}

pub async fn inspect(root: &Path, a: InspectArgs) -> Outcome {
    let mut c = connect(root).await?;
    let info: ContainerInfo = c
        .call(methods::INSPECT, &Target { id: a.container })
        .await?;
    let text = serde_json::to_string_pretty(&info).map_err(|e| Failure::new(e.to_string()))?;
    say(&text)?;
    Ok(0)
}
