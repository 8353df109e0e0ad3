//! Restart policies as users write them (`--restart`), Docker's four:
//! `no`, `on-failure[:N]`, `always`, `unless-stopped`. Shared by the CLI
//! (which refuses bad input before asking berthd) and berthd.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When berthd runs a container again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// When it exits non-zero, at most `max_retries` times (0: no limit).
    OnFailure { max_retries: u32 },
    /// Whatever the exit, until a user stops it.
    Always,
    /// Like always, but a user's stop also holds across host reboots.
    UnlessStopped,
}

/// Why a `--restart` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid restart policy {0:?}: use no, on-failure[:N], always or unless-stopped")]
    Unknown(String),
    #[error("invalid restart policy {0:?}: the retry count must be a whole number >= 0")]
    Count(String),
    #[error("invalid restart policy {0:?}: a retry count can only be given to on-failure")]
    CountNotAllowed(String),
}

impl FromStr for RestartPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max_retries = match count {
                    None => 0,
                    Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => {
                        c.parse().map_err(|_| PolicyError::Count(s.to_string()))?
                    }
                    Some(_) => return Err(PolicyError::Count(s.to_string())),
                };
                return Ok(RestartPolicy::OnFailure { max_retries });
            }
            _ => return Err(PolicyError::Unknown(s.to_string())),
        };
        match count {
            None => Ok(policy),
            Some(_) => Err(PolicyError::CountNotAllowed(s.to_string())),
        }
    }
}

/// Checks a `--restart` value; the value to send, or the one-line error.
pub fn check(s: &str) -> Result<String, String> {
    s.parse::<RestartPolicy>()
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

/// One past exit, for `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastExit {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    pub finished_at: String,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `inspect` shows of the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartInfo {
    pub policy: String,
    /// Restarts by the policy since the user last started the container.
    pub count: u32,
    /// The current delay before a restart, ms.
    pub delay_ms: u64,
    pub stopped_by_user: bool,
    /// A restart is waiting for its delay: when it is due.
    #[serde(default)]
    pub restarting_at: Option<String>,
    pub last_exits: Vec<PastExit>,
    /// The last exit was an out-of-memory kill.
    pub oom_killed: bool,
}

/// `update` params: what to change of one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateParams {
    pub id: String,
    /// A new restart policy (as `--restart` takes it).
    #[serde(default)]
    pub restart: Option<String>,
    /// Memory limit, bytes.
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPUs (1.5 = one and a half CPUs' time).
    #[serde(default)]
    pub cpus: Option<f64>,
}

/// Docker's floor for a memory limit.
const MIN_MEMORY: u64 = 6 << 20;

/// Checks `--cpus`: more than 0, at most the host's CPUs.
pub fn check_cpus(cpus: f64) -> Result<(), String> {
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !(cpus.is_finite() && cpus >= 0.01 && cpus <= host as f64) {
        return Err(format!(
            "invalid --cpus {cpus}: the range is 0.01 to {host} (the CPUs of this host)"
        ));
    }
    Ok(())
}

/// Checks `--memory`: at least 6 MiB.
pub fn check_memory(bytes: u64) -> Result<(), String> {
    if bytes < MIN_MEMORY {
        return Err(format!(
            "invalid --memory {bytes}: the minimum memory limit is 6 MiB"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_dockers_four_and_round_trips() {
        for (s, p) in [
            ("no", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
            ("on-failure", RestartPolicy::OnFailure { max_retries: 0 }),
            ("on-failure:5", RestartPolicy::OnFailure { max_retries: 5 }),
        ] {
            assert_eq!(s.parse::<RestartPolicy>().unwrap(), p);
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_policies_naming_them() {
        let e = |s: &str| s.parse::<RestartPolicy>().unwrap_err();
        assert_eq!(e("sometimes"), PolicyError::Unknown("sometimes".into()));
        assert_eq!(
            e("on-failure:-1"),
            PolicyError::Count("on-failure:-1".into())
        );
        assert_eq!(e("on-failure:"), PolicyError::Count("on-failure:".into()));
        assert_eq!(e("on-failure:x"), PolicyError::Count("on-failure:x".into()));
        assert_eq!(
            e("always:3"),
            PolicyError::CountNotAllowed("always:3".into())
        );
        assert_eq!(e(""), PolicyError::Unknown(String::new()));
        assert!(e("sometimes").to_string().contains("\"sometimes\""));
    }
}
