//! `berth kill [-s SIGNAL] CONTAINER...`: signal containers' inits.
//! SIGKILL by default, as `docker kill`; each name is printed when its
//! signal was delivered, failures go to stderr and make the exit code 1.

use std::path::Path;

use clap::Args;

use super::{connect, say, signals::parse_signal, Failure, Outcome};
use crate::api::{methods, KillParams};

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal: a number, a name (TERM, SIGTERM) or RTMIN+N / RTMAX-N.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn kill(root: &Path, a: KillArgs) -> Outcome {
    let signal = parse_signal(&a.signal).map_err(|m| Failure {
        message: m,
        code: 125,
    })?;
    let mut c = connect(root).await?;
    let mut failed = Vec::new();
    for id in a.containers {
        let params = KillParams {
            id: id.clone(),
            signal,
        };
        match c.call_value(methods::KILL, &params).await {
            Ok(_) => say(&id)?,
            Err(e) => failed.push(e.to_string()),
        }
    }
    partial(failed)
}

/// Docker's rule for verbs over several containers: each failure on its
/// own line, the others done, exit 1 if any failed.
pub fn partial(failed: Vec<String>) -> Outcome {
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(Failure::new(failed.join("\nberth: ")))
    }
}
