//! `-u` and `--group-add`: users and groups resolved in the container's own
//! /etc/passwd and /etc/group (never the host's), as Docker does.
//!
//! The rootfs is not trusted: its /etc/passwd may be a symlink planted to
//! point at a host file, so paths are resolved inside the rootfs the way
//! the kernel would inside a chroot ([`resolve_in_root`]).

use std::path::{Component, Path, PathBuf};

/// Errors resolving a user or group.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in the container's /etc/passwd")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in the container's /etc/group")]
    UnknownGroup(String),
    #[error("invalid user {0:?}: use NAME|UID[:GROUP|GID]")]
    Malformed(String),
    #[error("{path}: too many levels of symbolic links inside the rootfs")]
    Loop { path: PathBuf },
}

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The user's home from /etc/passwd, for `HOME`.
    pub home: Option<String>,
}

/// Resolves `path` (absolute, as seen inside the container) to a host path
/// under `root`, following symlinks as if `root` were `/`: an absolute
/// link or `..` never leaves the root. The result may not exist.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, UserError> {
    let mut parts: Vec<String> = Vec::new();
    let mut pending: Vec<String> = split(path);
    pending.reverse();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." | "" => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let mut host = root.to_path_buf();
        host.extend(&parts);
        host.push(&c);
        match std::fs::read_link(&host) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(UserError::Loop {
                        path: PathBuf::from(path),
                    });
                }
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    parts.clear();
                }
                let mut more = split(&t);
                more.reverse();
                pending.extend(more);
            }
            Err(_) => parts.push(c),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&parts);
    Ok(host)
}

fn split(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// One /etc/passwd or /etc/group line, split on ':'.
fn entries(root: &Path, file: &str) -> Vec<Vec<String>> {
    let Ok(path) = resolve_in_root(root, file) else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn group_id(groups: &[Vec<String>], g: &str) -> Result<u32, UserError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    groups
        .iter()
        .find(|e| e.first().map(String::as_str) == Some(g))
        .and_then(|e| e.get(2)?.parse().ok())
        .ok_or_else(|| UserError::UnknownGroup(g.to_string()))
}

/// Resolves `-u user` (None: root) and `--group-add` in the rootfs.
pub fn resolve(
    root: &Path,
    user: Option<&str>,
    group_add: &[String],
) -> Result<Resolved, UserError> {
    let passwd = entries(root, "/etc/passwd");
    let groups = entries(root, "/etc/group");
    let spec = user.unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(UserError::Malformed(spec.to_string()));
    }
    let by_uid = |uid: u32| {
        passwd
            .iter()
            .find(|e| e.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
    };
    let (uid, entry) = match u.parse::<u32>() {
        Ok(uid) => (uid, by_uid(uid)),
        Err(_) => {
            let e = passwd
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(u))
                .ok_or_else(|| UserError::UnknownUser(u.to_string()))?;
            let uid = e
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| UserError::UnknownUser(u.to_string()))?;
            (uid, Some(e))
        }
    };
    let gid = match g {
        Some(g) => group_id(&groups, g)?,
        None => entry.and_then(|e| e.get(3)?.parse().ok()).unwrap_or(0),
    };
    let mut additional = Vec::new();
    // Groups that list the user as a member, as Docker adds them (only
    // when no group was given explicitly).
    if let (Some(name), None) = (entry.and_then(|e| e.first()), g) {
        for e in &groups {
            let member = e.get(3).is_some_and(|m| m.split(',').any(|x| x == name));
            if let Some(id) = e.get(2).and_then(|s| s.parse::<u32>().ok()) {
                if member && id != gid && !additional.contains(&id) {
                    additional.push(id);
                }
            }
        }
    }
    for ga in group_add {
        let id = group_id(&groups, ga)?;
        if !additional.contains(&id) {
            additional.push(id);
        }
    }
    Ok(Resolved {
        uid,
        gid,
        additional_gids: additional,
        home: entry.and_then(|e| e.get(5).cloned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001:w:/home/web:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwebg:x:1001:\nstaff:x:50:web,other\naudio:x:29:\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn by_name_and_number() {
        let r = rootfs();
        let u = resolve(r.path(), Some("web"), &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![50]);
        assert_eq!(u.home.as_deref(), Some("/home/web"));
        let u = resolve(r.path(), Some("1000:1000"), &["audio".into()]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![29]);
        let u = resolve(r.path(), Some("4242"), &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 0, None));
        let u = resolve(r.path(), None, &[]).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
    }

    #[test]
    fn unknown_names_fail() {
        let r = rootfs();
        let e = resolve(r.path(), Some("nosuchuser"), &[]).unwrap_err();
        assert!(e.to_string().contains("nosuchuser"), "{e}");
        assert!(resolve(r.path(), Some("web:nogroup"), &[]).is_err());
        assert!(resolve(r.path(), Some("web"), &["nope".into()]).is_err());
        assert!(resolve(r.path(), Some(":1"), &[]).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let r = rootfs();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", r.path().join("up")).unwrap();
        let p = resolve_in_root(r.path(), "/escape/x").unwrap();
        assert!(p.starts_with(r.path()), "{}", p.display());
        let p = resolve_in_root(r.path(), "/up/etc/passwd").unwrap();
        assert_eq!(p, r.path().join("etc/passwd"));
    }
}
