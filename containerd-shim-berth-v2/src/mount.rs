//! The rootfs mounts containerd passes with Create (a snapshot: overlay or
//! bind), mounted at `<bundle>/rootfs` in order, and unmounted on delete.
//! `ctr run --rootfs DIR` passes none: the bundle's config names DIR.

use nix::mount::{mount, MsFlags};

use crate::error::{Error, Result};
use crate::paths::Bundle;

pub use containerd_shim_protos::api::Mount;

/// Splits fstab-style options into mount flags and the data string.
fn options(opts: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, false),
            "rw" => (MsFlags::MS_RDONLY, true),
            "bind" => (MsFlags::MS_BIND, false),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, false),
            "nosuid" => (MsFlags::MS_NOSUID, false),
            "nodev" => (MsFlags::MS_NODEV, false),
            "noexec" => (MsFlags::MS_NOEXEC, false),
            "sync" => (MsFlags::MS_SYNCHRONOUS, false),
            "noatime" => (MsFlags::MS_NOATIME, false),
            "relatime" => (MsFlags::MS_RELATIME, false),
            "private" => (MsFlags::MS_PRIVATE, false),
            "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, false),
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        if clear {
            flags.remove(set);
        } else {
            flags.insert(set);
        }
    }
    (flags, data.join(","))
}

/// Mounts `mounts` on the bundle's rootfs; on failure unmounts what it did.
pub fn mount_rootfs(bundle: &Bundle, mounts: &[Mount]) -> Result<()> {
    let target = bundle.rootfs();
    std::fs::create_dir_all(&target)
        .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
    runtime_core::atomic::write_until_reboot(&bundle.mounted_marker(), b"")?;
    for m in mounts {
        let (flags, data) = options(&m.options);
        let data = (!data.is_empty()).then_some(data.as_str());
        let fstype = (!m.type_.is_empty()).then_some(m.type_.as_str());
        if let Err(e) = mount(Some(m.source.as_str()), &target, fstype, flags, data) {
            unmount_rootfs(bundle);
            return Err(Error::InvalidArgument(format!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.type_,
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmounts everything on the bundle's rootfs (stacked mounts too).
pub fn unmount_rootfs(bundle: &Bundle) {
    let target = bundle.rootfs();
    for _ in 0..16 {
        let before = std::fs::metadata(&target).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        if let Err(e) = runtime_core::rootfs::unmount_if_mounted(&target) {
            log::warn!("{e}");
            break;
        }
        let after = std::fs::metadata(&target).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        if before.ok() == after.ok() {
            break;
        }
    }
    let _ = std::fs::remove_file(bundle.mounted_marker());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "lowerdir=/a:/b", "upperdir=/u", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = options(&opts);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u");
    }
}
