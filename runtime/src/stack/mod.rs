//! Fiber stacks: arenas, guard pages, per-thread pools, trimming, and the overflow report.
//!
//! # Shape
//!
//! A stack is a *slot* of an *arena*. An arena is one anonymous `mmap`
//! (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, `PROT_READ | PROT_WRITE`, `MADV_NOHUGEPAGE`)
//! that holds slots of ONE stack size. Each slot is a guard page followed by the stack:
//!
//! ```text
//!  arena (one mmap, one kernel mapping when guards are MADV_GUARD_INSTALL markers)
//!  ┌──────────────────────┬──────────────────────┬─────┬──────────────────────┐
//!  │ slot 0               │ slot 1               │ ... │ slot n-1             │
//!  └──────────────────────┴──────────────────────┴─────┴──────────────────────┘
//!  low addresses                                                  high addresses
//!
//!  one slot (slot_size = page + size)
//!  ┌───────┬──────────────────────────────────────────────────────────────────┐
//!  │ guard │ stack: grows down from top ◀──────────────────────────────────── │
//!  └───────┴──────────────────────────────────────────────────────────────────┘
//!  ▲       ▲                                 ▲                                 ▲
//!  guard.0 bottom = guard.1       top - TRIM_DEPTH (trim threshold)     top = bottom + size
//!                                                         (= next slot's guard, or arena end)
//! ```
//!
//! * The guard page is installed with `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+), which puts
//!   a marker in the page table and does **not** split the mapping: a million stacks cost a
//!   handful of kernel mappings (`vm.max_map_count` is 65530 on a stock kernel). On `EINVAL` the
//!   guard falls back to `mprotect(PROT_NONE)`, which costs two mappings per stack; the fallback
//!   is remembered process-wide (`guard.rs`). When a mapping cannot be made because of the map
//!   count, the error says so and shows the limit.
//! * Arenas are sized geometrically per stack size: the first holds about 4 MiB of slots, each
//!   next one twice as many, up to 1 GiB per arena (at least one slot). So a size class needs
//!   few arenas (200,000 stacks of 16 KiB take 11, which the kernel often merges into fewer
//!   mappings still), and a program with few fibers reserves only a few MiB of address space
//!   (committed memory is only what the fibers touch). See `arena.rs`.
//! * Slots are carved lazily (guard installed when a slot is first handed out), so a fresh arena
//!   costs one `mmap` + one `madvise`, and each new slot one `madvise`.
//! * **Arenas live for the process**, like Go's stack spans: a slot returns to a free list, never
//!   to the kernel. What a returned stack had committed is given back by *trimming*.
//!
//! # Lifecycle and ownership
//!
//! ```text
//!  acquire(size):  thread pool ──(empty)──▶ global free list ──(empty)──▶ carve a slot
//!                      ▲                          ▲                       (new arena if full)
//!  release(stack): trim if deep ─▶ thread pool ─(over cap: oldest half)─┘
//!  drop(Stack):    trim if deep ─────────────────▶ global free list
//!  thread exit:    the thread's pool ────────────▶ global free list
//! ```
//!
//! * A [`Stack`] owns its slot exclusively from [`acquire`] until [`release`] or its `Drop`;
//!   nothing else reads or writes the slot's memory in between. It is `Send` (a slot is plain
//!   memory) and not `Clone`.
//! * A free slot is owned by exactly one of: one thread's pool (`pool.rs`, a `thread_local`, so
//!   only that thread touches it), or the global free list (a [`crate::loom::Mutex`] in
//!   `arena.rs`), which also owns the arenas and the carving cursor.
//!
//! # Thread safety
//!
//! The fast path (`acquire` served by the thread's pool, `release` into it) touches only
//! thread-local data: no lock, no atomic read-modify-write, no syscall. It publishes the pool's
//! length with one relaxed store to a per-thread counter that [`stats`] sums (the counters are
//! listed in a second mutex, taken when a thread first pools a stack, at its exit, and by
//! `stats`). Everything else shared (free lists, arenas, totals) sits behind one mutex, taken
//! on a pool miss (to take a batch of up to 16 stacks), when a pool overflows (to hand back
//! half of it), on thread exit, and by `Drop` and `stats`; no code holds both mutexes at once.
//! A slot moves between owners only by value (an address handed from one owner's container to
//! another's, under that container's protection), so no slot is ever owned twice, and a slot's
//! memory is only touched by its current owner (`trim` runs before the slot is handed on).
//!
//! # Trimming
//!
//! A released stack whose size exceeds `TRIM_DEPTH` (64 KiB) is checked for deep use by
//! reading 8 words spread over the page just below `top - 64 KiB`; fresh anonymous pages read as
//! zero. If any is non-zero, `madvise(MADV_DONTNEED)` drops everything below the threshold, so a
//! pooled stack keeps at most 64 KiB committed. See `trim.rs` for the limits of the heuristic.
//!
//! # Overflow
//!
//! [`overflow`] installs the SIGSEGV/SIGBUS handler that turns a hit on the running fiber's
//! guard page into `fiber '<name>' has overflowed its stack (<size> bytes)` and an abort.

use std::io;
use std::mem::ManuallyDrop;
use std::num::NonZeroUsize;

mod altstack;
mod arena;
mod guard;
pub mod overflow;
mod pool;
mod trim;

#[cfg(test)]
mod tests;

