//! Mounts a container asks for (`-v`, `--mount`, `--tmpfs`, `--init`'s
//! binary, the network files) as OCI mounts.
//!
//! A bind mount's host path must exist (Docker's `-v` would create it; a
//! typo silently mounting an empty new directory is worse than an error)
//! and be absolute. The container side is resolved by runc inside the
//! rootfs (securejoin), so a symlink planted in the rootfs cannot send a
//! mount outside it (an integration test plants one).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

use crate::runopts::{MountKind, MountSpec};

/// Errors of the mount options.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("bind source path does not exist: {0}")]
    MissingSource(String),
    #[error("bind source path {path}: {source}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--init: neither tini-static nor catatonit is installed (apt-get install tini)")]
    NoInit,
}

/// Where `--init`'s binary appears in the container. /dev is the runtime's
/// own tmpfs, so the mount point can always be made, also on a read-only
/// or foreign rootfs.
pub const INIT_PATH: &str = "/dev/init";

/// Static init binaries, in order of preference: the rootfs may have no
/// libc, so a dynamically linked one would not start.
const INIT_CANDIDATES: &[&str] = &[
    "/usr/bin/tini-static",
    "/usr/bin/catatonit",
    "/usr/libexec/podman/catatonit",
];

/// The init binary `--init` mounts (`BERTH_INIT` overrides).
pub fn find_init() -> Result<PathBuf, MountError> {
    if let Some(p) = std::env::var_os("BERTH_INIT") {
        return Ok(PathBuf::from(p));
    }
    INIT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(MountError::NoInit)
}

/// A read-only bind mount of one host file or directory.
pub fn bind(source: &Path, target: &str, readonly: bool) -> Mount {
    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
    if readonly {
        opts.push("ro".into());
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(target));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(opts));
    m
}

/// Checks the user's mounts and turns them into OCI mounts.
pub fn user_mounts(specs: &[MountSpec]) -> Result<Vec<Mount>, MountError> {
    let mut out = Vec::new();
    for s in specs {
        match s.kind {
            MountKind::Bind => {
                let src = s.source.clone().unwrap_or_default();
                match std::fs::metadata(&src) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(MountError::MissingSource(src))
                    }
                    Err(e) => {
                        return Err(MountError::Source {
                            path: src,
                            source: e,
                        })
                    }
                }
                out.push(bind(Path::new(&src), &s.target, s.readonly));
            }
            MountKind::Tmpfs => {
                // Docker's defaults for --tmpfs; "exec" etc. override.
                let mut opts: Vec<String> = ["nosuid", "nodev", "noexec"]
                    .iter()
                    .filter(|d| {
                        let undo = d.trim_start_matches("no");
                        !s.options.iter().any(|o| o == undo)
                    })
                    .map(|s| s.to_string())
                    .collect();
                opts.extend(s.options.iter().cloned());
                if s.readonly {
                    opts.push("ro".into());
                }
                let mut m = Mount::default();
                m.set_destination(PathBuf::from(&s.target));
                m.set_typ(Some("tmpfs".into()));
                m.set_source(Some(PathBuf::from("tmpfs")));
                m.set_options(Some(opts));
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Adds mounts to the spec; a mount at the same destination as one of the
/// spec's own (e.g. the user's tmpfs on /dev/shm) replaces it.
pub fn add(spec: &mut Spec, extra: Vec<Mount>) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in extra {
        mounts.retain(|old| old.destination() != m.destination());
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_source_is_an_error() {
        let s = MountSpec::parse_volume("/nonexistent/berth-x:/x").unwrap();
        let e = user_mounts(&[s]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bind source path does not exist: /nonexistent/berth-x"
        );
    }

    #[test]
    fn tmpfs_defaults_and_overrides() {
        let s = MountSpec::parse_tmpfs("/t:exec,size=1m").unwrap();
        let m = &user_mounts(&[s]).unwrap()[0];
        let o = m.options().clone().unwrap();
        assert!(o.contains(&"nosuid".to_string()));
        assert!(!o.contains(&"noexec".to_string()));
        assert!(o.contains(&"size=1m".to_string()));
    }

    #[test]
    fn readonly_bind() {
        let s = MountSpec::parse_volume("/tmp:/x:ro").unwrap();
        let m = &user_mounts(&[s]).unwrap()[0];
        assert!(m.options().clone().unwrap().contains(&"ro".to_string()));
    }
}
