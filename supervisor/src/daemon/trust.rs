//! Whose directories berthd puts its socket, state and containers in.
//!
//! Whoever owns the root (or any directory above it) can swap
//! `berthd.sock` for their own and have root's CLI talk to a fake berthd
//! that names the log and attach sockets the CLI then opens. So every
//! directory on the way to the root, the root itself and what berthd
//! creates in it must belong to root or to the user running berthd, and
//! none may be writable by everyone without the sticky bit.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a directory cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("refusing root {root}: {dir} is owned by uid {uid}, not root or uid {us} (whoever owns it could replace berthd's socket)")]
    Owner {
        root: String,
        dir: String,
        uid: u32,
        us: u32,
    },
    #[error("refusing root {root}: {dir} is writable by every user and not sticky (anyone could replace what berthd keeps there)")]
    WorldWritable { root: String, dir: String },
    #[error("stat {dir}: {source}")]
    Stat {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn check_one(root: &Path, dir: &Path, meta: &std::fs::Metadata) -> Result<(), TrustError> {
    if !trusted_uid(meta.uid()) {
        return Err(TrustError::Owner {
            root: root.display().to_string(),
            dir: dir.display().to_string(),
            uid: meta.uid(),
            us: nix::unistd::geteuid().as_raw(),
        });
    }
    // World-writable without the sticky bit (/tmp has it): anyone could
    // rename our directory away and put theirs in its place.
    if meta.is_dir() && meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(TrustError::WorldWritable {
            root: root.display().to_string(),
            dir: dir.display().to_string(),
        });
    }
    Ok(())
}

/// Checks every existing directory from `/` down to `root` (symlinks
/// included, and the directories they lead to). Directories berthd is
/// about to create are its own.
pub fn check_ancestors(root: &Path) -> Result<(), TrustError> {
    let mut prefix = std::path::PathBuf::new();
    for comp in root.components() {
        prefix.push(comp);
        let lmeta = match std::fs::symlink_metadata(&prefix) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(TrustError::Stat {
                    dir: prefix.display().to_string(),
                    source,
                })
            }
        };
        check_one(root, &prefix, &lmeta)?;
        if lmeta.file_type().is_symlink() {
            // The link is trusted; where it leads must be too.
            let target = std::fs::canonicalize(&prefix).map_err(|source| TrustError::Stat {
                dir: prefix.display().to_string(),
                source,
            })?;
            check_ancestors_resolved(root, &target)?;
        }
    }
    Ok(())
}

fn check_ancestors_resolved(root: &Path, target: &Path) -> Result<(), TrustError> {
    for dir in target.ancestors() {
        let meta = std::fs::metadata(dir).map_err(|source| TrustError::Stat {
            dir: dir.display().to_string(),
            source,
        })?;
        check_one(root, dir, &meta)?;
    }
    Ok(())
}

/// Checks one directory that exists now (the root, or one berthd made in it).
pub fn check_owned(dir: &Path) -> Result<(), TrustError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| TrustError::Stat {
        dir: dir.display().to_string(),
        source,
    })?;
    check_one(dir, dir, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_a_world_writable_parent_without_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_ancestors(&open.join("root")).unwrap_err().to_string();
        assert!(err.contains("writable by every user"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_ancestors(&open.join("root")).unwrap();
    }

    #[test]
    fn accepts_our_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        check_ancestors(&dir.path().join("a/b/c")).unwrap();
        check_owned(dir.path()).unwrap();
    }
}
