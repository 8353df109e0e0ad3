//! End-to-end tests: real berthd, real berth-shim, real runc, real
//! namespaces, a real busybox rootfs. Run as root.

// Tests may panic on setup failures: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod imgutil;
mod netutil;
mod util;

mod attach;
mod bad_input;
mod cli;
mod containerd;
mod daemon;
mod events;
mod exec;
mod exited;
mod images;
mod lifecycle;
mod logs;
mod mountns;
mod net;
mod oom;
mod policy;
mod pull;
mod reboot;
mod restart;
mod run;
mod scripting;
mod shim_limits;
mod stats;
mod stdio;
mod tokenauth;
mod verbs;
