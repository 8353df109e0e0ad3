//! Where this shim keeps things. containerd gives each task a bundle
//! directory (`<state>/io.containerd.runtime.v2.task/<ns>/<id>`, the
//! shim's working directory at `start`); everything per task lives inside
//! it, so containerd's removal of the bundle removes it, and `delete` finds
//! it again from the bundle alone after the shim died. Only the sockets
//! live elsewhere: a bundle path can be longer than sun_path allows.

use std::path::{Path, PathBuf};

/// Directory of the shims' sockets (0700): short, so any path fits sun_path.
pub const SOCKET_DIR: &str = "/run/berth-v2";

/// The per-task paths inside a bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Bundle { dir: dir.into() }
    }
    /// runc's `--root` for this task: its state dir is `runc/<id>`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    pub fn runc_log(&self) -> PathBuf {
        self.dir.join("runc.log")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
    pub fn shim_pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// containerd reads the shim's address from here when it restarts.
    pub fn address(&self) -> PathBuf {
        self.dir.join("address")
    }
    /// The fifo containerd opened for the shim's own log.
    pub fn log_fifo(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// The exit record of a process ("" is the init), written before
    /// anyone is told of the exit.
    pub fn exit_record(&self, exec_id: &str) -> PathBuf {
        if exec_id.is_empty() {
            self.dir.join("exit")
        } else {
            self.dir.join(format!("exit.{exec_id}"))
        }
    }
    /// An exec's process spec (runc exec --process).
    pub fn exec_spec(&self, exec_id: &str) -> PathBuf {
        self.dir.join(format!("exec.{exec_id}.json"))
    }
    /// Written when this shim mounted the rootfs, so `delete` unmounts it.
    pub fn mounted_marker(&self) -> PathBuf {
        self.dir.join("rootfs.mounted")
    }
}

/// The socket of the shim for (containerd address, namespace, id). A hash,
/// so the name is short and the same `start` finds the same path.
pub fn socket(address: &str, namespace: &str, id: &str) -> PathBuf {
    let h = fnv1a(&[address.as_bytes(), namespace.as_bytes(), id.as_bytes()]);
    Path::new(SOCKET_DIR).join(format!("{h:016x}.sock"))
}

/// A console socket for one runc call of this shim (unique per process).
pub fn console_socket(shim_socket: &Path, exec_id: &str) -> PathBuf {
    let h = fnv1a(&[
        shim_socket.as_os_str().as_encoded_bytes(),
        exec_id.as_bytes(),
    ]);
    Path::new(SOCKET_DIR).join(format!("{h:016x}.pty"))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// containerd's identifier rule (ids and exec ids): 1-76 characters of
/// `[A-Za-z0-9_.-]`, starting with a letter or digit. Checked here too,
/// since an exec id becomes part of a file name.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > 76 || !first_ok || !id.chars().all(ok_char) {
        return Err(format!(
            "invalid {what} {id:?}: 1-76 characters of [A-Za-z0-9_.-], starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_short_and_distinct() {
        let a = socket("/run/containerd/containerd.sock", "default", "c1");
        let b = socket("/run/containerd/containerd.sock", "default", "c2");
        let c = socket("/tmp/x/containerd.sock", "default", "c1");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            socket("/run/containerd/containerd.sock", "default", "c1")
        );
        assert!(a.as_os_str().len() < 108);
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(socket("x", "ab", "c"), socket("x", "a", "bc"));
    }

    #[test]
    fn ids_follow_containerds_rule() {
        assert!(check_id("exec id", "exec-1.a_b").is_ok());
        for bad in ["", "../x", ".x", "a/b", &"a".repeat(77)] {
            let e = check_id("exec id", bad).unwrap_err();
            assert!(e.starts_with("invalid exec id"), "{e}");
        }
    }
}
