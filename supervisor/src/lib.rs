//! berthd (the supervisor daemon) and berth (its CLI).
//!
//! The binaries in `bin/` are thin: `daemon` holds what berthd does,
//! `cli` one file per verb, `rpc` the client both use to talk JSON frames
//! to berthd or to a shim, and `api` the CLI <-> berthd message types.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod daemon;
pub mod event;
pub mod policy;
pub mod rpc;
pub mod stats;
