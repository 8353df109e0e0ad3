//! `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`, `--pids-limit`
//! as the OCI config's resources. runc writes them to cgroup v1 or v2
//! files as the host has them; the values are Docker's.

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, Spec};

use crate::runopts::Limits;

/// The CFS period Docker uses for `--cpus` (100 ms).
const CPU_PERIOD: u64 = 100_000;

/// Whether the host can limit swap: cgroup v1 needs swap accounting
/// (`memory.memsw.*`), v2 the `memory.swap.max` files.
fn swap_limit_supported() -> bool {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    v1.exists() || (v2.exists() && !std::path::Path::new("/sys/fs/cgroup/memory").exists())
}

/// Writes the limits into the spec's `linux.resources`.
pub fn apply(spec: &mut Spec, l: &Limits) {
    if *l == Limits::default() {
        return;
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    if let Some(mem) = l.memory {
        let mut m = serde_json::Map::new();
        m.insert("limit".into(), mem.into());
        // Docker: swap defaults to as much again as the memory limit,
        // where the host can limit swap at all.
        let swap = match l.memory_swap {
            Some(s) => Some(s),
            None if swap_limit_supported() => Some(mem.saturating_mul(2)),
            None => None,
        };
        if let Some(swap) = swap {
            m.insert("swap".into(), swap.into());
        }
        // LinuxMemory has no setters in this oci-spec: build it from JSON.
        let m: Option<LinuxMemory> = serde_json::from_value(serde_json::Value::Object(m)).ok();
        res.set_memory(m);
    }
    if l.cpus.is_some() || l.cpu_shares.is_some() {
        let mut c = LinuxCpu::default();
        if let Some(cpus) = l.cpus {
            c.set_quota(Some((cpus * CPU_PERIOD as f64).round() as i64));
            c.set_period(Some(CPU_PERIOD));
        }
        c.set_shares(l.cpu_shares);
        res.set_cpu(Some(c));
    }
    if let Some(p) = l.pids_limit.filter(|p| *p > 0) {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        res.set_pids(Some(pids));
    }
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_land_in_resources() {
        let mut spec = crate::spec::default_spec();
        apply(
            &mut spec,
            &Limits {
                memory: Some(64 << 20),
                memory_swap: Some(-1),
                cpus: Some(0.5),
                cpu_shares: Some(512),
                pids_limit: Some(50),
            },
        );
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(64 << 20), Some(-1)));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(
            (c.quota(), c.period(), c.shares()),
            (Some(50_000), Some(100_000), Some(512))
        );
        assert_eq!(r.pids().as_ref().unwrap().limit(), 50);
    }
}
