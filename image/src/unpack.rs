//! Unpacking one layer tar into an empty directory, safely.
//!
//! Nothing in a layer is trusted. Every entry's path is taken apart into
//! components and walked from the layer's root with `openat(O_NOFOLLOW)`,
//! one directory at a time: `..`, an absolute path, or any component that
//! is a symlink (planted by an earlier entry) or not a directory refuses
//! the whole layer. Hardlink targets are resolved the same way. Layers are
//! unpacked each into its own fresh directory, so nothing an earlier layer
//! planted is even reachable (overlayfs stacks them without following
//! links across layers).
//!
//! Whiteouts become overlayfs whiteouts as they come: `.wh.NAME` a 0/0
//! character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque`
//! xattr on its directory. A layer cannot set `trusted.overlay.*` xattrs
//! itself (they would steer overlayfs).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// What unpacking produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unpacked {
    /// Bytes of regular file content.
    pub size: u64,
}

/// A directory's metadata, applied after its children are written
/// (creating a child changes the directory's mtime).
struct DirTime {
    components: Vec<Vec<u8>>,
    mtime: Timespec,
}

/// Unpacks the tar stream `reader` into `dest` (an empty directory).
/// `layer` names the layer in errors.
pub fn unpack<R: Read>(layer: &str, reader: R, dest: &Path) -> Result<Unpacked> {
    let root = open_dir_fd(dest)?;
    let mut u = Unpacker {
        layer,
        root,
        cached: None,
        dir_times: Vec::new(),
        is_root: rustix::process::geteuid().is_root(),
        buf: vec![0u8; 256 * 1024],
        size: 0,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| u.broken(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.broken(e))?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs();
    Ok(Unpacked { size: u.size })
}

fn open_dir_fd(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", path, e.into()))
}

struct Unpacker<'a> {
    layer: &'a str,
    root: OwnedFd,
    /// The last parent directory walked to, by its components: tars list
    /// a directory's entries together, so this saves most of the walks.
    cached: Option<(Vec<Vec<u8>>, OwnedFd)>,
    dir_times: Vec<DirTime>,
    is_root: bool,
    buf: Vec<u8>,
    size: u64,
}

/// Splits an archive path into components, refusing `..` and absolute paths.
fn components(raw: &[u8]) -> std::result::Result<Vec<Vec<u8>>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err("path contains '..'"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}

