//! Peer checks for every berth socket: only root or our own user may talk
//! to us, whatever the file mode says.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::geteuid;

/// Returns the peer's uid if it may use the socket, or an error saying why not.
pub fn check<F: AsFd>(sock: &F) -> Result<u32, String> {
    let cred = getsockopt(sock, PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let uid = cred.uid();
    if uid == 0 || uid == geteuid().as_raw() {
        Ok(uid)
    } else {
        Err(format!(
            "peer uid {uid} (pid {}) is not root or the owner",
            cred.pid()
        ))
    }
}
