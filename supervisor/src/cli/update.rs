//! `berth update [--restart POLICY] [--memory SIZE] [--cpus N] CONTAINER...`:
//! a new restart policy, or new limits for a running container.

use std::path::Path;

use clap::Args;

use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo};
use crate::policy::{self, UpdateParams};

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    /// Memory limit: bytes or with b/k/m/g suffix (at least 6m).
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs' worth of time (e.g. 1.5).
    #[arg(long)]
    cpus: Option<String>,
    /// Containers (ID, ID prefix or name).
    #[arg(required = true)]
    containers: Vec<String>,
}

fn bad(message: String) -> Failure {
    Failure { message, code: 125 }
}

/// "128m" -> 134217728, as docker's --memory takes it.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let err = || format!("invalid --memory {s:?}: use bytes or a number with b, k, m or g");
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(|c: char| "kmg".contains(c)))
        .unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('b') => (&lower[..lower.len() - 1], 1),
        _ => (lower, 1),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    if !n.is_finite() || n < 0.0 || num.starts_with('+') {
        return Err(err());
    }
    let bytes = n * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|c| c.is_finite())
        .ok_or_else(|| format!("invalid --cpus {s:?}: use a number such as 0.5 or 2"))
}

pub async fn update(root: &Path, a: UpdateArgs) -> Outcome {
    // Everything is checked before berthd is asked to change anything.
    let restart = a
        .restart
        .as_deref()
        .map(policy::check)
        .transpose()
        .map_err(bad)?;
    let memory = a
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(bad)?;
    if let Some(m) = memory {
        policy::check_memory(m).map_err(bad)?;
    }
    let cpus = a.cpus.as_deref().map(parse_cpus).transpose().map_err(bad)?;
    if let Some(c) = cpus {
        policy::check_cpus(c).map_err(bad)?;
    }
    if restart.is_none() && memory.is_none() && cpus.is_none() {
        return Err(bad(
            "nothing to update: give --restart, --memory or --cpus".into()
        ));
    }
    let mut c = connect(root).await?;
    let mut failed = false;
    for name in &a.containers {
        let p = UpdateParams {
            id: name.clone(),
            restart: restart.clone(),
            memory,
            cpus,
        };
        match c.call::<_, ContainerInfo>(methods::UPDATE, &p).await {
            Ok(_) => say(name)?,
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn memory_sizes_like_docker() {
        assert_eq!(parse_memory("128m").unwrap(), 128 << 20);
        assert_eq!(parse_memory("128MB").unwrap(), 128 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5k").unwrap(), 1536);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert_eq!(parse_memory("10b").unwrap(), 10);
        for bad in ["", "lots", "-1m", "12x", "m"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }
}
