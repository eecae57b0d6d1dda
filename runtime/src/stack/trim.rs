//! Trimming: giving back the memory a deeply used stack committed, before the stack is reused.
//!
//! # Heuristic
//!
//! Stacks are committed page by page as a fiber touches them, and a pooled stack would keep
//! whatever its deepest user committed. On release, a stack larger than [`TRIM_DEPTH`] is
//! checked for deep use by reading [`PROBES`] words spread evenly over the page just below the
//! threshold `top - TRIM_DEPTH` (one word every 512 bytes). Fresh anonymous pages read as zero,
//! and so do pages trimmed before, so a non-zero word proves the fiber wrote below the
//! threshold; then `madvise(MADV_DONTNEED)` drops `[bottom, threshold)` and the next reader of
//! those pages gets fresh zero pages. A pooled stack therefore keeps at most `TRIM_DEPTH`
//! committed (its hot top part, which the next fiber reuses without page faults).
//!
//! Cost: for stacks of `TRIM_DEPTH` or less, nothing. Otherwise 8 loads and no syscall for a
//! shallow stack (the loads stay in cache when a stack is reused in a loop; reading an untouched
//! page maps the shared zero page once, with no memory committed); one `madvise` for a deep one.
//!
//! Limits: a fiber that went deep but left all 8 probe words zero is not trimmed: a frame that
//! spans the probe page with zero-filled or never-written locals (a large `[0u8; N]` buffer, a
//! frame whose stack probes only touched the page), or a stack that was committed below the
//! probe page without touching the probe page at all (a single frame larger than a page that
//! skips it). Such a stack keeps its memory until a later deep user writes the probe page; it is
//! a memory cost, never a correctness problem. A non-zero probe is never wrong: the page was
//! written, so something below the threshold is committed.

/// Depth below a stack's top that is kept committed when the stack is reused.
pub(super) const TRIM_DEPTH: usize = 64 * 1024;

/// Words read below the threshold to detect deep use.
pub(super) const PROBES: usize = 8;

/// Distance between probe words: together they cover 4 KiB just below the threshold.
const PROBE_STRIDE: usize = 512;

/// Trims the stack `[bottom, top)` if it was used deeply (see the module docs).
///
/// # Safety
/// `[bottom, top)` must be the whole of a stack from an arena (page-aligned bounds, read-write
/// private anonymous memory) that the caller owns, with no fiber running on it: its memory
/// below `top - TRIM_DEPTH` may be replaced by zero pages.
#[inline]
pub(super) unsafe fn trim_if_deep(bottom: usize, top: usize) {
    if top - bottom <= TRIM_DEPTH {
        return;
    }
    let threshold = top - TRIM_DEPTH;
    // SAFETY: the stack is larger than TRIM_DEPTH and a whole number of pages, so at least
    // TRIM_DEPTH + 4 KiB: [threshold - 4 KiB, threshold) lies inside it; the caller owns it.
    if unsafe { used_below(threshold) } {
        // SAFETY: [bottom, threshold) is the deep part of the caller's unused stack.
        unsafe { trim(bottom, threshold) };
    }
}

/// True when any probe word in the 4 KiB just below `threshold` is non-zero.
///
/// # Safety
/// `[threshold - 4096, threshold)` must be readable memory that nobody writes concurrently.
#[inline]
unsafe fn used_below(threshold: usize) -> bool {
    let mut any = 0usize;
    for i in 0..PROBES {
        let word = (threshold - (i + 1) * PROBE_STRIDE) as *const usize;
        // SAFETY: the word is aligned and inside the range the caller vouches for. The read is
        // volatile: the bytes were written by code the compiler knows nothing about (another
        // fiber's frames, reached through a context switch), or are the kernel's zero page.
        any |= unsafe { word.read_volatile() };
    }
    any != 0
}

/// Drops the pages of `[bottom, threshold)` (both page-aligned).
///
/// # Safety
/// The range must be private anonymous memory owned by the caller, whose contents nobody
/// needs any more (they read as zero afterwards).
#[cold]
#[inline(never)]
unsafe fn trim(bottom: usize, threshold: usize) {
    // SAFETY: guaranteed by the caller; MADV_DONTNEED on private anonymous memory only
    // replaces its pages with zero pages on next touch. Guard markers (below `bottom`) are not
    // in the range, and would survive it anyway.
    let rc = unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            threshold - bottom,
            libc::MADV_DONTNEED,
        )
    };
    // Failure only means the memory stays committed.
    debug_assert_eq!(rc, 0, "madvise(MADV_DONTNEED) of a fiber stack failed");
}

#[cfg(test)]
mod tests {
    use super::super::{acquire, release, round_stack_size};
    use super::*;
    use crate::stack::guard::page_size;

    /// Resident pages of `[lo, hi)` (page-aligned), from `mincore`.
    fn resident_pages(lo: usize, hi: usize) -> usize {
        let page = page_size();
        let mut vec = vec![0u8; (hi - lo) / page];
        // SAFETY: [lo, hi) is mapped (part of an arena, which is never unmapped) and `vec` has
        // one byte per page.
        let rc = unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// Fills `[lo, hi)` of a stack we own with non-zero bytes, as a deep fiber would.
    fn scribble(lo: usize, hi: usize) {
        // SAFETY: the caller owns the stack and [lo, hi) lies inside it.
        unsafe { std::ptr::write_bytes(lo as *mut u8, 0xa5, hi - lo) };
    }

    #[test]
    fn deep_use_is_trimmed() {
        let page = page_size();
        let size = round_stack_size(1024 * 1024).unwrap();
        let stack = acquire(size).unwrap();
        let (bottom, top) = (stack.bottom(), stack.top());
        scribble(bottom, top);
        assert_eq!(resident_pages(bottom, top), size / page);
        release(stack);
        assert_eq!(
            resident_pages(bottom, top - TRIM_DEPTH),
            0,
            "deep part dropped"
        );
        assert_eq!(
            resident_pages(top - TRIM_DEPTH, top),
            TRIM_DEPTH / page,
            "top kept"
        );
        // The trimmed stack comes back from this thread's pool, reading as zero below.
        let again = acquire(size).unwrap();
        assert_eq!(again.bottom(), bottom);
        // SAFETY: we own the stack; the probe page lies inside it.
        assert!(!unsafe { used_below(top - TRIM_DEPTH) });
        release(again);
    }

    #[test]
    fn shallow_use_is_kept() {
        let page = page_size();
        let size = round_stack_size(512 * 1024).unwrap();
        let stack = acquire(size).unwrap();
        let (bottom, top) = (stack.bottom(), stack.top());
        scribble(top - 32 * 1024, top);
        release(stack);
        assert_eq!(resident_pages(top - 32 * 1024, top), 32 * 1024 / page);
        // Probing may map the shared zero page at the threshold, but nothing deeper.
        assert_eq!(resident_pages(bottom, top - TRIM_DEPTH - 4096), 0);
    }

    #[test]
    fn small_stacks_are_never_probed() {
        let size = round_stack_size(TRIM_DEPTH).unwrap();
        let stack = acquire(size).unwrap();
        let (bottom, top) = (stack.bottom(), stack.top());
        scribble(bottom, top);
        release(stack);
        assert_eq!(resident_pages(bottom, top), size / page_size());
    }
}
