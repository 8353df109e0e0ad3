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
    let mut failed = Failures::default();
    for name in containers {
        match one(name.clone()).await {
            Ok(()) => say(name)?,
            Err(f) => failed.add(name, f.message),
        }
    }
    failed.outcome()
}

/// The failures of a verb over several containers, one line each, each
/// naming the container as the user wrote it.
#[derive(Debug, Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn add(&mut self, name: &str, message: String) {
        // Display only: the name is not repeated when berthd's message
        // already carries it.
        self.0.push(if message.contains(name) {
            message
        } else {
            format!("{name}: {message}")
        });
    }

    /// Exit 0 when nothing failed, else 1 with every line.
    pub fn outcome(self) -> Outcome {
        partial(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_its_container_once() {
        let mut f = Failures::default();
        f.add("web", "no such container: web".into());
        f.add("db", "container is running".into());
        let err = f.outcome().unwrap_err();
        assert_eq!(
            err.message,
            "no such container: web\nberth: db: container is running"
        );
        assert_eq!(Failures::default().outcome().unwrap(), 0);
    }
}
