//! Parking: the one blocking primitive that `filament-sync` and `filament-net` build on.
//!
//! Every fiber and every OS thread owns a *token* (one bit), exactly like
//! [`std::thread::park`]:
//!
//! * [`Unparker::unpark`] sets the token and, if the owner is parked, wakes it.
//! * [`park`] / [`park_until`] consume the token if it is set and return at once; otherwise they
//!   block the current fiber (the worker runs other fibers meanwhile) or the current OS thread
//!   (when called outside a fiber) until the token is set or the deadline passes.
//!
//! **No lost wake-up.** Because the token survives an `unpark` that happens *before* the `park`,
//! the usual pattern is race-free: publish an [`Unparker`] (from [`unparker`]) where the waker
//! will find it, re-check the condition, then `park`; the waker changes the condition, then calls
//! `unpark`. Either the parker sees the new condition, or the token makes its `park` return.
//!
//! **Spurious returns.** `park` may return without a matching `unpark` (a token left over from an
//! earlier, abandoned wait; a deadline). Callers always re-check their condition in a loop.
//!
//! **Cancellation.** When the current fiber has been cancelled (`JoinHandle::cancel`), `park`
//! does not block: it unwinds the fiber's stack instead (a panic with a private payload that the
//! fiber's root catches). Code that registers a waiter before parking must therefore remove it in
//! a drop guard, so an unwinding waiter leaves nothing stale behind.
//!
//! **Cost.** An [`Unparker`] is one reference-counted pointer; getting one does not allocate, so a
//! waiter record can live on the parked fiber's own stack.
//!
//! Under `cfg(loom)` the thread variant is loom's thread park/unpark, so primitives written
//! against this module are model-checked with loom threads standing in for fibers.

use std::fmt;
use std::time::Instant;

use crate::loom::thread;

/// Wakes one parked fiber or OS thread. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Unparker {
    inner: UnparkerInner,
}

#[derive(Clone)]
enum UnparkerInner {
    Thread(thread::Thread),
    #[cfg(not(loom))]
    Fiber(crate::sched::FiberRef),
}

impl Unparker {
    /// Sets the owner's token and wakes it if it is parked. Unparking a fiber that has finished
    /// is harmless.
    pub fn unpark(&self) {
        match &self.inner {
            UnparkerInner::Thread(t) => t.unpark(),
            #[cfg(not(loom))]
            UnparkerInner::Fiber(f) => crate::sched::unpark_fiber(f),
        }
    }

    /// True if both wake the same fiber or thread.
    pub fn will_unpark(&self, other: &Unparker) -> bool {
        match (&self.inner, &other.inner) {
            (UnparkerInner::Thread(a), UnparkerInner::Thread(b)) => a.id() == b.id(),
            #[cfg(not(loom))]
            (UnparkerInner::Fiber(a), UnparkerInner::Fiber(b)) => a.ptr_eq(b),
            #[cfg(not(loom))]
            _ => false,
        }
    }
}

impl fmt::Debug for Unparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            UnparkerInner::Thread(t) => f.debug_tuple("Unparker::Thread").field(&t.id()).finish(),
            #[cfg(not(loom))]
            UnparkerInner::Fiber(r) => f.debug_tuple("Unparker::Fiber").field(&r.id()).finish(),
        }
    }
}

/// The wake handle of a waiter record that lives in the waiter's own frame: like an
/// [`Unparker`], but for a fiber it is a plain pointer to the fiber's task, with no reference
/// count, so getting one and dropping it cost no atomic operation. (For an OS thread it holds a
/// `Thread` handle, a counted reference: threads are the slow path.)
///
/// It is sound to use only while its owner is still inside the wait it was published for: the
/// owner's stack frame (which holds it) is what keeps the fiber, and so its task, alive. The
/// sync primitives guarantee that with a claim: a waker that has claimed a waiter (the owner now
/// cannot return before the waker says it is done) unparks it, and only then releases it.
pub struct FrameUnparker {
    inner: FrameInner,
}

enum FrameInner {
    Thread(thread::Thread),
    #[cfg(not(loom))]
    Fiber(crate::sched::TaskPtr),
}

// SAFETY: the fiber variant is a pointer to a task, whose state word is atomic and whose wake
// path (`sched::unpark_task`) may run on any thread; the pointer is dereferenced only under the
// contract of `FrameUnparker::unpark`, which keeps the task alive.
unsafe impl Send for FrameUnparker {}
// SAFETY: as for `Send`: `unpark` takes `&self` and is safe to call from several threads.
unsafe impl Sync for FrameUnparker {}

impl FrameUnparker {
    /// The handle of the calling fiber, or of the calling OS thread outside a fiber.
    #[inline]
    pub fn current() -> FrameUnparker {
        #[cfg(not(loom))]
        if let Some(task) = crate::sched::current_task_ptr() {
            return FrameUnparker {
                inner: FrameInner::Fiber(task),
            };
        }
        FrameUnparker {
            inner: FrameInner::Thread(thread::current()),
        }
    }

    /// Sets the owner's token and wakes it if it is parked, as [`Unparker::unpark`].
    ///
    /// # Safety
    ///
    /// The owner (the fiber or thread that called [`FrameUnparker::current`]) must not have
    /// returned from the wait this handle was published for, and must not be able to until this
    /// call returns: for a fiber, that is what keeps its task alive.
    #[inline]
    pub unsafe fn unpark(&self) {
        match &self.inner {
            FrameInner::Thread(t) => t.unpark(),
            // SAFETY: the owner is still in its wait (caller's contract), so its task is alive.
            #[cfg(not(loom))]
            FrameInner::Fiber(task) => unsafe { crate::sched::unpark_task(*task) },
        }
    }

