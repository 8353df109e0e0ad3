//! Reading a container's resource use from its cgroup, v1 (one hierarchy
//! per controller, as on this project's CI machine) or v2 (one unified
//! hierarchy). The cgroup is found from the init's `/proc/PID/cgroup`
//! and berthd's own `/proc/self/mountinfo`, so it works whatever
//! cgroupsPath the runtime chose and under a nested cgroup namespace.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    #[error("no cgroup found for pid {pid} (controller {controller})")]
    NoCgroup { pid: i32, controller: &'static str },
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

/// A cgroup mount as mountinfo shows it.
#[derive(Debug, Clone)]
struct Mount {
    /// The hierarchy's path that is mounted (field 4).
    root: String,
    point: PathBuf,
    v2: bool,
    /// v1: the controllers (super options), e.g. ["cpu", "cpuacct"].
    controllers: Vec<String>,
}

fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let fstype = *r.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                root: f.get(3)?.to_string(),
                point: PathBuf::from(unescape(f.get(4)?)),
                v2: fstype == "cgroup2",
                controllers: r
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo escapes spaces and the like as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a process's cgroup directories are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V2(PathBuf),
    V1 {
        memory: PathBuf,
        cpuacct: PathBuf,
        pids: PathBuf,
        blkio: PathBuf,
    },
}

fn join_under(m: &Mount, path: &str) -> PathBuf {
    let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
    m.point.join(rel.trim_start_matches('/'))
}

/// Resolves `/proc/PID/cgroup` against mountinfo. A v2 hierarchy that
/// holds the memory controller (`is_unified`) wins; otherwise v1.
fn locate(
    pid: i32,
    proc_cgroup: &str,
    mountinfo: &str,
    is_unified: impl Fn(&Path) -> bool,
) -> Result<Cgroup, StatsError> {
    let mounts = mounts(mountinfo);
    // controller -> path (v1), and the v2 path ("0::/x").
    let mut v1: HashMap<&str, &str> = HashMap::new();
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2_path = Some(path);
        } else {
            for c in ctrls.split(',') {
                v1.insert(c, path);
            }
        }
    }
    if let (Some(path), Some(m)) = (v2_path, mounts.iter().find(|m| m.v2)) {
        let dir = join_under(m, path);
        if is_unified(&m.point) {
            return Ok(Cgroup::V2(dir));
        }
    }
    let find = |controller: &'static str| -> Result<PathBuf, StatsError> {
        let path = v1
            .get(controller)
            .ok_or(StatsError::NoCgroup { pid, controller })?;
        let m = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
            .ok_or(StatsError::NoCgroup { pid, controller })?;
        Ok(join_under(m, path))
    };
    Ok(Cgroup::V1 {
        memory: find("memory")?,
        cpuacct: find("cpuacct")?,
        pids: find("pids")?,
        blkio: find("blkio")?,
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
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    let cg = locate(pid, &proc_cgroup, &mountinfo, |p| {
        // A hybrid host mounts a v2 hierarchy beside v1 with few or no
        // controllers (this one's has hugetlb): v2 only if it has memory.
        fs::read_to_string(p.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    })?;
    let (counters, version) = match &cg {
        Cgroup::V2(dir) => (read_v2(dir)?, 2),
        Cgroup::V1 {
            memory,
            cpuacct,
            pids,
            blkio,
        } => (read_v1(memory, cpuacct, pids, blkio)?, 1),
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

    const MOUNTINFO_V1: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn locates_v1_and_v2_cgroups_from_proc() {
        let pc = "8:pids:/abc\n7:blkio:/abc\n4:memory:/outer/abc\n2:cpu,cpuacct:/abc\n0::/abc\n";
        let cg = locate(1, pc, MOUNTINFO_V1, |_| false).unwrap();
        assert_eq!(
            cg,
            Cgroup::V1 {
                memory: "/sys/fs/cgroup/memory/abc".into(),
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct/abc".into(),
                pids: "/sys/fs/cgroup/pids/abc".into(),
                blkio: "/sys/fs/cgroup/blkio/abc".into(),
            }
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = locate(1, "0::/system.slice/x\n", v2, |_| true).unwrap();
        assert_eq!(cg, Cgroup::V2("/sys/fs/cgroup/system.slice/x".into()));
        let e = locate(9, "0::/x\n", v2, |_| false).unwrap_err();
        assert!(e.to_string().contains("pid 9"), "{e}");
    }
}
