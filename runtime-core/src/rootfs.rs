//! berth's default root filesystem, built once from the host's static
//! busybox, and the per-container overlay that keeps it read-only.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

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

/// Overlay directories for one container.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

impl Overlay {
    /// Creates the directories and mounts the overlay on `target`.
    pub fn mount(&self) -> Result<()> {
        for d in [&self.upper, &self.work, &self.target] {
            fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
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
