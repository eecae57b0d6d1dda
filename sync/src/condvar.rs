//! [`Condvar`]: a condition variable for [`Mutex`].
//!
//! # Protocol
//!
//! The condvar owns one waiter list behind its internal lock; there is no other state.
//!
//! * `wait(guard)`: link a node (context WAITING) into the list, *then* release the mutex, park
//!   until the node is claimed (or the deadline passes), re-lock the mutex.
//! * `notify_one`: claim the first claimable node (CAS WAITING → BUSY → SELECTED), unpark it.
//!   `notify_all`: claim every claimable node.
//!
//! **No lost wake-up.** The waiter is linked before it releases the mutex. A notifier that
//! changed the predicate under the mutex and then notifies takes the list lock after the link,
//! so it finds the waiter (or the waiter has already been claimed by an earlier notify and will
//! re-check the predicate anyway).
//!
//! **Timeouts and cancellation.** A timed-out waiter aborts its context (CAS WAITING → ABORTED)
//! and unlinks itself; if the CAS loses to a notify, the wait counts as notified. A waiter that
//! unwinds (cancelled fiber) after being notified passes the notification on to the next waiter,
//! so `notify_one` is never swallowed. Spurious wake-ups are possible, as with std.

use std::fmt;
use std::ptr;
use std::time::{Duration, Instant};

use filament_runtime::loom::ListLock;

use crate::mutex::{Mutex, MutexGuard};
use crate::waiter::{deadline_after, Context, Kind, Node, Site, WaitList, Wakeups};

/// A condition variable used with [`Mutex`]; works from fibers and OS threads.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use std::sync::Arc;
/// use filament_sync::{Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p = pair.clone();
/// std::thread::spawn(move || {
///     *p.0.lock() = true;
///     p.1.notify_one();
/// });
/// let (lock, cv) = &*pair;
/// let ready = cv.wait_while(lock.lock(), |ready| !*ready);
/// assert!(*ready);
/// ```
pub struct Condvar {
    waiters: ListLock<WaitList>,
}

/// Whether a timed wait on a [`Condvar`] returned because of its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the timeout elapsed.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// Creates a condition variable with no waiters.
    pub fn new() -> Condvar {
        Condvar {
            waiters: ListLock::new(WaitList::new()),
        }
    }

    /// Releases the lock, waits for a notification, re-acquires the lock. May wake spuriously.
    ///
    /// A fiber parked here (or in the re-acquire) shows in `Runtime::dump` as waiting on
    /// `"Condvar::wait"` at the caller's location; so do the other `wait_*` methods.
    #[track_caller]
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_until_internal(guard, None, Site::here(WHAT)).0
    }

    /// Waits until `condition` returns false (it is checked first, under the lock).
    #[track_caller]
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        let site = Site::here(WHAT);
        while condition(&mut *guard) {
            guard = self.wait_until_internal(guard, None, site).0;
        }
        guard
    }

    /// Like [`wait`](Condvar::wait), giving up after `timeout`.
    #[track_caller]
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let (g, timed_out) =
            self.wait_until_internal(guard, deadline_after(timeout), Site::here(WHAT));
        (g, WaitTimeoutResult(timed_out))
    }

    /// Like [`wait_while`](Condvar::wait_while), giving up after `timeout`. The result says
    /// whether it timed out with the condition still true.
    #[track_caller]
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let deadline = deadline_after(timeout);
        let site = Site::here(WHAT);
        while condition(&mut *guard) {
            let (g, timed_out) = self.wait_until_internal(guard, deadline, site);
            guard = g;
            if timed_out {
                let still = condition(&mut *guard);
                return (guard, WaitTimeoutResult(still));
            }
        }
        (guard, WaitTimeoutResult(false))
    }

    fn wait_until_internal<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
        site: Site,
    ) -> (MutexGuard<'a, T>, bool) {
        let mutex: &'a Mutex<T> = MutexGuard::mutex(&guard);
        let ctx = Context::new();
        let node = Node::new();
        {
            let mut list = self.waiters.lock();
            // SAFETY: fresh node; it and `ctx` outlive the wait; the guard below unlinks it.
            unsafe {
                node.set(&ctx, 0, ptr::null_mut());
                list.push_back(&node);
            }
        }
        let wait_guard = WaitGuard {
            cv: self,
            ctx: &ctx,
            node: &node,
        };
        drop(guard);
        let selected = ctx.wait(deadline, site);
        std::mem::forget(wait_guard);
        let timed_out = selected.is_none();
        if timed_out {
            // Aborted: we are (probably) still linked.
            let mut list = self.waiters.lock();
            // SAFETY: our node, only ever linked in this list.
            unsafe { list.remove(&node) };
        }
        (mutex.lock_at(site), timed_out)
    }

    /// Wakes one waiter, if any.
    pub fn notify_one(&self) {
        let mut wakes = Wakeups::new();
        let mut list = self.waiters.lock();
        if let Some(c) = list.claim(|_| true) {
            wakes.push(c.finish(Kind::Handoff));
        }
        drop(list);
        wakes.wake();
    }

    /// Wakes every waiter currently waiting.
    pub fn notify_all(&self) {
        let mut wakes = Wakeups::new();
        let mut list = self.waiters.lock();
        while let Some(c) = list.claim(|_| true) {
            wakes.push(c.finish(Kind::Handoff));
        }
        drop(list);
        wakes.wake();
    }
}

/// The wait record of every `Condvar` wait (see `Runtime::dump`).
const WHAT: &str = "Condvar::wait";

/// Unlinks the node of a waiter that unwinds out of `park`, and passes a notification it
/// consumed on to the next waiter.
struct WaitGuard<'a> {
    cv: &'a Condvar,
    ctx: &'a Context,
    node: &'a Node,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        match self.ctx.try_abort() {
            Ok(()) => {
                let mut list = self.cv.waiters.lock();
                // SAFETY: our node, only ever linked in this list.
                unsafe { list.remove(self.node) };
            }
            Err(_) => self.cv.notify_one(),
        }
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
