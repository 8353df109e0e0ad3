//! `berth create [OPTIONS] -- COMMAND`: a container created by the runtime
//! and not started (`berth start` starts it); prints its ID. Takes the
//! options of `berth run`.

use std::path::Path;

use super::run::{start_failure, RunArgs};
use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo};

pub async fn create(root: &Path, a: RunArgs) -> Outcome {
    let params = a.create_params()?;
    let mut c = connect(root)
        .await
        .map_err(|f| Failure { code: 125, ..f })?;
    let info: ContainerInfo = c
        .call(methods::CREATE, &params)
        .await
        .map_err(|e| start_failure(e, a.name()))?;
    say(&info.id)?;
    Ok(0)
}
