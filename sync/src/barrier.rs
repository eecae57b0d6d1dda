//! [`Barrier`]: lets `n` participants wait until all of them have arrived.
//!
//! # Protocol
//!
//! All state sits behind the internal lock: `arrived` (participants waiting in the current
//! generation) and the waiter list. `wait` increments `arrived`; the `n`-th arrival is the
//! leader: it resets `arrived` to 0 (starting the next generation) and claims every linked
//! waiter (HANDOFF). The others link a node and park until claimed.
//!
//! **No lost wake-up:** the count and the link change in one critical section, so the leader's
//! claim sweep sees every waiter of its generation, and waiters of the next generation link only
//! after the sweep. **Cancellation:** a waiter that unwinds before being released unlinks itself
//! and withdraws its arrival; one that was already released has nothing to undo.

use std::fmt;
use std::ptr;

use filament_runtime::loom::ListLock;

use crate::waiter::{Context, Kind, Node, Site, WaitList, Wakeups};

/// A reusable barrier for `n` fibers or threads.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use std::sync::Arc;
/// use filament_sync::Barrier;
///
/// let barrier = Arc::new(Barrier::new(3));
/// let handles: Vec<_> = (0..3)
///     .map(|_| {
///         let b = barrier.clone();
///         std::thread::spawn(move || b.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&l| l);
/// assert_eq!(leaders.count(), 1);
/// ```
pub struct Barrier {
    n: usize,
    inner: ListLock<Inner>,
}

struct Inner {
    arrived: usize,
    waiters: WaitList,
}

/// What [`Barrier::wait`] returns; exactly one participant per generation is the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one participant of each generation (the last to arrive).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    /// A barrier for `n` participants (`0` behaves like `1`, as with std).
    pub fn new(n: usize) -> Barrier {
        Barrier {
            n: n.max(1),
            inner: ListLock::new(Inner {
                arrived: 0,
                waiters: WaitList::new(),
            }),
        }
    }

    /// Waits until all `n` participants have called `wait`.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"Barrier::wait"` at the
    /// caller's location.
    #[track_caller]
    pub fn wait(&self) -> BarrierWaitResult {
        let ctx = Context::new();
        let node = Node::new();
        let mut wakes = Wakeups::new();
        let mut inner = self.inner.lock();
        inner.arrived += 1;
        if inner.arrived == self.n {
            inner.arrived = 0;
            while let Some(c) = inner.waiters.claim(|_| true) {
                wakes.push(c.finish(Kind::Handoff));
            }
            drop(inner);
            wakes.wake();
            return BarrierWaitResult(true);
        }
        // SAFETY: fresh node; it and `ctx` outlive the wait; the guard unlinks it.
        unsafe {
            node.set(&ctx, 0, ptr::null_mut());
            inner.waiters.push_back(&node);
        }
        drop(inner);
        let guard = WaitGuard {
            barrier: self,
            ctx: &ctx,
            node: &node,
        };
        let sel = ctx.wait(None, Site::here("Barrier::wait"));
        std::mem::forget(guard);
        debug_assert!(sel.is_some());
        BarrierWaitResult(false)
    }
}

struct WaitGuard<'a> {
    barrier: &'a Barrier,
    ctx: &'a Context,
    node: &'a Node,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.ctx.try_abort().is_ok() {
            let mut inner = self.barrier.inner.lock();
            // SAFETY: our node, only ever linked in this list.
            unsafe { inner.waiters.remove(self.node) };
            inner.arrived -= 1;
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}
