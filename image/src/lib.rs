//! berth's image store: content-addressed, verified, safely unpacked
//! layers stacked with overlayfs; `docker save` / OCI layout import;
//! registry pulls through oci-client.

pub mod auth;
pub mod certs;
pub mod digest;
mod error;
pub mod import;
pub mod login;
pub mod model;
pub mod pull;
pub mod reference;
pub mod runconfig;
pub mod store;
pub mod unpack;

pub use error::{Error, Result};
pub use store::Store;

use std::path::{Path, PathBuf};

/// Where images live by default: `/var/lib/berth` for the default
/// runtime root, else the runtime root itself (so a test's or a user's
/// own root stays one directory).
pub fn default_data_root(root: &Path) -> PathBuf {
    if root == Path::new(runtime_core::layout::DEFAULT_ROOT) {
        PathBuf::from("/var/lib/berth")
    } else {
        root.to_path_buf()
    }
}
