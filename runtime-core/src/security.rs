//! Docker's security defaults, not `runc spec`'s: its capability set, the
//! default seccomp profile, its masked and read-only /proc paths,
//! no-new-privileges only when asked; and `--privileged`, `--cap-add`,
//! `--cap-drop`, `--security-opt`.
//!
//! The seccomp profile is the one Podman and Docker use, as Debian's
//! golang-github-containers-common ships it (/usr/share/containers/
//! seccomp.json), embedded so a host without that package gets the same
//! filter. It is in the containers/Docker format (rules that apply only
//! with or without certain capabilities, or on certain architectures), so
//! it is turned into an OCI filter for each container's final capability
//! set, as Docker does.
//!
//! One change from Debian's file: `setns` is not in its general allow
//! list. That file also lists it among the calls allowed only with
//! CAP_SYS_ADMIN and refused (EPERM) without, as Docker's own profile
//! does; with both rules in the filter the first one, the allow, won, so
//! a container without CAP_SYS_ADMIN could call `setns`, where Docker's
//! cannot. (containers/common allows it for everyone so that `podman
//! exec` works in nested rootless Podman; berth follows Docker here.
//! `unshare` stays allowed, as that file has it.)

use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, Spec};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::runopts::{RunOptions, Seccomp};

/// Errors of the security options.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("unknown capability {0:?} (e.g. NET_ADMIN, CAP_SYS_TIME or ALL)")]
    UnknownCap(String),
    #[error("seccomp profile: {0}")]
    Profile(String),
}

