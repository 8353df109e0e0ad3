//! berth's default root filesystem, built once from the host's static
//! busybox, and the per-container overlay that keeps it (or an image's
//! layers) read-only. The overlay is mounted only in private mount
//! namespaces (the shim's, or a throwaway one of berthd's), never in the
//! host's: every mount in the host's namespace is copied into each new
//! container's, so host mounts make every later start slower.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where Debian's busybox-static puts its binary.
const BUSYBOX_CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Finds a statically linked busybox on the host.
pub fn find_busybox() -> Result<PathBuf> {
    let path = BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Other(
                "no busybox found at /bin/busybox: install the busybox-static package".into(),
            )
        })?;
    let data = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    if has_interpreter(&data) {
        return Err(Error::Other(format!(
            "{} is dynamically linked and cannot run in an empty rootfs: install busybox-static",
            path.display()
        )));
    }
    Ok(path)
}

/// True if an ELF64 image has a PT_INTERP header (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let off = phoff + i * phentsize;
        elf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
            .unwrap_or(false)
    })
}

/// Whether the default rootfs at `target` is there (built and renamed
/// into place: the rename is what makes it appear).
pub fn is_built(target: &Path) -> bool {
    target.join("bin/busybox").is_file()
}

/// Builds the default rootfs at `target` unless it is there already.
/// Built in a sibling temp directory and renamed, so it is whole or absent.
pub fn ensure_default(target: &Path) -> Result<()> {
    if is_built(target) {
        return Ok(());
    }
    let busybox = find_busybox()?;
    let parent = target
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent", target.display())))?;
    fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    let tmp = parent.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    build(&busybox, &tmp)?;
    match fs::rename(&tmp, target) {
        Ok(()) => Ok(()),
        // Another builder won the race; its rootfs is as good as ours.
        Err(_) if is_built(target) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::io("rename", &tmp, e)),
    }
}

fn build(busybox: &Path, dir: &Path) -> Result<()> {
    let io = |op, p: &Path| {
        let p = p.to_owned();
        move |e| Error::io(op, p, e)
    };
    for sub in [
        "bin", "dev", "etc", "proc", "sys", "tmp", "root", "run", "var", "usr/bin",
    ] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(io("create", &d))?;
    }
    let tmp = dir.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(io("chmod", &tmp))?;
    let bin = dir.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(io("copy busybox to", &bin))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io("run", busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet.contains('/') || applet == "busybox" {
            continue;
        }
        let link = dir.join("bin").join(applet);
        symlink("busybox", &link).map_err(io("symlink", &link))?;
    }
    let env = dir.join("usr/bin/env");
    symlink("/bin/busybox", &env).map_err(io("symlink", &env))?;
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ];
    for (name, content) in files {
        let p = dir.join(name);
        fs::write(&p, content).map_err(io("write", &p))?;
    }
    Ok(())
}

/// The read-only layers under a container's overlay, top first: what
/// berthd records in meta.json (the upper, work and target come from the
/// container's paths at each start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lower {
    /// A directory `dirs` are relative to. It is opened once and named as
    /// `/proc/self/fd/N/<dir>`, so an image's 100+ layers fit in the one
    /// page of mount options; `None`: `dirs` are absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

/// One container's overlay: made by berthd (`prepare`), mounted by the
/// container's shim in its own mount namespace (`mount`), so it lives
/// exactly as long as the shim and never shows in the host's mount table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    pub lower: Lower,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

impl Overlay {
    /// The overlay of the container at `paths` over `lower`.
    pub fn of(paths: &crate::layout::ContainerPaths, lower: Lower) -> Self {
        Overlay {
            lower,
            upper: paths.overlay_upper(),
            work: paths.overlay_work(),
            target: paths.bundle_rootfs(),
        }
    }

    /// Creates the upper, work and target directories (the upper with
    /// `upper_mode` when given: it is the container's `/`).
    pub fn prepare(&self, upper_mode: Option<u32>) -> Result<()> {
        for d in [&self.upper, &self.work, &self.target] {
            fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        if let Some(mode) = upper_mode {
            fs::set_permissions(&self.upper, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &self.upper, e))?;
        }
        Ok(())
    }

    /// Mounts the overlay on `target` in the caller's mount namespace.
    pub fn mount(&self) -> Result<()> {
        // Held until the mount call returns: the lowerdirs name it.
        let base = match &self.lower.base {
            Some(b) => Some(fs::File::open(b).map_err(|e| Error::io("open", b, e))?),
            None => None,
        };
        let lower: Vec<String> = self
            .lower
            .dirs
            .iter()
            .map(|d| match &base {
                Some(f) => format!("/proc/self/fd/{}/{}", f.as_raw_fd(), d.display()),
                None => d.display().to_string(),
            })
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| Error::io("mount overlay on", &self.target, e.into()))
    }

    /// Runs `f` with the overlay mounted in a mount namespace of its own,
    /// on a thread made for it, and unmounts it before returning: how
    /// berthd looks at an image's merged rootfs (the command) without ever
    /// mounting it in the host's namespace. The thread is not reused, so
    /// the namespace ends with it.
    pub fn with_mounted<T: Send>(&self, f: impl FnOnce(&Path) -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_private_namespace()?;
                self.mount()?;
                let out = f(&self.target);
                umount2(&self.target, MntFlags::empty())
                    .map_err(|e| Error::io("unmount", &self.target, e.into()))?;
                Ok(out)
            })
            .join()
            .map_err(|_| Error::Other("the rootfs lookup thread panicked".into()))?
        })
    }
}

/// Moves the calling thread into a new mount namespace whose mounts
/// propagate nothing back to the host's (`/` made a recursive slave: the
/// host's unmounts still reach it, its own mounts stay its own).
pub fn enter_private_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::Other(format!("unshare the mount namespace: {e}")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::io("make rslave", Path::new("/"), e.into()))
}

/// Unmounts `target` if something is mounted there; absent or not mounted is fine.
pub fn unmount_if_mounted(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("unmount", target, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_elf() {
        let me = fs::read("/proc/self/exe").unwrap();
        // Test binaries are dynamically linked against glibc.
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }
}