impl Unpacker<'_> {
    fn broken(&self, e: std::io::Error) -> Error {
        Error::Layer {
            layer: self.layer.to_string(),
            message: format!("not a valid tar stream: {e}"),
        }
    }

    fn refuse(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: lossy(entry),
            reason: reason.into(),
        }
    }

    fn fail(&self, entry: &[u8], op: &str, e: Errno) -> Error {
        Error::Layer {
            layer: self.layer.to_string(),
            message: format!("{op} {}: {}", lossy(entry), std::io::Error::from(e)),
        }
    }

    /// Opens the directory at `dirs` under the root, walking one component
    /// at a time without following symlinks; missing directories are made
    /// (mode 0755, as tar does for implied parents).
    fn walk(&mut self, entry: &[u8], dirs: &[Vec<u8>]) -> Result<OwnedFd> {
        if let Some((path, fd)) = &self.cached {
            if path.as_slice() == dirs {
                return fd.try_clone().map_err(|e| {
                    self.fail(entry, "dup", Errno::from_io_error(&e).unwrap_or(Errno::IO))
                });
            }
        }
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.fail(entry, "dup", Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        for c in dirs {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&cur, os(c), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, os(c), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.fail(entry, "mkdir", e)),
                    }
                    rustix::fs::openat(&cur, os(c), flags, Mode::empty())
                        .map_err(|e| self.walk_error(entry, e))?
                }
                Err(e) => return Err(self.walk_error(entry, e)),
            };
            cur = next;
        }
        if let Ok(dup) = cur.try_clone() {
            self.cached = Some((dirs.to_vec(), dup));
        }
        Ok(cur)
    }

    fn walk_error(&self, entry: &[u8], e: Errno) -> Error {
        match e {
            Errno::LOOP | Errno::NOTDIR => {
                self.refuse(entry, "a parent is a symlink or not a directory")
            }
            e => self.fail(entry, "open parent of", e),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let comps = components(&raw).map_err(|r| self.refuse(&raw, r))?;
        let Some((name, dirs)) = comps.split_last() else {
            // The layer's root itself ("./"): only its metadata.
            if kind.is_dir() {
                let root = self.root.try_clone().map_err(|e| {
                    self.fail(&raw, "dup", Errno::from_io_error(&e).unwrap_or(Errno::IO))
                })?;
                self.set_owner_mode(&raw, &root, entry)?;
            }
            return Ok(());
        };
        let parent = self.walk(&raw, dirs)?;
        let name_str = lossy(name);
        if name_str == OPAQUE {
            return self.set_xattr(&raw, &parent, OVERLAY_OPAQUE, b"y");
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other AUFS metadata (.wh..wh.plnk, ...): nothing for overlayfs.
                return Ok(());
            }
            let hidden = &name[WHITEOUT_PREFIX.len()..];
            self.clear(&raw, &parent, hidden, false)?;
            return rustix::fs::mknodat(
                &parent,
                os(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| self.fail(&raw, "whiteout", e));
        }
        let mtime = Timespec {
            tv_sec: entry.header().mtime().unwrap_or(0) as i64,
            tv_nsec: 0,
        };
        match kind {
            tar::EntryType::Directory => {
                self.clear(&raw, &parent, name, true)?;
                match rustix::fs::mkdirat(&parent, os(name), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.fail(&raw, "mkdir", e)),
                }
                let fd = rustix::fs::openat(
                    &parent,
                    os(name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.walk_error(&raw, e))?;
                self.set_owner_mode(&raw, &fd, entry)?;
                self.set_xattrs(&raw, &fd, entry)?;
                self.dir_times.push(DirTime {
                    components: comps.clone(),
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if kind == tar::EntryType::GNUSparse {
                    return Err(self.refuse(&raw, "GNU sparse files are not supported"));
                }
                self.clear(&raw, &parent, name, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.fail(&raw, "create", e))?;
                let mut file = File::from(fd);
                loop {
                    let n = entry.read(&mut self.buf).map_err(|e| self.broken(e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(|e| {
                        self.fail(&raw, "write", Errno::from_io_error(&e).unwrap_or(Errno::IO))
                    })?;
                    self.size += n as u64;
                }
                self.set_owner_mode(&raw, file.as_fd(), entry)?;
                self.set_xattrs(&raw, file.as_fd(), entry)?;
                rustix::fs::futimens(&file, &times(mtime))
                    .map_err(|e| self.fail(&raw, "set mtime of", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                self.clear(&raw, &parent, name, false)?;
                rustix::fs::symlinkat(os(&target), &parent, os(name))
                    .map_err(|e| self.fail(&raw, "symlink", e))?;
                self.chown_at(&raw, &parent, name, entry)?;
                // Symlinks take only trusted.* and security.* xattrs; rare in images.
                rustix::fs::utimensat(&parent, os(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fail(&raw, "set mtime of", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "hardlink without a target"))?
                    .into_owned();
                let tcomps = components(&target).map_err(|r| {
                    self.refuse(&raw, format!("hardlink target {}: {r}", lossy(&target)))
                })?;
                let Some((tname, tdirs)) = tcomps.split_last() else {
                    return Err(self.refuse(&raw, "hardlink to the layer's root"));
                };
                let tparent = self.walk(&raw, tdirs)?;
                self.clear(&raw, &parent, name, false)?;
                rustix::fs::linkat(&tparent, os(tname), &parent, os(name), AtFlags::empty())
                    .map_err(|e| match e {
                        Errno::NOENT => self.refuse(
                            &raw,
                            format!("hardlink target {} is not in this layer", lossy(&target)),
                        ),
                        e => self.fail(&raw, "hardlink", e),
                    })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = entry.header();
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                self.clear(&raw, &parent, name, false)?;
                let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o600) & 0o7777);
                rustix::fs::mknodat(&parent, os(name), ft, mode, dev)
                    .map_err(|e| self.fail(&raw, "mknod", e))?;
                self.chown_at(&raw, &parent, name, entry)?;
                rustix::fs::utimensat(&parent, os(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fail(&raw, "set mtime of", e))?;
            }
            other => {
                return Err(self.refuse(&raw, format!("unsupported entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// Makes room for a new entry: an existing directory stays when a
    /// directory comes again; anything else is removed (later entries win).
    fn clear(&mut self, raw: &[u8], parent: &OwnedFd, name: &[u8], keep_dir: bool) -> Result<()> {
        match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.fail(raw, "stat", e)),
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if is_dir && keep_dir {
                    return Ok(());
                }
                if is_dir {
                    // The cached walk may point into what goes away.
                    self.cached = None;
                    let path = proc_path(parent, name);
                    std::fs::remove_dir_all(&path).map_err(|e| {
                        self.fail(
                            raw,
                            "replace directory",
                            Errno::from_io_error(&e).unwrap_or(Errno::IO),
                        )
                    })
                } else {
                    rustix::fs::unlinkat(parent, os(name), AtFlags::empty())
                        .map_err(|e| self.fail(raw, "replace", e))
                }
            }
        }
    }

    fn set_owner_mode<R: Read, F: AsFd>(
        &self,
        raw: &[u8],
        fd: F,
        entry: &tar::Entry<'_, R>,
    ) -> Result<()> {
        let h = entry.header();
        if self.is_root {
            let uid = h.uid().unwrap_or(0) as u32;
            let gid = h.gid().unwrap_or(0) as u32;
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| self.fail(raw, "chown", e))?;
        }
        // After chown, which clears setuid/setgid bits.
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.fail(raw, "chmod", e))
    }

    fn chown_at<R: Read>(
        &self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &[u8],
        entry: &tar::Entry<'_, R>,
    ) -> Result<()> {
        if !self.is_root {
            return Ok(());
        }
        let h = entry.header();
        rustix::fs::chownat(
            parent,
            os(name),
            Some(rustix::fs::Uid::from_raw(h.uid().unwrap_or(0) as u32)),
            Some(rustix::fs::Gid::from_raw(h.gid().unwrap_or(0) as u32)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail(raw, "chown", e))
    }

    /// xattrs from PAX `SCHILY.xattr.*` records.
    fn set_xattrs<R: Read, F: AsFd>(
        &self,
        raw: &[u8],
        fd: F,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(());
        };
        let mut attrs = Vec::new();
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    attrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        for (name, value) in attrs {
            if name.starts_with("trusted.overlay.") {
                return Err(self.refuse(raw, format!("sets the overlayfs xattr {name}")));
            }
            self.set_xattr(raw, &fd, &name, &value)?;
        }
        Ok(())
    }

    fn set_xattr<F: AsFd>(&self, raw: &[u8], fd: F, name: &str, value: &[u8]) -> Result<()> {
        match rustix::fs::fsetxattr(&fd, name, value, XattrFlags::empty()) {
            Ok(()) => Ok(()),
            // A filesystem without (that kind of) xattrs: as tar does, go on.
            Err(Errno::NOTSUP) if !name.starts_with("trusted.overlay.") => {
                log::debug!("{}: xattr {name} not supported here", lossy(raw));
                Ok(())
            }
            Err(e) => Err(self.fail(raw, &format!("set xattr {name} on"), e)),
        }
    }

    /// Directory mtimes, deepest first, each directory reached again by a
    /// safe walk (a later entry may have replaced a parent with a symlink).
    fn finish_dirs(&mut self) {
        let dirs = std::mem::take(&mut self.dir_times);
        for d in dirs.iter().rev() {
            let Some((name, parents)) = d.components.split_last() else {
                continue;
            };
            if let Ok(parent) = self.walk(b"", parents) {
                let _ = rustix::fs::utimensat(
                    &parent,
                    os(name),
                    &times(d.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
    }
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// A path naming `name` in the directory `dir` that the kernel resolves
/// through the fd (the directory itself is never looked up by path).
fn proc_path(dir: &OwnedFd, name: &[u8]) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(os(name));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_500_000_000);
        h.set_uid(1234);
        h.set_gid(5678);
        h
    }

    /// Devices, fifos, owners, setuid, xattrs and mtimes (directories'
    /// too, set after their children) come out as the tar says.
    #[test]
    fn metadata_survives() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, "d", 0o750, 0);
        h.set_mtime(1_400_000_000);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.berth", &b"kept"[..])])
            .unwrap();
        let mut h = header(tar::EntryType::Regular, "d/suid", 0o4755, 3);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let mut h = header(tar::EntryType::Char, "d/null", 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = header(tar::EntryType::Fifo, "d/pipe", 0o640, 0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let u = unpack("test", &data[..], dir.path()).unwrap();
        assert_eq!(u.size, 3);
        let root = rustix::process::geteuid().is_root();
        let meta = |p: &str| std::fs::symlink_metadata(dir.path().join(p)).unwrap();
        let suid = meta("d/suid");
        assert_eq!(suid.mtime(), 1_500_000_000);
        assert_eq!(meta("d").mtime(), 1_400_000_000, "set after its children");
        assert!(meta("d/pipe").file_type().is_fifo());
        assert_eq!(meta("d/pipe").mode() & 0o7777, 0o640);
        let mut value = [0u8; 16];
        let n = rustix::fs::getxattr(dir.path().join("d/suid"), "user.berth", &mut value);
        // user.* xattrs need a filesystem that takes them (ext4, xfs, tmpfs
        // since Linux 6.6); only "not supported here" is excused.
        match n {
            Ok(n) => assert_eq!(&value[..n], b"kept"),
            Err(e) => assert_eq!(e, Errno::NOTSUP, "user.berth not set"),
        }
        if root {
            assert_eq!(suid.mode() & 0o7777, 0o4755, "setuid kept after chown");
            assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
            let null = meta("d/null");
            assert!(null.file_type().is_char_device());
            assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        }
    }
}
