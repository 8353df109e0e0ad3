//! Links containerd-shim-berth-v2 as a position-dependent executable,
//! for the same reason as berth-shim (see shim/build.rs).
//!
//! A PIE has its read-only-after-relocation data (vtables, string tables)
//! patched by the loader at start, which makes those pages private to each
//! process: ~20 KiB per shim, times every container on the machine. Linked
//! at a fixed address they stay clean pages of the file, shared by all shims.
//! The price is no address randomization for the shim's own code (its
//! libraries, heap and stack keep it); only root reaches its sockets.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
