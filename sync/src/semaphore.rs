//! [`Semaphore`]: a counting semaphore with FIFO handoff.
//!
//! # State word
//!
//! ```text
//!  bit 0     HAS_WAITERS  the waiter list may be non-empty
//!  bits 1..  permits      available permits (unit PERMIT = 2)
//! ```
//!
//! Invariant: while a claimable waiter is linked, `permits == 0` — a release hands permits to
//! waiters (FIFO, one each, HANDOFF) before any is added to the count, so newcomers cannot barge
//! past waiters and a waiter cannot starve.
//!
//! * `try_acquire` / fast `acquire`: CAS `permits - 1` while permits > 0.
//! * slow `acquire`: under the list lock, take a permit if there is one, else CAS `HAS_WAITERS`
//!   into a state with zero permits, link, park.
//! * `add_permits(n)`: fast CAS `permits + n` while `HAS_WAITERS` is clear; else under the list
//!   lock claim up to `n` waiters, handing each one permit, and add the rest to the count
//!   (clearing `HAS_WAITERS` if the list emptied).
//!
//! **No lost wake-up.** A waiter links only after its CAS set `HAS_WAITERS` on a zero-permit
//! state, so a concurrent release's fast CAS fails and its slow path (list lock) finds the
//! waiter. **Timeouts / cancellation.** A waiter that aborts in time unlinks itself (and clears
//! `HAS_WAITERS` if it was the last); one that lost the race to a handoff keeps the permit
//! (`acquire_timeout` then succeeds) or, when unwinding, gives it back.

use std::fmt;
use std::ptr;
use std::time::{Duration, Instant};

use filament_runtime::loom::{AtomicUsize, ListLock, Ordering::*};

use crate::waiter::{deadline_after, Context, Kind, Node, Site, WaitList, Wakeups};

const HAS_WAITERS: usize = 1;
const PERMIT: usize = 2;

/// A counting semaphore usable from fibers and OS threads. Waiters are served in FIFO order.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use filament_sync::Semaphore;
///
/// let sem = Semaphore::new(2);
/// let a = sem.acquire();
/// let _b = sem.acquire();
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.available_permits(), 1);
/// ```
pub struct Semaphore {
    state: AtomicUsize,
    waiters: ListLock<WaitList>,
}

/// A permit of a [`Semaphore`]; returned to it when dropped.
#[must_use = "the permit is released immediately if unused"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

impl Semaphore {
    /// The largest number of permits a semaphore can hold.
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// Creates a semaphore with `permits` available permits.
    ///
    /// # Panics
    ///
    /// If `permits` exceeds [`Semaphore::MAX_PERMITS`].
    pub fn new(permits: usize) -> Semaphore {
        assert!(permits <= Self::MAX_PERMITS, "too many permits");
        Semaphore {
            state: AtomicUsize::new(permits * PERMIT),
            waiters: ListLock::new(WaitList::new()),
        }
    }

    /// Waits for a permit.
    ///
    /// A fiber parked here (or in [`acquire_timeout`](Self::acquire_timeout)) shows in
    /// `Runtime::dump` as waiting on `"Semaphore::acquire"` at the caller's location.
    #[track_caller]
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        if !self.try_take() {
            let ok = self.acquire_slow(None, Site::here("Semaphore::acquire"));
            debug_assert!(ok);
        }
        SemaphorePermit { sem: self }
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        // (not `then_some`: building a permit eagerly and dropping it would add a permit)
        self.try_take().then(|| SemaphorePermit { sem: self })
    }

    /// Waits for a permit for at most `timeout`.
    #[track_caller]
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        if self.try_take() {
            return Some(SemaphorePermit { sem: self });
        }
        let deadline = deadline_after(timeout);
        self.acquire_slow(deadline, Site::here("Semaphore::acquire"))
            .then(|| SemaphorePermit { sem: self })
    }

    /// The number of permits available right now (a racy snapshot).
    pub fn available_permits(&self) -> usize {
        self.state.load(Relaxed) / PERMIT
    }

    /// Adds `n` permits, handing them to waiters first (FIFO).
    ///
    /// # Panics
    ///
    /// If the count would exceed [`Semaphore::MAX_PERMITS`].
    pub fn add_permits(&self, n: usize) {
        if n == 0 {
            return;
        }
        let add = n.checked_mul(PERMIT).expect("too many permits");
        let mut s = self.state.load(Relaxed);
        while s & HAS_WAITERS == 0 {
            let new = s.checked_add(add).expect("too many permits");
            match self.state.compare_exchange_weak(s, new, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
        self.add_permits_slow(n);
    }

    #[cold]
    fn add_permits_slow(&self, mut n: usize) {
        let mut wakes = Wakeups::new();
        let mut list = self.waiters.lock();
        while n > 0 {
            match list.claim(|_| true) {
                Some(c) => {
                    wakes.push(c.finish(Kind::Handoff));
                    n -= 1;
                }
                None => break,
            }
        }
        let empty = list.is_empty();
        let _ = self.state.fetch_update(Release, Relaxed, |s| {
            let s = if empty { s & !HAS_WAITERS } else { s };
            Some(s.checked_add(n * PERMIT).expect("too many permits"))
        });
        drop(list);
    }

    fn try_take(&self) -> bool {
        let mut s = self.state.load(Relaxed);
        while s >= PERMIT {
            match self
                .state
                .compare_exchange_weak(s, s - PERMIT, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Returns true once a permit is ours, false on timeout.
    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>, site: Site) -> bool {
        let ctx = Context::new();
        let node = Node::new();
        loop {
            let mut list = self.waiters.lock();
            let s = self.state.load(Relaxed);
            if s >= PERMIT {
                if self
                    .state
                    .compare_exchange(s, s - PERMIT, Acquire, Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if self
                .state
                .compare_exchange(s, s | HAS_WAITERS, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: fresh node; it and `ctx` outlive the wait; the guard unlinks it.
            unsafe {
                node.set(&ctx, 0, ptr::null_mut());
                list.push_back(&node);
            }
            drop(list);
            let guard = WaitGuard {
                sem: self,
                ctx: &ctx,
                node: &node,
            };
            let selected = ctx.wait(deadline, site);
            std::mem::forget(guard);
            return match selected {
                Some(_) => true, // a permit was handed to us
                None => {
                    self.unlink(&node);
                    false
                }
            };
        }
    }

    fn unlink(&self, node: &Node) {
        let mut list = self.waiters.lock();
        // SAFETY: our node, only ever linked in this list.
        unsafe { list.remove(node) };
        if list.is_empty() {
            self.state.fetch_and(!HAS_WAITERS, Relaxed);
        }
    }
}

/// Unlinks a waiter that unwinds out of `park`; gives back a permit handed to it.
struct WaitGuard<'a> {
    sem: &'a Semaphore,
    ctx: &'a Context,
    node: &'a Node,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        match self.ctx.try_abort() {
            Ok(()) => self.sem.unlink(self.node),
            Err(_) => self.sem.add_permits(1),
        }
    }
}

impl SemaphorePermit<'_> {
    /// Consumes the permit without returning it to the semaphore.
    pub fn forget(self) {
        std::mem::forget(self)
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.sem.add_permits(1);
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available_permits())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}
