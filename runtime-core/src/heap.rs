//! Handing freed heap memory back to the kernel after a burst of work.
//!
//! glibc returns only the free top of its heap by itself; pages freed in
//! the middle (between blocks still live) stay resident until
//! `malloc_trim` releases them. A long-lived process that just finished a
//! burst (a shim after start-up, berthd after restoring thousands of
//! containers) calls [`trim`] once it has gone quiet.

/// Releases every whole free page of the heap to the kernel.
#[cfg(target_env = "gnu")]
pub fn trim() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists
    // under its own locks; it takes no pointer of ours and is safe to call
    // at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries: nothing to do here.
#[cfg(not(target_env = "gnu"))]
pub fn trim() {}