/// The smallest stack a fiber can have (before rounding up to whole pages).
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// The stack size a fiber gets unless told otherwise: reserved, committed only as it is touched.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// The largest stack a fiber can have.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// Rounds `requested` up to whole pages.
///
/// Returns an [`io::ErrorKind::InvalidInput`] error when `requested` is below
/// [`MIN_STACK_SIZE`] or above [`MAX_STACK_SIZE`].
pub fn round_stack_size(requested: usize) -> io::Result<usize> {
    if requested < MIN_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fiber stack size of {requested} bytes is below the minimum of \
                 {MIN_STACK_SIZE} bytes"
            ),
        ));
    }
    if requested > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fiber stack size of {requested} bytes is above the maximum of \
                 {MAX_STACK_SIZE} bytes"
            ),
        ));
    }
    let page = guard::page_size();
    // MAX_STACK_SIZE is a multiple of any page size, so this neither overflows nor exceeds it.
    Ok((requested + page - 1) & !(page - 1))
}

/// Checks that `size` is what [`round_stack_size`] returns (whole pages, within bounds).
fn check_rounded(size: usize) -> io::Result<()> {
    if (MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) && size & (guard::page_size() - 1) == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fiber stack size of {size} bytes was not rounded: pass it through \
                 round_stack_size first"
            ),
        ))
    }
}

/// An owned fiber stack: one slot of an arena (see the module docs).
///
/// The memory `[bottom, top)` belongs to the holder of the `Stack` until it is passed to
/// [`release`] or dropped (a dropped stack goes back to the global free list).
#[derive(Debug)]
pub struct Stack {
    /// Lowest usable byte; the guard page is the page just below.
    bottom: NonZeroUsize,
    /// Usable bytes, a whole number of pages.
    size: usize,
}

impl Stack {
    /// One past the highest usable byte; page-aligned, so 16-byte aligned.
    #[inline]
    pub fn top(&self) -> usize {
        self.bottom.get() + self.size
    }

    /// The lowest usable byte (just above the guard page).
    #[inline]
    pub fn bottom(&self) -> usize {
        self.bottom.get()
    }

    /// Usable bytes: `top() - bottom()`, the size given to [`acquire`].
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// `[lo, hi)` of the guard page below the stack (`hi == bottom()`).
    #[inline]
    pub fn guard(&self) -> (usize, usize) {
        let bottom = self.bottom.get();
        (bottom - guard::page_size(), bottom)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the stack is ours (being dropped), a whole slot stack of an arena, and no
        // fiber runs on it (a fiber's owner holds its Stack while it can run).
        unsafe { trim::trim_if_deep(self.bottom.get(), self.top()) };
        arena::give_back(self.size, [self.bottom]);
    }
}

/// A stack of `size` bytes (`size` must come from [`round_stack_size`]): from the calling
/// thread's pool if it has one of that size, else from the process-wide free list, else carved
/// from a new arena.
///
/// Errors: [`io::ErrorKind::InvalidInput`] for a size that was not rounded; an error that
/// explains the cause (out of memory, or `vm.max_map_count` reached, with its value) when the
/// kernel refuses a new arena or guard page.
#[inline]
pub fn acquire(size: usize) -> io::Result<Stack> {
    if let Some(bottom) = pool::pop(size) {
        return Ok(Stack { bottom, size });
    }
    acquire_slow(size)
}

#[cold]
#[inline(never)]
fn acquire_slow(size: usize) -> io::Result<Stack> {
    check_rounded(size)?;
    let bottom = pool::refill_and_pop(size)?;
    Ok(Stack { bottom, size })
}

/// Gives a stack back to the calling thread's pool (bounded: when the pool holds 64 stacks of
/// that size, the oldest half goes to the global free list).
///
/// A stack that was used deeply is trimmed (`MADV_DONTNEED` of everything more than 64 KiB
/// below its top) before it is pooled; see the module docs.
#[inline]
pub fn release(stack: Stack) {
    let stack = ManuallyDrop::new(stack);
    let (bottom, size) = (stack.bottom, stack.size);
    // SAFETY: the stack was passed to us by value: it is ours, a whole slot stack of an arena,
    // and no fiber runs on it.
    unsafe { trim::trim_if_deep(bottom.get(), bottom.get() + size) };
    if !pool::push(size, bottom) {
        // The thread is exiting and its pool is gone.
        arena::give_back(size, [bottom]);
    }
}

/// Counters for metrics. Each is exact when no other thread is acquiring or releasing stacks at
/// the same time; under concurrency they are a consistent-enough snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks handed out by [`acquire`] and not yet released or dropped.
    pub in_use: usize,
    /// Stacks waiting for reuse: in threads' pools plus in the global free list.
    pub pooled: usize,
    /// Arenas mapped (each one `mmap`; arenas are never unmapped).
    pub arenas: usize,
    /// Address space reserved by all arenas, in bytes (committed memory is much less).
    pub reserved_bytes: usize,
}

/// Bytes of stack memory currently resident in RAM across every arena of the process (pages
/// fibers have touched and that were not trimmed since). Inspects each arena with `mincore`,
/// so call it for metrics, not on a hot path.
pub fn committed_bytes() -> usize {
    arena::committed_bytes()
}

/// Current counters of the stack allocator.
pub fn stats() -> StackStats {
    let totals = arena::totals();
    let pooled = totals.free + pool::pooled_in_threads();
    StackStats {
        in_use: totals.carved.saturating_sub(pooled),
        pooled,
        arenas: totals.arenas,
        reserved_bytes: totals.reserved_bytes,
    }
}
