//! Task statistics: runc's own cgroup reading (`runc events --stats`,
//! the same for cgroup v1 and v2) converted to the cgroup v1 `Metrics`
//! message that `ctr task metrics` and the CRI plugin decode.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use serde_json::Value;

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn entry(v: &Value) -> MemoryEntry {
    let mut e = MemoryEntry::new();
    e.limit = u(v, "limit");
    e.usage = u(v, "usage");
    e.max = u(v, "max");
    e.failcnt = u(v, "failcnt");
    e
}

/// Converts runc's `{"type":"stats","data":{...}}` to `Metrics`.
pub fn to_metrics(runc: &Value) -> Metrics {
    let data = &runc["data"];
    let mut m = Metrics::new();

    let mut pids = PidsStat::new();
    pids.current = u(&data["pids"], "current");
    pids.limit = u(&data["pids"], "limit");
    m.pids = Some(pids).into();

    let cpu = &data["cpu"];
    let mut usage = CPUUsage::new();
    usage.total = u(&cpu["usage"], "total");
    usage.kernel = u(&cpu["usage"], "kernel");
    usage.user = u(&cpu["usage"], "user");
    usage.per_cpu = cpu["usage"]["percpu"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut throttle = Throttle::new();
    throttle.periods = u(&cpu["throttling"], "periods");
    throttle.throttled_periods = u(&cpu["throttling"], "throttledPeriods");
    throttle.throttled_time = u(&cpu["throttling"], "throttledTime");
    let mut c = CPUStat::new();
    c.usage = Some(usage).into();
    c.throttling = Some(throttle).into();
    m.cpu = Some(c).into();

    let mem = &data["memory"];
    let raw = &mem["raw"];
    let mut ms = MemoryStat::new();
    ms.cache = u(mem, "cache").max(u(raw, "cache"));
    ms.rss = u(raw, "rss");
    ms.rss_huge = u(raw, "rss_huge");
    ms.mapped_file = u(raw, "mapped_file");
    ms.dirty = u(raw, "dirty");
    ms.writeback = u(raw, "writeback");
    ms.pg_fault = u(raw, "pgfault");
    ms.pg_maj_fault = u(raw, "pgmajfault");
    ms.inactive_anon = u(raw, "inactive_anon");
    ms.active_anon = u(raw, "active_anon");
    ms.inactive_file = u(raw, "inactive_file");
    ms.active_file = u(raw, "active_file");
    ms.unevictable = u(raw, "unevictable");
    ms.hierarchical_memory_limit = u(raw, "hierarchical_memory_limit");
    ms.total_cache = u(raw, "total_cache");
    ms.total_rss = u(raw, "total_rss");
    ms.usage = Some(entry(&mem["usage"])).into();
    ms.swap = Some(entry(&mem["swap"])).into();
    ms.kernel = Some(entry(&mem["kernel"])).into();
    ms.kernel_tcp = Some(entry(&mem["kernelTCP"])).into();
    m.memory = Some(ms).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_runcs_stats() {
        let v: Value = serde_json::from_str(
            r#"{"type":"stats","id":"c","data":{"cpu":{"usage":{"total":5,"percpu":[2,3],"kernel":1,"user":4},"throttling":{}},
               "memory":{"usage":{"limit":100,"usage":42,"max":50,"failcnt":0},"raw":{"rss":7,"cache":9}},
               "pids":{"current":3,"limit":10}}}"#,
        )
        .unwrap();
        let m = to_metrics(&v);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.cpu.usage.per_cpu, vec![2, 3]);
        assert_eq!(m.memory.usage.usage, 42);
        assert_eq!((m.memory.rss, m.memory.cache), (7, 9));
    }
}
