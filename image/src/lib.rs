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
