//! [`Mutex`]: a fiber-aware mutual-exclusion lock with Go-style starvation mode.
//!
//! # State word
//!
//! ```text
//!  bit 0  LOCKED       someone owns the lock
//!  bit 1  HAS_WAITERS  the waiter list may be non-empty: unlock must take the slow path
//!  bit 2  STARVING     handoff mode: unlock passes ownership straight to the first waiter
//! ```
//!
//! * Fast paths: `lock` is one CAS 0 → LOCKED, `unlock` one CAS LOCKED → 0. Anything else takes
//!   the slow path.
//! * `HAS_WAITERS` and `STARVING` are set only under the waiter-list lock, by a waiter that is
//!   about to link itself, with a CAS that also checks LOCKED is still set (so it links only if
//!   a later unlock is bound to see the bit). They are cleared under the list lock when the list
//!   becomes empty.
//! * Normal mode: unlock clears LOCKED, then wakes the first waiter (RETRY). The woken waiter
//!   competes with newcomers ("bargers"), which is what makes a mutex fast under contention; if it
//!   loses it relinks itself at the *front*.
//! * Starvation mode: a woken waiter that has been waiting for more than 1 ms sets STARVING when it
//!   relinks. Then nobody barges (fast path and spinning require `STARVING` clear) and unlock hands
//!   the lock over (LOCKED stays set, the waiter is told HANDOFF). The mode ends when the list
//!   empties or a waiter that received the lock had waited less than 1 ms (as in Go).
//!
//! **No lost wake-up.** A waiter links itself only after its CAS set `HAS_WAITERS` on a state that
//! had `LOCKED`; the owner's fast unlock CAS (which expects exactly `LOCKED`) then fails, and its
//! slow path takes the list lock, which orders it after the link. A waiter that was woken but
//! unwinds (fiber cancelled) passes the wake on (RETRY) or releases the lock (HANDOFF).
//!
//! **Poisoning: none.** Like parking_lot, a panic while the lock is held simply releases it when the
//! guard is dropped during unwinding. Fiber cancellation unwinds through guards routinely, so
//! poisoning would turn every cancelled fiber into a poisoned lock; callers that need to detect a
//! half-done update must do so in their own data.
//!
//! **Waiter storage.** Waiters are intrusive nodes on the blocked caller's stack
//! (`waiter.rs`); blocking allocates nothing.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr;

use filament_runtime::loom::{AtomicUsize, ListLock, Ordering::*, UnsafeCell};

use crate::waiter::{Context, Kind, Node, Site, WaitList};

const LOCKED: usize = 1;
const HAS_WAITERS: usize = 2;
const STARVING: usize = 4;