/// The profile berth applies by default.
const DEFAULT_PROFILE: &str = include_str!("seccomp-default.json");

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by number (capability.h); `ALL` is those of them
/// berthd holds itself.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's masked paths (moby `oci/defaults.go`).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability berthd itself may hand on: those in its own bounding
/// set (a root in a restricted environment may lack some, and asking
/// runc for one it cannot grant fails the start).
fn grantable_caps() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` all name one capability.
fn normalize_cap(c: &str) -> Result<String, SecurityError> {
    let upper = c.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(SecurityError::UnknownCap(c.to_string()))
    }
}

/// The capability set after `--cap-add`/`--cap-drop` (Docker's order:
/// drop ALL first, then adds, then single drops), or every capability for
/// `--privileged`.
pub fn capability_set(o: &RunOptions) -> Result<Vec<String>, SecurityError> {
    let adds = o
        .cap_add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = o
        .cap_drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<Vec<_>, _>>()?;
    if o.privileged || adds.iter().any(|c| c == "ALL") {
        let all: Vec<String> = grantable_caps().iter().map(|c| c.to_string()).collect();
        if o.privileged {
            return Ok(all);
        }
        return Ok(all.into_iter().filter(|c| !drops.contains(c)).collect());
    }
    let mut caps: Vec<String> = if drops.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    for c in adds {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps.retain(|c| !drops.contains(c));
    Ok(caps)
}

/// Applies capabilities, seccomp, masked/read-only paths and
/// no-new-privileges to the spec. `root_user` says whether the process
/// runs as uid 0: another user starts with no effective capabilities, as
/// under Docker (it can still gain them through a setuid or file-capable
/// binary, within the bounding set).
pub fn apply(spec: &mut Spec, o: &RunOptions, root_user: bool) -> Result<(), SecurityError> {
    let caps = capability_set(o)?;
    let effective = if root_user { caps.clone() } else { Vec::new() };
    let set: LinuxCapabilities = serde_json::from_value(json!({
        "bounding": caps,
        "effective": effective,
        "permitted": effective,
        "inheritable": [],
        "ambient": [],
    }))
    .map_err(|e| SecurityError::Profile(format!("capabilities: {e}")))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_capabilities(Some(set));
    process.set_no_new_privileges(Some(o.no_new_privileges));
    spec.set_process(Some(process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    if o.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
    } else {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
        linux.set_seccomp(match &o.seccomp {
            Seccomp::Unconfined => None,
            Seccomp::Default => Some(convert_profile(DEFAULT_PROFILE, &caps)?),
            Seccomp::Profile(p) => Some(convert_profile(p, &caps)?),
        });
    }
    spec.set_linux(Some(linux));
    if o.privileged {
        // As Docker: /sys writable, every device allowed in the cgroup.
        if let Some(mounts) = spec.mounts().clone() {
            let mounts = mounts
                .into_iter()
                .map(|mut m| {
                    if m.destination() == std::path::Path::new("/sys") {
                        let opts: Vec<String> = m
                            .options()
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|o| o != "ro")
                            .chain(std::iter::once("rw".to_string()))
                            .collect();
                        m.set_options(Some(opts));
                    }
                    m
                })
                .collect();
            spec.set_mounts(Some(mounts));
        }
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut res = linux.resources().clone().unwrap_or_default();
        let allow_all = serde_json::from_value(json!([{"allow": true, "access": "rwm"}]))
            .map_err(|e| SecurityError::Profile(format!("devices: {e}")))?;
        res.set_devices(Some(allow_all));
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
    }
    Ok(())
}

/// A profile in the containers/Docker format.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    /// Docker's older form: a flat list of architectures.
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's older form: one name.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// The host's architecture as the profile names it (`uname -m` style,
/// which is how `includes.arches` lists them) and as libseccomp does.
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "x86" => ("x86", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

/// Turns a containers/Docker profile into the OCI filter for this
/// capability set and this machine's architecture.
pub fn convert_profile(profile: &str, caps: &[String]) -> Result<LinuxSeccomp, SecurityError> {
    let p: Profile =
        serde_json::from_str(profile).map_err(|e| SecurityError::Profile(e.to_string()))?;
    let (arch_short, arch_scmp) = native_arch();
    let arch_names = [arch_short, std::env::consts::ARCH];
    let architectures: Vec<String> = if !p.arch_map.is_empty() {
        p.arch_map
            .iter()
            .filter(|a| a.architecture == arch_scmp)
            .flat_map(|a| {
                std::iter::once(a.architecture.clone()).chain(a.sub_architectures.clone())
            })
            .collect()
    } else {
        p.architectures.clone()
    };
    let mut syscalls = Vec::new();
    for r in p.syscalls {
        let has = |c: &String| caps.contains(c);
        if !r.includes.caps.iter().all(has) {
            continue;
        }
        if !r.includes.arches.is_empty()
            && !r
                .includes
                .arches
                .iter()
                .any(|a| arch_names.contains(&a.as_str()))
        {
            continue;
        }
        if !r.excludes.caps.is_empty() && r.excludes.caps.iter().any(has) {
            continue;
        }
        if r.excludes
            .arches
            .iter()
            .any(|a| arch_names.contains(&a.as_str()))
        {
            continue;
        }
        let names: Vec<String> = r.names.into_iter().chain(r.name).collect();
        if names.is_empty() {
            continue;
        }
        let mut rule = json!({"names": names, "action": r.action});
        if let Some(e) = r.errno_ret {
            rule["errnoRet"] = json!(e);
        }
        if let Some(args) = r
            .args
            .filter(|a| a.as_array().is_some_and(|v| !v.is_empty()))
        {
            rule["args"] = args;
        }
        syscalls.push(rule);
    }
    let mut out = json!({
        "defaultAction": p.default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    serde_json::from_value(out).map_err(|e| SecurityError::Profile(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .clone()
            .unwrap_or_default()
            .iter()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_caps_are_dockers() {
        let caps = capability_set(&RunOptions::default()).unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn add_and_drop() {
        let o = RunOptions {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["net_bind_service".into()],
            ..Default::default()
        };
        assert_eq!(capability_set(&o).unwrap(), vec!["CAP_NET_BIND_SERVICE"]);
        let o = RunOptions {
            cap_add: vec!["NOPE".into()],
            ..Default::default()
        };
        assert!(capability_set(&o).unwrap_err().to_string().contains("NOPE"));
    }

    #[test]
    fn profile_follows_capabilities() {
        let bpf_actions = |s: &LinuxSeccomp| -> Vec<String> {
            s.syscalls()
                .clone()
                .unwrap_or_default()
                .iter()
                .filter(|r| r.names().contains(&"bpf".to_string()))
                .map(|r| format!("{:?}", r.action()))
                .collect()
        };
        let default: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let s = convert_profile(DEFAULT_PROFILE, &default).unwrap();
        assert!(names(&s).contains(&"read".to_string()));
        // bpf is allowed only with CAP_SYS_ADMIN.
        assert_eq!(bpf_actions(&s), vec!["ScmpActErrno"]);
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let s = convert_profile(DEFAULT_PROFILE, &admin).unwrap();
        assert_eq!(bpf_actions(&s), vec!["ScmpActAllow"]);
        assert!(!s.architectures().clone().unwrap_or_default().is_empty());
    }

    /// No call is both allowed and refused by rules without arguments in
    /// one container's filter (the first rule would win, whatever the
    /// profile meant): with Docker's default capabilities, with
    /// CAP_SYS_ADMIN added, and with none. `setns` was, before it left the
    /// general allow list; it is allowed only with CAP_SYS_ADMIN, as in
    /// Docker's profile.
    #[test]
    fn no_call_is_both_allowed_and_refused() {
        let default: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        for caps in [default, admin, Vec::new()] {
            let s = convert_profile(DEFAULT_PROFILE, &caps).unwrap();
            let rules = s.syscalls().clone().unwrap_or_default();
            let plain = |allow: bool| -> std::collections::BTreeSet<String> {
                rules
                    .iter()
                    .filter(|r| r.args().as_ref().is_none_or(|a| a.is_empty()))
                    .filter(|r| (format!("{:?}", r.action()) == "ScmpActAllow") == allow)
                    .flat_map(|r| r.names().clone())
                    .collect()
            };
            let both: Vec<_> = plain(true).intersection(&plain(false)).cloned().collect();
            assert!(both.is_empty(), "{caps:?}: {both:?}");
            let setns: Vec<String> = rules
                .iter()
                .filter(|r| r.names().contains(&"setns".to_string()))
                .map(|r| format!("{:?}", r.action()))
                .collect();
            let want = if caps.iter().any(|c| c == "CAP_SYS_ADMIN") {
                "ScmpActAllow"
            } else {
                "ScmpActErrno"
            };
            assert_eq!(setns, vec![want], "{caps:?}");
        }
    }

    #[test]
    fn spec_gets_docker_defaults() {
        let mut spec = crate::spec::default_spec();
        apply(&mut spec, &RunOptions::default(), true).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(false));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        let o = RunOptions {
            privileged: true,
            ..Default::default()
        };
        apply(&mut spec, &o, true).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    }
}
