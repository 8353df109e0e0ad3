//! runtime-core: everything berth's three binaries must agree on.
//!
//! The shim, berthd and the CLI are separate processes that may come from
//! different builds (live upgrade), so the on-disk layout, the wire protocols
//! and the log format live here, in one place, with their version numbers.
#![deny(unsafe_code)]

pub mod atomic;
pub mod attach;
pub mod cgroup;
pub mod console;
pub mod error;
pub mod exit;
pub mod frame;
pub mod heap;
pub mod id;
pub mod layout;
pub mod limits;
pub mod logfmt;
pub mod logread;
pub mod logwrite;
pub mod meta;
pub mod mounts;
pub mod net;
pub mod oom;
pub mod options;
pub mod peercred;
pub mod protocol;
pub mod rootfs;
pub mod runc;
pub mod runopts;
pub mod security;
pub mod shimcmd;
pub mod sockpath;
pub mod spec;
pub mod time;
pub mod user;

pub use error::{Error, Result};
