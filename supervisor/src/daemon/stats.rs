//! Reading a container's resource use from its cgroup, v1 (one hierarchy
//! per controller, as on this project's CI machine) or v2 (one unified
//! hierarchy), found by `runtime_core::cgroup` from the init's PID.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use runtime_core::cgroup::{self, Cgroup, CgroupError};
use runtime_core::protocol::{ErrorCode, RpcError, ShimStatus};

use super::registry::Phase;
use super::Daemon;
use crate::stats::Sample;

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {what:?}")]
    Parse { path: PathBuf, what: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

fn read(path: &Path) -> Result<String, StatsError> {
    fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_u64(path: &Path) -> Result<u64, StatsError> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| StatsError::Parse {
        path: path.to_path_buf(),
        what: s.trim().to_string(),
    })
}

/// `key value` lines (memory.stat, cpu.stat): the value of `key`.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// What the cgroup files say (the parts of a `Sample` they hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    /// None: no limit.
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub block_read: u64,
    pub block_write: u64,
}

/// cgroup v2: memory.current, memory.max, memory.stat, cpu.stat,
/// pids.current, io.stat.
pub fn read_v2(dir: &Path) -> Result<Counters, StatsError> {
    let current = read_u64(&dir.join("memory.current"))?;
    let stat = read(&dir.join("memory.stat"))?;
    let inactive = keyed(&stat, "inactive_file").unwrap_or(0);
    let max = read(&dir.join("memory.max"))?;
    let memory_limit = match max.trim() {
        "max" => None,
        v => Some(v.parse().map_err(|_| StatsError::Parse {
            path: dir.join("memory.max"),
            what: v.to_string(),
        })?),
    };
    let cpu = read(&dir.join("cpu.stat"))?;
    let cpu_ns = keyed(&cpu, "usage_usec").unwrap_or(0) * 1000;
    let (mut block_read, mut block_write) = (0, 0);
    // io.stat: "8:0 rbytes=N wbytes=N rios=N ..."; absent without io.
    if let Ok(io) = read(&dir.join("io.stat")) {
        for field in io.split_whitespace() {
            match field.split_once('=') {
                Some(("rbytes", v)) => block_read += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => block_write += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(Counters {
        cpu_ns,
        memory_usage: current.saturating_sub(inactive),
        memory_limit,
        pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
        block_read,
        block_write,
    })
}

/// cgroup v1: memory.usage_in_bytes, memory.limit_in_bytes, memory.stat,
/// cpuacct.usage, pids.current, blkio.throttle.io_service_bytes.
pub fn read_v1(
    memory: &Path,
    cpuacct: &Path,
    pids: &Path,
    blkio: &Path,
) -> Result<Counters, StatsError> {
    let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
    let stat = read(&memory.join("memory.stat"))?;
    let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
    let limit = read_u64(&memory.join("memory.limit_in_bytes"))?;
    // "No limit" is the largest page-aligned value, near i64::MAX.
    let memory_limit = (limit < (1 << 62)).then_some(limit);
    let (mut block_read, mut block_write) = (0, 0);
    let io_file = ["blkio.throttle.io_service_bytes", "blkio.io_service_bytes"]
        .iter()
        .find_map(|f| read(&blkio.join(f)).ok())
        .unwrap_or_default();
    // "8:0 Read 4096" lines, and a "Total N" line.
    for l in io_file.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, op, v] = f.as_slice() {
            let v = v.parse::<u64>().unwrap_or(0);
            match *op {
                "Read" => block_read += v,
                "Write" => block_write += v,
                _ => {}
            }
        }
    }
    Ok(Counters {
        cpu_ns: read_u64(&cpuacct.join("cpuacct.usage"))?,
        memory_usage: usage.saturating_sub(inactive),
        memory_limit,
        pids: read_u64(&pids.join("pids.current")).unwrap_or(0),
        block_read,
        block_write,
    })
}

/// Bytes received and sent on every interface but lo, in the process's
/// network namespace.
fn net(pid: i32) -> (u64, u64) {
    let Ok(dev) = fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    dev.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Samples the cgroup of process `pid`.
pub fn sample_pid(pid: i32) -> Result<Sample, StatsError> {
    // Not of an exited process: on v1 that is the host's root cgroup.
    let cg = cgroup::of_container_pid(pid)?;
    let (counters, version) = match &cg {
        Cgroup::V2(dir) => (read_v2(dir)?, 2),
        Cgroup::V1(_) => (
            read_v1(
                cg.v1_dir(pid, "memory")?,
                cg.v1_dir(pid, "cpuacct")?,
                cg.v1_dir(pid, "pids")?,
                cg.v1_dir(pid, "blkio")?,
            )?,
            1,
        ),
    };
    let host = host_memory();
    let (net_rx, net_tx) = net(pid);
    Ok(Sample {
        id: String::new(),
        name: String::new(),
        taken_at_ns: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        cpu_ns: counters.cpu_ns,
        memory_usage: counters.memory_usage,
        memory_limit: counters
            .memory_limit
            .map_or(host, |l| if host > 0 { l.min(host) } else { l }),
        pids: counters.pids,
        block_read: counters.block_read,
        block_write: counters.block_write,
        net_rx,
        net_tx,
        cgroup_version: version,
    })
}

/// The `stats` method: a sample of a running container; a clear error
/// for one that is not running.
pub async fn stats(d: &Daemon, id: &str) -> Result<Sample, RpcError> {
    super::reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    let pid = match &entry.phase {
        Phase::Live(s) if s.status == ShimStatus::Running && s.exit.is_none() => s.pid,
        _ => {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!(
                    "container {} is not running ({}): it has no resource use to show",
                    entry.meta.name,
                    entry.info(&d.root).status
                ),
            ))
        }
    };
    let mut s = tokio::task::spawn_blocking(move || sample_pid(pid))
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            RpcError::new(
                ErrorCode::Internal,
                format!("stats of container {}: {e}", entry.meta.name),
            )
        })?;
    s.id = entry.meta.id.clone();
    s.name = entry.meta.name.clone();
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        fs::write(dir.join(name), content).unwrap();
    }

    #[test]
    fn v2_counters_from_fixture_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(p, "memory.current", "52428800\n");
        write(
            p,
            "memory.stat",
            "anon 40000000\nfile 12000000\nactive_file 2000000\ninactive_file 10485760\n",
        );
        write(p, "memory.max", "134217728\n");
        write(
            p,
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        );
        write(p, "pids.current", "7\n");
        write(
            p,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        let c = read_v2(p).unwrap();
        assert_eq!(
            c,
            Counters {
                cpu_ns: 2_500_000_000,
                memory_usage: 52428800 - 10485760,
                memory_limit: Some(134217728),
                pids: 7,
                block_read: 5096,
                block_write: 8192,
            }
        );
        write(p, "memory.max", "max\n");
        fs::remove_file(p.join("io.stat")).unwrap();
        let c = read_v2(p).unwrap();
        assert_eq!((c.memory_limit, c.block_read), (None, 0));
        write(p, "memory.current", "lots\n");
        let e = read_v2(p).unwrap_err().to_string();
        assert!(e.contains("memory.current") && e.contains("lots"), "{e}");
    }

    #[test]
    fn v1_counters_from_fixture_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(p, "memory.usage_in_bytes", "20000000\n");
        write(p, "memory.stat", "cache 100\ntotal_inactive_file 4000000\n");
        write(p, "memory.limit_in_bytes", "9223372036854771712\n");
        write(p, "cpuacct.usage", "123456789\n");
        write(p, "pids.current", "3\n");
        write(
            p,
            "blkio.throttle.io_service_bytes",
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n",
        );
        let c = read_v1(p, p, p, p).unwrap();
        assert_eq!(
            c,
            Counters {
                cpu_ns: 123456789,
                memory_usage: 16000000,
                memory_limit: None,
                pids: 3,
                block_read: 4096,
                block_write: 512,
            }
        );
    }
}
