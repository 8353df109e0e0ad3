//! containerd-shim-berth-v2 under a real containerd 1.6, driven with the
//! real `ctr`. Each test starts its own containerd (own root, state dir,
//! socket and config under the test's temp dir; CRI and other unneeded
//! plugins off) with the built shim first on its PATH.

mod cri;
mod harness;
mod tests;
