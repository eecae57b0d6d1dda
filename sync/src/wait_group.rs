//! [`WaitGroup`]: Go's `sync.WaitGroup` (`add`, `done`, `wait`).
//!
//! # Protocol
//!
//! A counter (atomic) and a waiter list behind the internal lock.
//!
//! * `add(n)` adds to the counter; `done()` subtracts one, and the call that brings it to zero
//!   takes the list lock and claims every waiter (HANDOFF).
//! * `wait()` returns at once if the counter is zero; otherwise, under the list lock, re-reads
//!   the counter and links a node if it is still non-zero, then parks.
//!
//! **No lost wake-up:** the waiter's re-check and link happen under the list lock; the `done`
//! that reaches zero decremented before taking that lock, so either the waiter saw zero or its
//! node was linked when the sweep ran. A waiter that unwinds unlinks itself.
//!
//! **Sharing:** a `WaitGroup` is a handle to a shared group (an `Arc` inside): `clone()` gives
//! another handle to the *same* counter, like passing a `*sync.WaitGroup` in Go. Cloning does
//! not change the count; only `add` and `done` do.

use std::fmt;
use std::ptr;

use filament_runtime::loom::{Arc, AtomicUsize, ListLock, Ordering::*};

use crate::waiter::{Context, Kind, Node, Site, WaitList, Wakeups};

/// Waits for a collection of tasks to finish (Go's `sync.WaitGroup`). Clones share one counter.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use filament_sync::WaitGroup;
///
/// let wg = WaitGroup::new();
/// for _ in 0..4 {
///     wg.add(1);
///     let wg = wg.clone();
///     std::thread::spawn(move || {
///         // ... work ...
///         wg.done();
///     });
/// }
/// wg.wait();
/// assert_eq!(wg.count(), 0);
/// ```
#[derive(Clone)]
pub struct WaitGroup {
    inner: Arc<Inner>,
}

struct Inner {
    count: AtomicUsize,
    waiters: ListLock<WaitList>,
}

impl WaitGroup {
    /// A group with a zero counter.
    pub fn new() -> WaitGroup {
        WaitGroup {
            inner: Arc::new(Inner {
                count: AtomicUsize::new(0),
                waiters: ListLock::new(WaitList::new()),
            }),
        }
    }

    /// Adds `n` to the counter.
    pub fn add(&self, n: usize) {
        self.inner
            .count
            .fetch_update(Relaxed, Relaxed, |c| c.checked_add(n))
            .expect("WaitGroup counter overflow");
    }

    /// Subtracts one from the counter, waking every waiter when it reaches zero.
    ///
    /// # Panics
    ///
    /// If the counter is already zero (as Go's "negative WaitGroup counter").
    pub fn done(&self) {
        let prev = self
            .inner
            .count
            .fetch_update(AcqRel, Relaxed, |c| c.checked_sub(1))
            .expect("WaitGroup::done called more often than add");
        if prev == 1 {
            let mut wakes = Wakeups::new();
            let mut list = self.inner.waiters.lock();
            while let Some(c) = list.claim(|_| true) {
                wakes.push(c.finish(Kind::Handoff));
            }
            drop(list);
        }
    }

    /// The current counter (a racy snapshot).
    pub fn count(&self) -> usize {
        self.inner.count.load(Relaxed)
    }

    /// Waits until the counter is zero.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"WaitGroup::wait"` at the
    /// caller's location.
    #[track_caller]
    pub fn wait(&self) {
        if self.inner.count.load(Acquire) == 0 {
            return;
        }
        let ctx = Context::new();
        let node = Node::new();
        let mut list = self.inner.waiters.lock();
        if self.inner.count.load(Acquire) == 0 {
            return;
        }
        // SAFETY: fresh node; it and `ctx` outlive the wait; the guard unlinks it.
        unsafe {
            node.set(&ctx, 0, ptr::null_mut());
            list.push_back(&node);
        }
        drop(list);
        let guard = WaitGuard {
            wg: self,
            ctx: &ctx,
            node: &node,
        };
        let _ = ctx.wait(None, Site::here("WaitGroup::wait"));
        std::mem::forget(guard);
    }
}

struct WaitGuard<'a> {
    wg: &'a WaitGroup,
    ctx: &'a Context,
    node: &'a Node,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.ctx.try_abort().is_ok() {
            let mut list = self.wg.inner.waiters.lock();
            // SAFETY: our node, only ever linked in this list.
            unsafe { list.remove(self.node) };
        }
    }
}

impl Default for WaitGroup {
    fn default() -> Self {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroup")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}
