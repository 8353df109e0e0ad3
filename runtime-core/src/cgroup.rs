//! Where a process's cgroup directories are, on cgroup v1 (one hierarchy
//! per controller, as on this project's CI machine), v2 (one unified
//! hierarchy) or a hybrid of both. Found from the process's
//! `/proc/PID/cgroup` resolved against our own `/proc/self/mountinfo`, so
//! it works whatever cgroupsPath the runtime chose and under a nested
//! cgroup namespace. berthd's `stats` and the shim's OOM watcher (`oom`)
//! both start here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Why a cgroup could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup found for pid {pid} (controller {controller})")]
    NoCgroup { pid: i32, controller: &'static str },
    /// `/proc/PID/cgroup` lists the process at the root of the v1 memory
    /// hierarchy: where the kernel shows a process that has exited.
    #[error("pid {pid} is listed in the root memory cgroup: it has exited")]
    Exited { pid: i32 },
}

/// A process's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// The unified hierarchy's directory (it holds every controller).
    V2(PathBuf),
    /// One directory per v1 controller, by controller name ("memory").
    V1(BTreeMap<String, PathBuf>),
}

impl Cgroup {
    /// The directory of a v1 controller; an error names what is missing.
    pub fn v1_dir(&self, pid: i32, controller: &'static str) -> Result<&Path, CgroupError> {
        match self {
            Cgroup::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            Cgroup::V2(_) => None,
        }
        .ok_or(CgroupError::NoCgroup { pid, controller })
    }
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

fn join_under(m: &Mount, path: &str) -> PathBuf {
    let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
    m.point.join(rel.trim_start_matches('/'))
}

/// Resolves `/proc/PID/cgroup` against mountinfo. A v2 hierarchy that
/// holds the memory controller (`is_unified`) wins; otherwise every v1
/// controller that is both listed and mounted.
pub fn locate(
    pid: i32,
    proc_cgroup: &str,
    mountinfo: &str,
    is_unified: impl Fn(&Path) -> bool,
) -> Result<Cgroup, CgroupError> {
    let mounts = mounts(mountinfo);
    let mut v1 = BTreeMap::new();
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2_path = Some(path);
            continue;
        }
        for c in ctrls.split(',') {
            let mount = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|mc| mc == c));
            if let Some(m) = mount {
                v1.insert(c.to_string(), join_under(m, path));
            }
        }
    }
    if let (Some(path), Some(m)) = (v2_path, mounts.iter().find(|m| m.v2)) {
        if is_unified(&m.point) {
            return Ok(Cgroup::V2(join_under(m, path)));
        }
    }
    if v1.is_empty() {
        return Err(CgroupError::NoCgroup {
            pid,
            controller: "memory",
        });
    }
    Ok(Cgroup::V1(v1))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The cgroup of process `pid`, as this process sees the hierarchies.
pub fn of_pid(pid: i32) -> Result<Cgroup, CgroupError> {
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    locate_here(pid, &proc_cgroup)
}

/// [`of_pid`] for a container's process, which runc never leaves in a
/// hierarchy's root. On v1 the kernel lists a process that has exited (a
/// zombie not yet reaped) in the root cgroups, so a container's init that
/// ended before its shim looked would give the host's root memory cgroup:
/// an OOM watch there counts every OOM kill on the host as the
/// container's. That is an error here (v2 keeps a zombie's own path).
pub fn of_container_pid(pid: i32) -> Result<Cgroup, CgroupError> {
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    if memory_v1_at_root(&proc_cgroup) {
        return Err(CgroupError::Exited { pid });
    }
    locate_here(pid, &proc_cgroup)
}

/// Whether `/proc/PID/cgroup` lists a v1 memory hierarchy with the
/// process at its root.
fn memory_v1_at_root(proc_cgroup: &str) -> bool {
    proc_cgroup.lines().any(|line| {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            return false;
        };
        path == "/" && ctrls.split(',').any(|c| c == "memory")
    })
}

/// [`locate`] against this process's own mountinfo.
fn locate_here(pid: i32, proc_cgroup: &str) -> Result<Cgroup, CgroupError> {
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    locate(pid, proc_cgroup, &mountinfo, |p| {
        // A hybrid host mounts a v2 hierarchy beside v1 with few or no
        // controllers (this one's has hugetlb): v2 only if it has memory.
        fs::read_to_string(p.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MOUNTINFO_V1: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/with\\040space rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn locates_v1_and_v2_cgroups_from_proc() {
        let pc = "8:pids:/abc\n7:blkio:/abc\n6:freezer:/abc\n4:memory:/outer/abc\n2:cpu,cpuacct:/abc\n1:name=systemd:/abc\n0::/abc\n";
        let cg = locate(1, pc, MOUNTINFO_V1, |_| false).unwrap();
        let dir = |c| cg.v1_dir(1, c).unwrap().to_path_buf();
        assert_eq!(dir("memory"), PathBuf::from("/sys/fs/cgroup/memory/abc"));
        assert_eq!(
            dir("cpuacct"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/abc")
        );
        assert_eq!(dir("cpu"), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/abc"));
        assert_eq!(dir("pids"), PathBuf::from("/sys/fs/cgroup/pids/abc"));
        assert_eq!(
            dir("freezer"),
            PathBuf::from("/sys/fs/cgroup/with space/abc")
        );
        let e = cg.v1_dir(1, "hugetlb").unwrap_err().to_string();
        assert!(e.contains("hugetlb") && e.contains("pid 1"), "{e}");
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = locate(1, "0::/system.slice/x\n", v2, |_| true).unwrap();
        assert_eq!(cg, Cgroup::V2("/sys/fs/cgroup/system.slice/x".into()));
        assert!(cg.v1_dir(1, "memory").is_err());
        let e = locate(9, "0::/x\n", v2, |_| false).unwrap_err();
        assert!(e.to_string().contains("pid 9"), "{e}");
    }

    #[test]
    fn a_process_listed_in_the_root_memory_cgroup_has_exited() {
        // How v1 lists a zombie: every hierarchy at its root.
        let zombie = "8:pids:/\n4:memory:/\n2:cpu,cpuacct:/\n0::/abc\n";
        assert!(memory_v1_at_root(zombie));
        let running = "8:pids:/abc\n4:memory:/abc\n2:cpu,cpuacct:/abc\n0::/abc\n";
        assert!(!memory_v1_at_root(running));
        // v2 only: a zombie keeps its path, nothing to refuse.
        assert!(!memory_v1_at_root("0::/\n"));
        // A controller merely named like memory is not it.
        assert!(!memory_v1_at_root("3:memory_x:/\n4:memory:/abc\n"));
    }

    #[test]
    fn our_own_cgroup_is_found() {
        let cg = of_pid(std::process::id() as i32).unwrap();
        match cg {
            Cgroup::V2(dir) => assert!(dir.join("cgroup.procs").exists(), "{}", dir.display()),
            Cgroup::V1(_) => {
                let mem = cg.v1_dir(1, "memory").unwrap();
                assert!(mem.join("memory.oom_control").exists(), "{}", mem.display());
            }
        }
    }
}
