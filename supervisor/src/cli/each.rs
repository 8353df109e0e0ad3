//! Verbs that take several containers (`start`, `stop`, `restart`,
//! `pause`...): each is handled in turn, each success is printed, each
//! failure is reported on its own line and the others still go ahead; the
//! exit code is 1 if any failed (Docker's rule, as `kill` and `rm` keep it).

use std::future::Future;

use super::kill::partial;
use super::{say, Failure, Outcome};

/// Runs `one` for every container; prints the name of each that succeeded.
pub async fn each<F, Fut>(containers: &[String], mut one: F) -> Outcome
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut failed = Vec::new();
    for name in containers {
        match one(name.clone()).await {
            Ok(()) => say(name)?,
            // Display only: the name is not repeated when berthd's message
            // already carries it.
            Err(f) if f.message.contains(name.as_str()) => failed.push(f.message),
            Err(f) => failed.push(format!("{name}: {}", f.message)),
        }
    }
    partial(failed)
}
