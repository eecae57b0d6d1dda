//! The context switch: the only assembly in filament, one small file per architecture.
//!
//! The switch is *asymmetric* (DESIGN.md decision 1). A resumer enters a fiber with a `call`
//! (x86_64) / `bl` (aarch64) and the fiber comes back with the matching `ret`, so the CPU's
//! return-address predictor stays in step and both directions predict perfectly. Only the
//! registers the compiler cannot be told about are saved by hand (the stack pointer, the frame
//! pointer, the base register LLVM reserves, the return address); every other register is
//! declared clobbered, so LLVM saves exactly those that are live across the switch.
//!
//! The floating-point control state (MXCSR and the x87 control word on x86_64, FPCR on aarch64)
//! is **not** saved: Rust code must never run with a non-default FP environment (changing it is
//! undefined behaviour as far as LLVM's optimisations are concerned), so every fiber and every
//! worker already shares the default one. Saving it would cost ~7 ns per switch for nothing.
//!
//! # The fiber stack at rest
//!
//! Every fiber stack has a fixed *link area* at its base (the highest addresses), whose
//! address — `base`, 16-byte aligned — is what the functions below take:
//!
//! ```text
//!   base + ...   closure payload (read once, when the fiber starts; owned by crate::fiber)
//!   base - 16    PARENT LINK: the resumer's stack pointer, rewritten by every resume
//!   base - 48 .. base - 16: entry function, its argument and the address of `fiber_start`,
//!                written by `init_stack` (exact slots per architecture, pictured in each file)
//! ```
//!
//! A suspended fiber's saved stack pointer points at its resume address, with the fiber's
//! frame pointer and base register just above it. The resumer's saved stack pointer (the parent
//! link) points at its own return address, likewise followed by its frame pointer and base
//! register. The bottom frame of every fiber (`fiber_start`) carries hand-written CFI that
//! computes the caller's frame from the parent link, so unwinders and debuggers (std's
//! `Backtrace`, gdb, perf with DWARF) walk from fiber code straight into the worker that
//! resumed it.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("filament supports x86_64 and aarch64 only");

/// Offset below a fiber's `base` of the parent link slot.
pub const PARENT_LINK: usize = 16;

/// Bytes at the base of a fiber stack used by the link area (below `base`).
pub const LINK_AREA: usize = 48;

/// The first function a fiber runs: `arg` is the value passed to the first `resume`, `obj` the
/// pointer given to [`init_stack`]. It must never return; it ends with [`exit`].
pub type EntryFn = unsafe extern "C" fn(arg: usize, obj: *mut u8) -> !;

/// What `resume` reports: the fiber suspended (its new stack pointer, which the next `resume`
/// needs) or finished (the stack pointer is gone), with the value it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switched {
    /// The fiber called [`suspend`] with this value; resume it again with `sp`.
    Suspended {
        /// The fiber's saved stack pointer.
        sp: usize,
        /// The value passed to `suspend`.
        value: usize,
    },
    /// The fiber called [`exit`] with this value; it must not be resumed again.
    Exited {
        /// The value passed to `exit`.
        value: usize,
    },
}

/// The stack pointer the worker had when it last resumed the fiber whose link area is at `base`:
/// the native stack is free below it while the fiber runs.
///
/// # Safety
/// `base` must be the link-area base of the fiber currently running on this thread.
#[inline(always)]
pub unsafe fn parent_stack_pointer(base: usize) -> usize {
    // SAFETY: the caller guarantees `base` belongs to the running fiber, whose link slot was
    // written by the resume that started this run.
    unsafe { ((base - PARENT_LINK) as *const usize).read() }
}

/// Asks the CPU to start loading the cache line holding `addr` (a hint: it never faults, whatever
/// the address, and has no effect on program state).
///
/// The scheduler uses it to fetch a fiber's saved registers and top frames while the fiber
/// before it still runs: with thousands of fibers, a resumed stack is usually cold, and the
/// first load after the switch (the resume address) would otherwise wait for memory.
#[inline(always)]
pub fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, which every x86_64 CPU has; a prefetch never faults and
    // writes nothing.
    unsafe {
        core::arch::asm!("prefetcht0 [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a base AArch64 instruction; a prefetch never faults and writes nothing.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
}

/// Cache line size assumed by [`prefetch_range`] (64 bytes on the x86_64 and AArch64 cores we
/// run on; a wrong guess only changes how many lines are fetched).
pub const CACHE_LINE: usize = 64;

/// [`prefetch`] of each cache line in `bytes` bytes from `start` (a hint, as `prefetch`).
#[inline(always)]
pub fn prefetch_range(start: *const u8, bytes: usize) {
    for offset in (0..bytes).step_by(CACHE_LINE) {
        prefetch(start.wrapping_add(offset));
    }
}
