//! Links berth-shim as a position-dependent executable.
//!
//! A PIE has its read-only-after-relocation data (vtables, string tables)
//! patched by the loader at start, which makes those pages private to each
//! process: ~20 KiB per shim, times every container on the machine. Linked
//! at a fixed address they stay clean pages of the file, shared by all shims.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