    /// [`park_until`], for the owner of this handle: it already knows whether it is a fiber and
    /// which, so the thread-local lookups of `park_until` are saved.
    ///
    /// # Safety
    ///
    /// The caller is this handle's owner: the fiber (or thread) that called
    /// [`FrameUnparker::current`].
    #[inline]
    pub unsafe fn park_until(&self, deadline: Option<Instant>) -> bool {
        match &self.inner {
            // SAFETY: the caller is the fiber of `task` (contract).
            #[cfg(not(loom))]
            FrameInner::Fiber(task) => unsafe { crate::sched::park_running_task(*task, deadline) },
            FrameInner::Thread(_) => park_thread(deadline),
        }
    }

    /// [`WaitSite::record`], for the owner of this handle.
    ///
    /// # Safety
    ///
    /// As for [`FrameUnparker::park_until`].
    #[inline]
    pub unsafe fn record(&self, site: WaitSite) -> WaitRecord {
        match &self.inner {
            // SAFETY: the caller is the fiber of `task` (contract).
            #[cfg(not(loom))]
            FrameInner::Fiber(task) => WaitRecord {
                _guard: unsafe { crate::fiber::waiting_in(*task, site.what, site.at) },
            },
            FrameInner::Thread(_) => site.record(),
        }
    }
}

impl fmt::Debug for FrameUnparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            FrameInner::Thread(t) => f
                .debug_tuple("FrameUnparker::Thread")
                .field(&t.id())
                .finish(),
            #[cfg(not(loom))]
            FrameInner::Fiber(_) => f.write_str("FrameUnparker::Fiber"),
        }
    }
}

/// The [`Unparker`] of the calling fiber, or of the calling OS thread outside a fiber.
pub fn unparker() -> Unparker {
    #[cfg(not(loom))]
    if let Some(f) = crate::sched::current_fiber_ref() {
        return Unparker {
            inner: UnparkerInner::Fiber(f),
        };
    }
    Unparker {
        inner: UnparkerInner::Thread(thread::current()),
    }
}

/// True when the caller runs inside a filament fiber (so blocking parks the fiber, not the
/// thread).
pub fn in_fiber() -> bool {
    #[cfg(not(loom))]
    {
        crate::sched::in_fiber()
    }
    #[cfg(loom)]
    {
        false
    }
}

/// Blocks until the token is set (then clears it). May return spuriously; see the module docs.
/// Unwinds the calling fiber if it has been cancelled.
#[inline]
pub fn park() {
    park_until(None);
}

/// Like [`park`], but returns no later than about `deadline` (when `Some`). Returns `true` if the
/// deadline had passed when it returned, `false` if it returned because of a token (or
/// spuriously). Callers re-check their condition either way.
#[inline]
pub fn park_until(deadline: Option<Instant>) -> bool {
    #[cfg(not(loom))]
    if crate::sched::in_fiber() {
        return crate::sched::park_fiber(deadline);
    }
    park_thread(deadline)
}

fn park_thread(deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            thread::park();
            false
        }
        #[cfg(not(loom))]
        Some(d) => {
            let now = Instant::now();
            if d <= now {
                return true;
            }
            thread::park_timeout(d - now);
            Instant::now() >= d
        }
        #[cfg(loom)]
        Some(_) => {
            // loom has no time: a timed park is a park that may also return spuriously,
            // which is exactly the set of behaviours a timeout adds.
            thread::yield_now();
            true
        }
    }
}

/// What a blocking call waits on (`"Mutex::lock"`, `"TcpStream::read"`, ...) and where its caller
/// is, for [`Runtime::dump`](crate::Runtime::dump). Blocking calls are `#[track_caller]`, build
/// one at their entry ([`WaitSite::here`]: two pointers, no work) and [`record`](WaitSite::record)
/// it only on the path that really parks, so fast paths pay nothing.
#[derive(Debug, Clone, Copy)]
pub struct WaitSite {
    what: &'static str,
    at: &'static std::panic::Location<'static>,
}

impl WaitSite {
    /// `what`, at the location of the caller of the `#[track_caller]` function that calls this
    /// (propagated through directly called `#[track_caller]` functions, not through closures:
    /// build it before entering one).
    #[track_caller]
    pub fn here(what: &'static str) -> WaitSite {
        WaitSite {
            what,
            at: std::panic::Location::caller(),
        }
    }

    /// Records the wait on the calling fiber until the returned guard drops. Nothing outside a
    /// fiber, and nothing under loom (whose runtime has no fibers).
    pub fn record(self) -> WaitRecord {
        #[cfg(not(loom))]
        {
            WaitRecord {
                _guard: crate::fiber::waiting(self.what, self.at),
            }
        }
        #[cfg(loom)]
        {
            let _ = (self.what, self.at);
            WaitRecord { _guard: () }
        }
    }
}

/// Clears the wait record of [`WaitSite::record`] when dropped.
#[must_use = "the wait record is cleared when this drops"]
pub struct WaitRecord {
    #[cfg(not(loom))]
    _guard: crate::fiber::WaitingGuard,
    #[cfg(loom)]
    _guard: (),
}
