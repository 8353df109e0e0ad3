//! `delete`: what containerd runs when a shim is gone (killed, or
//! start failed) to clean the task up and learn how it ended. It kills and
//! removes what runc still has, unmounts the rootfs, and answers with the
//! exit the dead shim recorded on disk; only when there is none (the shim
//! died before the container) does it report 128+SIGKILL.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use runtime_core::exit::ExitRecord;
use runtime_core::runc::Runc;

use crate::flags::Flags;
use crate::paths::{self, Bundle};
use crate::publish::to_timestamp;

pub fn delete(flags: &Flags) -> anyhow::Result<()> {
    crate::start::drain_stdin();
    paths::check_id("task id", &flags.id).map_err(anyhow::Error::msg)?;
    let dir = match &flags.bundle {
        Some(b) => PathBuf::from(b),
        None => std::env::current_dir().context("current directory (the bundle)")?,
    };
    let bundle = Bundle::new(dir);
    let runc = Runc {
        binary: "runc".into(),
        root: bundle.runc_root(),
        log: bundle.runc_log(),
    };
    if runc.root.join(&flags.id).exists() {
        let mark = runc.log_mark();
        let status = runc
            .delete(&flags.id, true)
            .status()
            .context("run runc delete --force")?;
        if !status.success() {
            eprintln!("{}", runc.error_since(mark, "runc delete --force failed"));
        }
    }
    if bundle.mounted_marker().exists() {
        crate::mount::unmount_rootfs(&bundle);
    }
    if let Ok(addr) = std::fs::read_to_string(bundle.address()) {
        if let Some(sock) = addr.trim().strip_prefix("unix://") {
            if sock.starts_with(paths::SOCKET_DIR) {
                let _ = std::fs::remove_file(sock);
            }
        }
    }
    let mut r = DeleteResponse::new();
    match runtime_core::atomic::read_json::<ExitRecord>(&bundle.exit_record("")) {
        Ok(rec) => {
            r.pid = rec.pid as u32;
            r.exit_status = u32::try_from(rec.exit_code).unwrap_or(255);
            let at = humantime::parse_rfc3339_weak(&rec.finished_at)
                .unwrap_or_else(|_| std::time::SystemTime::now());
            r.exited_at = Some(to_timestamp(at)).into();
        }
        Err(_) => {
            r.pid = crate::shim::read_pid(&bundle.init_pid()).unwrap_or(0) as u32;
            r.exit_status = 128 + libc::SIGKILL as u32;
            r.exited_at = Some(crate::publish::now()).into();
        }
    }
    let bytes = r.write_to_bytes().context("encode the delete response")?;
    std::io::stdout()
        .write_all(&bytes)
        .context("write the delete response")?;
    Ok(())
}
