//! Verbs that take several containers (`start`, `stop`, `restart`,
//! `pause`...): each is handled in turn, a failure is reported on its own
//! line and the others still go ahead; the exit code is 1 if any failed,
//! as with Docker.

use std::future::Future;

use super::{say, Failure, Outcome};

/// Runs `one` for every container; prints the name of each that succeeded.
pub async fn each<F, Fut>(containers: &[String], mut one: F) -> Outcome
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut failed = false;
    for name in containers {
        match one(name.clone()).await {
            Ok(()) => say(name)?,
            Err(f) => {
                eprintln!("berth: {name}: {}", f.message);
                failed = true;
            }
        }
    }
    if failed {
        // Each failure has been said on its own line.
        Err(Failure::new(String::new()))
    } else {
        Ok(0)
    }
}