/// A mutual-exclusion lock usable from fibers and OS threads alike.
///
/// Does not poison (see the module docs). Blocking parks the calling fiber, or blocks the calling
/// thread outside a fiber.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use std::sync::Arc;
/// use filament_sync::Mutex;
///
/// let m = Arc::new(Mutex::new(0));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let m = m.clone();
///         std::thread::spawn(move || *m.lock() += 1)
///     })
///     .collect();
/// handles.into_iter().for_each(|h| h.join().unwrap());
/// assert_eq!(*m.lock(), 4);
/// ```
pub struct Mutex<T: ?Sized> {
    state: AtomicUsize,
    waiters: ListLock<WaitList>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock protocol gives one owner at a time access to `data`; `T: Send` is needed
// because the owner may be on any thread.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above; `&Mutex` only hands out `&mut T` to the single owner.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// RAII guard of a [`Mutex`]; the lock is released when it is dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    // Makes the guard Send iff T: Send and Sync iff T: Sync (std's rules without the OS-thread
    // restriction, which fibers that migrate would violate needlessly).
    _marker: PhantomData<&'a mut T>,
}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            state: AtomicUsize::new(0),
            waiters: ListLock::new(WaitList::new()),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex and returns the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock, parking the fiber (or blocking the thread) until it is free.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"Mutex::lock"` at the
    /// caller's location.
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow(Site::here("Mutex::lock"));
        }
        self.guard()
    }

    /// [`lock`](Self::lock), recording `site` if it parks (for `Condvar`'s re-acquire).
    pub(crate) fn lock_at(&self, site: Site) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow(site);
        }
        self.guard()
    }

    /// Acquires the lock if it is free right now (it may barge past waiters unless the mutex is
    /// in starvation mode).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let mut s = self.state.load(Relaxed);
        loop {
            if s & (LOCKED | STARVING) != 0 {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s | LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return Some(self.guard()),
                Err(now) => s = now,
            }
        }
    }

    /// Returns a mutable reference to the value; no locking is needed.
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves nobody else holds a guard.
        self.data.with_mut(|p| unsafe { &mut *p })
    }

    /// True if some caller holds the lock right now (a racy snapshot).
    pub fn is_locked(&self) -> bool {
        self.state.load(Relaxed) & LOCKED != 0
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            mutex: self,
            _marker: PhantomData,
        }
    }

    /// Tries to set LOCKED while neither LOCKED nor STARVING is set.
    fn try_acquire(&self) -> bool {
        let mut s = self.state.load(Relaxed);
        while s & (LOCKED | STARVING) == 0 {
            match self
                .state
                .compare_exchange_weak(s, s | LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    #[cold]
    fn lock_slow(&self, site: Site) {
        if spin(|| self.try_acquire()) {
            return;
        }
        let mut clock = WaitClock::start();
        let ctx = Context::new();
        let node = Node::new();
        let mut requeue = false;
        loop {
            let mut list = self.waiters.lock();
            let s = self.state.load(Relaxed);
            if s & LOCKED == 0 {
                // Free. (STARVING is only ever set together with LOCKED and cleared by every
                // release that leaves the lock free, so it is clear here; mask it anyway.)
                if self
                    .state
                    .compare_exchange(s, (s | LOCKED) & !STARVING, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            let mut new = s | HAS_WAITERS;
            if requeue && clock.starving() {
                new |= STARVING;
            }
            if self
                .state
                .compare_exchange(s, new, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            ctx.reset();
            // SAFETY: the node is unlinked (we were selected or never linked); it and `ctx`
            // outlive the wait below, and the guard unlinks it on every early exit.
            unsafe {
                node.set(&ctx, 0, ptr::null_mut());
                if requeue {
                    list.push_front(&node);
                } else {
                    list.push_back(&node);
                }
            }
            drop(list);
            let guard = LockWaitGuard {
                mutex: self,
                ctx: &ctx,
                node: &node,
            };
            let selected = ctx.wait(None, site);
            std::mem::forget(guard);
            match selected.map(|s| s.kind) {
                Some(Kind::Handoff) => {
                    // We own the lock (LOCKED was never cleared). Leave starvation mode if we
                    // did not really starve.
                    if !clock.starving() {
                        self.state.fetch_and(!STARVING, Relaxed);
                    }
                    return;
                }
                _ => {
                    requeue = true;
                    clock.woken();
                    if self.try_acquire() {
                        return;
                    }
                }
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    ///
    /// The caller owns the lock.
    unsafe fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Release, Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut list = self.waiters.lock();
        let s = self.state.load(Relaxed);
        if s & STARVING != 0 {
            if let Some(claim) = list.claim(|_| true) {
                if list.is_empty() {
                    self.state.fetch_and(!(HAS_WAITERS | STARVING), Relaxed);
                }
                // LOCKED stays set: ownership (and, through the Release in `Wake::wake`, our writes)
                // passes to the waiter.
                let u = claim.finish(Kind::Handoff);
                drop(list);
                u.wake();
                return;
            }
        }
        let claim = list.claim(|_| true);
        // A free lock is never in starvation mode.
        let clear = if list.is_empty() {
            HAS_WAITERS | STARVING
        } else {
            STARVING
        };
        self.state.fetch_and(!(LOCKED | clear), Release);
        let u = claim.map(|c| c.finish(Kind::Retry));
        drop(list);
        if let Some(u) = u {
            u.wake();
        }
    }

    /// Wakes the first waiter to retry, if the lock is free (a woken waiter that abandons its
    /// turn passes it on).
    fn pass_on_wake(&self) {
        let mut list = self.waiters.lock();
        if self.state.load(Relaxed) & LOCKED != 0 {
            return; // the owner's unlock will see HAS_WAITERS
        }
        let claim = list.claim(|_| true);
        let clear = if list.is_empty() {
            HAS_WAITERS | STARVING
        } else {
            STARVING
        };
        self.state.fetch_and(!clear, Relaxed);
        let u = claim.map(|c| c.finish(Kind::Retry));
        drop(list);
        if let Some(u) = u {
            u.wake();
        }
    }
}

/// Unlinks a waiter that unwinds out of `park` (cancelled fiber) and settles what a concurrent
/// waker did for it.
struct LockWaitGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    ctx: &'a Context,
    node: &'a Node,
}

impl<T: ?Sized> Drop for LockWaitGuard<'_, T> {
    fn drop(&mut self) {
        match self.ctx.try_abort() {
            Ok(()) => {
                let mut list = self.mutex.waiters.lock();
                // SAFETY: the node is ours and only ever linked in this list.
                unsafe { list.remove(self.node) };
                if list.is_empty() {
                    self.mutex
                        .state
                        .fetch_and(!(HAS_WAITERS | STARVING), Relaxed);
                }
            }
            // SAFETY: HANDOFF made us the owner; release what we will never use.
            Err(sel) if sel.kind == Kind::Handoff => unsafe { self.mutex.unlock() },
            Err(_) => self.mutex.pass_on_wake(),
        }
    }
}

/// Spins briefly (exponential backoff) while `try_acquire` fails. Never under loom, where a spin
/// only multiplies the explored states.
pub(crate) fn spin(mut try_acquire: impl FnMut() -> bool) -> bool {
    #[cfg(not(loom))]
    for i in 0..6u32 {
        for _ in 0..(1u32 << i) {
            std::hint::spin_loop();
        }
        if try_acquire() {
            return true;
        }
    }
    #[cfg(loom)]
    let _ = &mut try_acquire;
    false
}

/// Measures how long a lock waiter has waited. Under loom (no time) a waiter counts as starving
/// once it has been woken and lost the race once, so the handoff path is explored.
struct WaitClock {
    #[cfg(not(loom))]
    since: std::time::Instant,
    #[cfg(loom)]
    wakes: usize,
}

impl WaitClock {
    fn start() -> WaitClock {
        WaitClock {
            #[cfg(not(loom))]
            since: std::time::Instant::now(),
            #[cfg(loom)]
            wakes: 0,
        }
    }

    fn woken(&mut self) {
        #[cfg(loom)]
        {
            self.wakes += 1;
        }
    }

    fn starving(&self) -> bool {
        #[cfg(not(loom))]
        {
            self.since.elapsed() > std::time::Duration::from_millis(1)
        }
        #[cfg(loom)]
        {
            self.wakes > 0
        }
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard locks (used by [`crate::Condvar`]).
    pub(crate) fn mutex(this: &Self) -> &'a Mutex<T> {
        this.mutex
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we own the lock.
        self.mutex.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we own the lock, and `&mut self` that no other reference
        // from this guard is live.
        self.mutex.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the lock.
        unsafe { self.mutex.unlock() }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
