//! `-u` and `--group-add`: users and groups resolved in the container's own
//! /etc/passwd and /etc/group (never the host's), as Docker does.
//!
//! The rootfs is not trusted: its /etc/passwd may be a symlink planted to
//! point at a host file, so paths are resolved inside the rootfs the way
//! the kernel would inside a chroot ([`resolve_in_root`], and for reading
//! the files themselves openat2's `RESOLVE_IN_ROOT`); it may be a FIFO
//! that would block berthd forever or a link to /dev/zero that would eat
//! its memory, so only a regular file is read, never blocking, and at
//! most [`MAX_FILE_SIZE`] bytes ([`read_bounded`]). An image's layers are
//! read with the same bounds (berth-image's `runconfig`) and resolved by
//! the same rules ([`resolve_in`]).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

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
    #[error("the container's {path} is not a regular file")]
    NotRegular { path: String },
    #[error("the container's {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("reading the container's {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The most of /etc/passwd or /etc/group berth reads (glibc's own files
/// are a few kB; a rootfs's is not trusted).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Reads an open file of the container's (`path` names it in errors):
/// refused unless it is a regular file of at most [`MAX_FILE_SIZE`] bytes
/// (checked on the open file, so nothing can swap it meanwhile; open it
/// with `O_NONBLOCK` so a FIFO never blocks the open).
pub fn read_bounded(file: File, path: &str) -> Result<Vec<u8>, UserError> {
    let read_err = |source| UserError::Read {
        path: path.to_string(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(UserError::NotRegular {
            path: path.to_string(),
        });
    }
    let too_large = || UserError::TooLarge {
        path: path.to_string(),
        limit: MAX_FILE_SIZE,
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // It may grow after the fstat: never read past the limit.
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(data)
}

/// Reads `path` (absolute, as the container sees it) from the rootfs at
/// `root`, resolved by the kernel with `root` as `/` (a symlink or `..`
/// never leaves it), with [`read_bounded`]'s limits. None: no such file.
pub fn read_file_in_root(root: &Path, path: &str) -> Result<Option<Vec<u8>>, UserError> {
    let read_err = |source: std::io::Error| UserError::Read {
        path: path.to_string(),
        source,
    };
    let dir = match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(None),
        Err(e) => return Err(read_err(e.into())),
    };
    let rel = path.trim_start_matches('/');
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            return Ok(None)
        }
        Err(e) => return Err(read_err(e.into())),
    };
    read_bounded(File::from(fd), path).map(Some)
}

/// A container's /etc/passwd and /etc/group, as read (empty when missing).
#[derive(Debug, Clone, Default)]
pub struct Databases {
    pub passwd: Vec<u8>,
    pub group: Vec<u8>,
}

impl Databases {
    /// Reads both from a rootfs directory (see [`read_file_in_root`]).
    pub fn from_root(root: &Path) -> Result<Databases, UserError> {
        Ok(Databases {
            passwd: read_file_in_root(root, "/etc/passwd")?.unwrap_or_default(),
            group: read_file_in_root(root, "/etc/group")?.unwrap_or_default(),
        })
    }
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

/// The lines of /etc/passwd or /etc/group, each split on ':'.
fn entries(data: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(data)
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
    resolve_in(&Databases::from_root(root)?, user, group_add)
}

/// Resolves `user` (`NAME|UID[:GROUP|GID]`, None: root) and `--group-add`
/// in the given files, as Docker does: a UID with no entry gets GID 0 and
/// no home; a name must have an entry; without an explicit group the
/// user's entry gives the GID and the groups listing the user by name
/// are added.
pub fn resolve_in(
    db: &Databases,
    user: Option<&str>,
    group_add: &[String],
) -> Result<Resolved, UserError> {
    let passwd = entries(&db.passwd);
    let groups = entries(&db.group);
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
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let r = rootfs();
        let passwd = r.path().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // Blocks forever (no writer) if opened without O_NONBLOCK.
        let e = resolve(r.path(), Some("web"), &[]).unwrap_err();
        assert!(matches!(e, UserError::NotRegular { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the container's /etc/passwd is not a regular file"
        );
        // /dev/zero through a symlink resolves inside the rootfs: missing there.
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
        assert!(matches!(
            resolve(r.path(), Some("web"), &[]).unwrap_err(),
            UserError::UnknownUser(_)
        ));
        // A device node inside the rootfs (making one needs root, as
        // the integration tests run) is not read either.
        std::fs::remove_file(&passwd).unwrap();
        let zero = nix::sys::stat::makedev(1, 5);
        if nix::sys::stat::mknod(
            &passwd,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            zero,
        )
        .is_ok()
        {
            let e = resolve(r.path(), Some("web"), &[]).unwrap_err();
            assert!(matches!(e, UserError::NotRegular { .. }), "{e:?}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let r = rootfs();
        let f = std::fs::File::create(r.path().join("etc/group")).unwrap();
        f.set_len(MAX_FILE_SIZE + 1).unwrap();
        let e = resolve(r.path(), Some("web"), &[]).unwrap_err();
        assert!(matches!(e, UserError::TooLarge { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("/etc/group is larger than 1048576 bytes"),
            "{e}"
        );
        // At the limit it is read.
        f.set_len(MAX_FILE_SIZE).unwrap();
        assert!(resolve(r.path(), Some("web"), &[]).is_ok());
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
        // The files are read the same way: an absolute link to the host's
        // /etc/passwd reads the rootfs's own.
        std::fs::rename(
            r.path().join("etc/passwd"),
            r.path().join("etc/passwd.real"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", r.path().join("etc/passwd")).unwrap();
        let u = resolve(r.path(), Some("web"), &[]).unwrap();
        assert_eq!(u.uid, 1000);
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/passwd", r.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve(r.path(), Some("root"), &[]).is_err());
    }
}
