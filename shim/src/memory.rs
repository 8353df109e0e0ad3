//! Giving start-up memory back before the shim goes idle.
//!
//! A shim spends its life waiting; what it touched while starting or while
//! serving a burst of requests (argument parsing, the runc call, JSON)
//! would otherwise stay resident for the container's whole life, in every
//! shim. After a quiet second the event loop hands freed heap pages and
//! the stack below its frame back to the kernel; they come back zeroed if
//! ever touched again.

/// How much of the stack below the caller's frame is kept resident: room
/// for the event loop's deepest calls without a fresh page fault each time.
const STACK_KEEP: usize = 4 * 1024;

/// Returns freed heap and unused stack pages to the kernel.
pub fn trim() {
    // Stack first: finding it allocates, and the heap trim should see that freed.
    trim_stack();
    runtime_core::heap::trim();
}

/// Drops the pages of the main stack below the current frame (less a
/// margin). They are dead: the stack grows down and nothing lives below
/// the stack pointer of a running frame but the next calls' frames.
#[inline(never)]
fn trim_stack() {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let Some(low) = stack_low() else { return };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    // madvise rounds the length up to whole pages: end must be aligned.
    let end = (sp.saturating_sub(STACK_KEEP)) & !(page - 1);
    if end <= low {
        return;
    }
    // SAFETY: [low, end) lies inside this thread's stack mapping, strictly
    // below the live frames (STACK_KEEP under this one); no other thread
    // exists and a signal handler can only run after the call returns, on
    // pages the kernel then faults in fresh.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// The low end of the `[stack]` mapping, read from /proc/self/maps on the
/// first trim only: every shim trims after each burst of requests, and at
/// a supervisor restart thousands of them do so within a second, each
/// read costing a walk of its mappings. The kernel only ever moves a
/// stack mapping's low end down (as the stack grows), so a low end read
/// earlier still lies inside the mapping: at worst a few pages grown
/// since are not trimmed.
fn stack_low() -> Option<usize> {
    static LOW: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *LOW.get_or_init(read_stack_low)
}

fn read_stack_low() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split_whitespace().next()?;
    let (low, _) = range.split_once('-')?;
    usize::from_str_radix(low, 16).ok()
}
