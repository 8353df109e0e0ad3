//! OCI runtime config: the default spec berth generates, loading a user's
//! bundle, and applying what the user asked for on the command line.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::{LinuxNamespaceType, Root, Spec};

use crate::{Error, Result};

/// What the user asked for that ends up in the container's process.
#[derive(Debug, Clone, Default)]
pub struct ProcessOpts {
    /// Replaces the spec's args when not empty.
    pub args: Vec<String>,
    /// `K=V` entries; a key given here replaces the spec's value.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
}

/// The spec berth uses when no bundle is given: oci-spec's default, which
/// matches `runc spec` (namespaces, masked paths, default capabilities),
/// with a cgroup namespace of its own only on a unified (cgroup v2) host,
/// as `runc spec` and Docker's default `--cgroupns` do.
pub fn default_spec() -> Spec {
    spec_for_host(host_is_unified())
}

/// [`default_spec`] for a host whose cgroups are unified (v2) or not.
///
/// On a v1 (or hybrid) host a cgroup namespace makes runc mount every v1
/// hierarchy afresh inside each container instead of bind-mounting the
/// container's own directories, and the kernel walks every cgroup on the
/// host for each such mount (`cgroup_lock_and_drain_offline`): ~5 ms per
/// start at 3,500 cgroups, growing with the number of containers.
fn spec_for_host(unified: bool) -> Spec {
    let mut spec = Spec::default();
    if !unified {
        if let Some(linux) = spec.linux_mut() {
            if let Some(nss) = linux.namespaces_mut() {
                nss.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
            }
        }
    }
    spec
}

/// Whether /sys/fs/cgroup is a cgroup2 mount (a unified host). Asked once
/// per process: the host's cgroup layout does not change under berthd.
fn host_is_unified() -> bool {
    static UNIFIED: OnceLock<bool> = OnceLock::new();
    *UNIFIED.get_or_init(|| {
        nix::sys::statfs::statfs("/sys/fs/cgroup")
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    })
}

/// Loads `<bundle>/config.json`, naming the file and position of any error.
pub fn load_bundle_config(bundle: &Path) -> Result<Spec> {
    let path = crate::layout::bundle_config(bundle);
    let data = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&data).map_err(|e| Error::Config {
        path,
        message: format!("does not parse as an OCI runtime config: {e}"),
    })
}

/// Checks that a rootfs directory exists and is a directory.
pub fn check_rootfs(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Config {
            path: dir.to_owned(),
            message: "rootfs is not a directory".into(),
        }),
        Err(e) => Err(Error::io("rootfs", dir, e)),
    }
}

/// The host path of a spec's root, resolved against its bundle directory.
pub fn root_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| Error::Config {
        path: crate::layout::bundle_config(bundle),
        message: "has no root".into(),
    })?;
    let p = root.path();
    Ok(if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    })
}

/// Points the spec's root at `path`.
pub fn set_root(spec: &mut Spec, path: &Path, readonly: bool) {
    let mut root = Root::default();
    root.set_path(path.to_path_buf());
    root.set_readonly(Some(readonly));
    spec.set_root(Some(root));
}

/// Applies the user's process options to the spec.
pub fn apply(spec: &mut Spec, opts: &ProcessOpts) -> Result<()> {
    let mut process = spec.process().clone().unwrap_or_default();
    if !opts.args.is_empty() {
        process.set_args(Some(opts.args.clone()));
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Other(
            "no command given and the config has no process args".into(),
        ));
    }
    let mut env = process.env().clone().unwrap_or_default();
    for kv in &opts.env {
        let Some((key, _)) = kv.split_once('=') else {
            return Err(Error::Other(format!(
                "environment entry {kv:?} is not KEY=VALUE"
            )));
        };
        if key.is_empty() {
            return Err(Error::Other(format!(
                "environment entry {kv:?} has an empty key"
            )));
        }
        let prefix = format!("{key}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(kv.clone());
    }
    process.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        if !cwd.starts_with('/') {
            return Err(Error::Other(format!(
                "working directory {cwd:?} is not absolute"
            )));
        }
        process.set_cwd(PathBuf::from(cwd));
    }
    process.set_terminal(Some(opts.tty));
    spec.set_process(Some(process));
    if let Some(h) = &opts.hostname {
        spec.set_hostname(Some(h.clone()));
    }
    Ok(())
}

/// Writes the spec as the bundle's config.json, atomically.
pub fn write_config(spec: &Spec, bundle: &Path) -> Result<()> {
    let path = crate::layout::bundle_config(bundle);
    let data = serde_json::to_vec(spec)
        .map_err(|e| crate::Error::Other(format!("serialize {}: {e}", path.display())))?;
    // runc reads it once, now; after a reboot there is nothing to run.
    crate::atomic::write_until_reboot(&path, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_args_env_cwd_and_tty() {
        let mut spec = default_spec();
        let opts = ProcessOpts {
            args: vec!["echo".into(), "hi".into()],
            env: vec!["TERM=dumb".into(), "A=1".into()],
            cwd: Some("/tmp".into()),
            hostname: Some("box".into()),
            tty: false,
        };
        apply(&mut spec, &opts).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["echo", "hi"]);
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("TERM=")).count(), 1);
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("box"));
    }

    #[test]
    fn cgroup_namespace_only_on_a_unified_host() {
        let has_cgroupns = |spec: &Spec| {
            let nss = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
            assert!(nss.iter().any(|n| n.typ() == LinuxNamespaceType::Mount));
            nss.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        assert!(has_cgroupns(&spec_for_host(true)));
        assert!(!has_cgroupns(&spec_for_host(false)));
    }

    #[test]
    fn rejects_bad_env_and_relative_cwd() {
        let mut spec = default_spec();
        let err = apply(
            &mut spec,
            &ProcessOpts {
                env: vec!["NOEQUALS".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("NOEQUALS"), "{err}");
        let err = apply(
            &mut spec,
            &ProcessOpts {
                cwd: Some("rel".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not absolute"), "{err}");
    }

    #[test]
    fn broken_config_names_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\n  \"ociVersion\": ,\n}").unwrap();
        let err = load_bundle_config(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn missing_rootfs_is_named() {
        let err = check_rootfs(Path::new("/nonexistent/rootfs"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/rootfs"), "{err}");
    }
}
