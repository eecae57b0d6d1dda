//! The alternate signal stack that the overflow handler runs on ([`ensure_altstack`]).
//!
//! A fiber that overflowed has no stack left to run a signal handler on, so the kernel must
//! switch to the thread's `sigaltstack`. std gives one to the threads it spawns (and to the
//! main thread when it installs its own SIGSEGV handler); a foreign thread may have none. A
//! thread that gets one from here keeps it in a `thread_local` whose destructor first disables
//! it (if it is still the thread's alternate stack) and then unmaps it.

use std::cell::Cell;
use std::mem;
use std::ptr;

use super::guard;

/// Bytes of an alternate signal stack installed by [`ensure_altstack`], at least (the kernel's
/// minimum for this CPU, times four, may be more). Only touched pages are committed.
pub(super) const ALTSTACK_SIZE: usize = 64 * 1024;

/// `getauxval` key of the kernel's minimum signal stack size (`AT_MINSIGSTKSZ`).
const AT_MINSIGSTKSZ: libc::c_ulong = 51;

thread_local! {
    /// Whether `ensure_altstack` already ran on this thread.
    static ALTSTACK_CHECKED: Cell<bool> = const { Cell::new(false) };
    /// The alternate signal stack this module installed on this thread, freed at thread exit.
    static OWNED_ALTSTACK: OwnedAltStack = const {
        OwnedAltStack { base: Cell::new(0), len: Cell::new(0) }
    };
}

/// Per thread, idempotent: makes sure the calling thread has an alternate signal stack, so
/// the overflow handler can run when the fiber's stack is exhausted.
///
/// std gives one to the threads it spawns (and to the main thread); a thread without one gets
/// a 64 KiB stack (plus a guard page) that is disabled and unmapped when the thread exits.
/// If the mapping fails the thread simply stays without one.
pub fn ensure_altstack() {
    if ALTSTACK_CHECKED.get() {
        return;
    }
    ALTSTACK_CHECKED.set(true);
    // SAFETY: stack_t is plain data; querying writes only `current`.
    let has_one = unsafe {
        let mut current: libc::stack_t = mem::zeroed();
        libc::sigaltstack(ptr::null(), &mut current) == 0
            && current.ss_flags & libc::SS_DISABLE == 0
    };
    if !has_one {
        // Err only during thread exit, when the slot is already destroyed: nothing to do then.
        let _ = OWNED_ALTSTACK.try_with(OwnedAltStack::install);
    }
}

/// An alternate signal stack mapped by this module: `[base, base + page)` is a guard page, the
/// rest is the stack. `base == 0` when none was installed.
struct OwnedAltStack {
    base: Cell<usize>,
    len: Cell<usize>,
}

impl OwnedAltStack {
    fn install(&self) {
        let page = guard::page_size();
        // SAFETY: getauxval has no preconditions (0 when the key is unknown).
        let kernel_min = unsafe { libc::getauxval(AT_MINSIGSTKSZ) } as usize;
        let size = (ALTSTACK_SIZE.max(4 * kernel_min).max(libc::SIGSTKSZ) + page - 1) & !(page - 1);
        let len = page + size;
        let Ok(base) = guard::map_arena(len) else {
            return;
        };
        // A missing guard only loses overflow detection on the signal stack itself.
        // SAFETY: the first page of our fresh mapping holds nothing.
        let _ = unsafe { guard::install_guard(base, page) };
        let stack = libc::stack_t {
            ss_sp: (base + page) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: [base + page, base + len) is ours and stays mapped until `drop` disables it.
        if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } != 0 {
            // SAFETY: the mapping is ours and unused.
            unsafe { libc::munmap(base as *mut libc::c_void, len) };
            return;
        }
        self.base.set(base);
        self.len.set(len);
    }
}

impl Drop for OwnedAltStack {
    fn drop(&mut self) {
        let (base, len) = (self.base.get(), self.len.get());
        if base == 0 {
            return;
        }
        let stack = base + guard::page_size();
        // SAFETY: stack_t is plain data; the query writes only `current`. Disabling the
        // alternate stack outside a handler is always allowed.
        let still_ours = unsafe {
            let mut current: libc::stack_t = mem::zeroed();
            libc::sigaltstack(ptr::null(), &mut current) == 0
                && current.ss_flags & libc::SS_DISABLE == 0
                && current.ss_sp as usize == stack
        };
        if still_ours {
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: we are not running on the alternate stack (this is a TLS destructor).
            if unsafe { libc::sigaltstack(&disable, ptr::null_mut()) } != 0 {
                return; // Still in use somehow: leak it rather than unmap a live stack.
            }
        }
        // SAFETY: the mapping is ours and no longer the thread's alternate stack.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
    }
}
