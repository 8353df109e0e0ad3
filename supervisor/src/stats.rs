//! `stats`: one sample of a container's resource use, as berthd reads it
//! from the container's cgroup and `berth stats` shows it (the columns of
//! `docker stats`).

use serde::{Deserialize, Serialize};

/// Counters of one container at one instant. CPU % needs two samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub name: String,
    /// When it was taken, nanoseconds since the Unix epoch.
    pub taken_at_ns: u128,
    /// CPU time used by the container so far, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, without the page cache the kernel can drop at once
    /// (Docker's figure: usage minus inactive file pages).
    pub memory_usage: u64,
    /// The limit, or the host's memory when there is none.
    pub memory_limit: u64,
    pub pids: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    /// 1 or 2.
    pub cgroup_version: u8,
}

/// `stats` result shown to people: one row, with CPU % from the
/// previous sample of the same container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub cpu_percent: f64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub pids: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

impl Row {
    /// The row for `now`, CPU % from `before` (0 without one).
    pub fn new(now: &Sample, before: Option<&Sample>) -> Row {
        let cpu_percent = before
            .filter(|b| now.taken_at_ns > b.taken_at_ns && now.cpu_ns >= b.cpu_ns)
            .map_or(0.0, |b| {
                (now.cpu_ns - b.cpu_ns) as f64 / (now.taken_at_ns - b.taken_at_ns) as f64 * 100.0
            });
        let memory_percent = if now.memory_limit == 0 {
            0.0
        } else {
            now.memory_usage as f64 / now.memory_limit as f64 * 100.0
        };
        Row {
            id: now.id.clone(),
            name: now.name.clone(),
            cpu_percent,
            memory_usage: now.memory_usage,
            memory_limit: now.memory_limit,
            memory_percent,
            pids: now.pids,
            block_read: now.block_read,
            block_write: now.block_write,
            net_rx: now.net_rx,
            net_tx: now.net_tx,
        }
    }
}

/// Binary units for memory (`12.5MiB`), as docker stats shows them.
pub fn binary(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    scaled(n, 1024.0, &UNITS)
}

/// Decimal units for I/O (`1.2MB`), as docker stats shows them.
pub fn decimal(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    scaled(n, 1000.0, &UNITS)
}

fn scaled(n: u64, base: f64, units: &[&str]) -> String {
    let mut v = n as f64;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    if i == 0 {
        format!("{n}{}", units[0])
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units_like_docker() {
        assert_eq!(binary(0), "0B");
        assert_eq!(binary(1536), "1.5KiB");
        assert_eq!(binary(128 << 20), "128MiB");
        assert_eq!(decimal(1_234_000), "1.234MB");
        assert_eq!(decimal(999), "999B");
    }

    #[test]
    fn cpu_percent_from_two_samples() {
        let a = Sample {
            taken_at_ns: 1_000_000_000,
            cpu_ns: 0,
            memory_usage: 50,
            memory_limit: 200,
            ..Sample::default()
        };
        let b = Sample {
            taken_at_ns: 2_000_000_000,
            cpu_ns: 1_500_000_000,
            ..a.clone()
        };
        let r = Row::new(&b, Some(&a));
        assert!((r.cpu_percent - 150.0).abs() < 1e-9);
        assert!((r.memory_percent - 25.0).abs() < 1e-9);
        assert_eq!(Row::new(&b, None).cpu_percent, 0.0);
    }
}
