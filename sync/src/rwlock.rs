//! [`RwLock`]: a writer-preferring, phase-fair reader-writer lock.
//!
//! # State word
//!
//! ```text
//!  bit 0     WRITER           a writer owns the lock
//!  bit 1     WRITERS_WAITING  the writer list may be non-empty (new readers must queue)
//!  bit 2     READERS_WAITING  the reader list may be non-empty
//!  bits 3..  readers          number of readers owning the lock (unit READER = 8)
//! ```
//!
//! Both waiter lists live behind one internal lock (`Queues`). The two `*_WAITING` bits are set
//! only under it, by a waiter about to link itself, with a CAS that checks the lock is still
//! held in a way that guarantees a later release takes the slow path; they are cleared under it
//! when their list empties.
//!
//! * Fast paths: `read` adds READER when neither WRITER nor WRITERS_WAITING is set; `write` is one
//!   CAS 0 → WRITER; `write` unlock one CAS WRITER → 0; `read` unlock one `fetch_sub`.
//! * **Writer preference**: once a writer waits (WRITERS_WAITING), new readers queue. The last
//!   reader to leave hands the lock to the first writer (WRITER set on its behalf, HANDOFF).
//! * **No reader starvation**: a writer's unlock hands the lock to *all* queued readers at once
//!   if there are any (phase-fair), else to the next writer. So readers and writers alternate
//!   under contention and neither side starves.
//! * Handing over to several readers: the unlocker first turns its WRITER into one "phantom"
//!   reader, adds one READER per claimed reader before releasing it, and finally drops the phantom
//!   with an ordinary read unlock (which hands over to a writer if one is waiting).
//!
//! **No lost wake-up.** A reader links itself only after a CAS set READERS_WAITING on a state
//! with WRITER or WRITERS_WAITING, so the releasing writer's fast CAS fails; a writer links itself
//! only after setting WRITERS_WAITING on a state with readers or WRITER, so the last reader's
//! `fetch_sub` sees the bit (or the writer's CAS fails and it retries) and the releasing writer's
//! CAS fails. Both slow releases take the list lock, ordered after the link. Unwinding waiters
//! release what was handed to them and fix the bits when they leave a list empty.
//!
//! No poisoning (see [`crate::Mutex`]).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr;

use filament_runtime::loom::{AtomicUsize, ListLock, Ordering::*, UnsafeCell};

use crate::mutex::spin;
use crate::waiter::{Context, Kind, Node, Site, WaitList, Wakeups};

const WRITER: usize = 1;
const WRITERS_WAITING: usize = 2;
const READERS_WAITING: usize = 4;
const READER: usize = 8;

struct Queues {
    readers: WaitList,
    writers: WaitList,
}

/// A reader-writer lock usable from fibers and OS threads; writer-preferring without starving
/// readers (see the module docs). Does not poison.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use filament_sync::RwLock;
///
/// let lock = RwLock::new(5);
/// {
///     let a = lock.read();
///     let b = lock.read();
///     assert_eq!(*a + *b, 10);
/// }
/// *lock.write() += 1;
/// assert_eq!(*lock.read(), 6);
/// ```
pub struct RwLock<T: ?Sized> {
    state: AtomicUsize,
    queues: ListLock<Queues>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands `&mut T` to one writer or `&T` to many readers on any thread.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above; readers share `&T` across threads, hence `T: Sync`.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

/// Shared access guard of an [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _marker: PhantomData<&'a T>,
}

/// Exclusive access guard of an [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _marker: PhantomData<&'a mut T>,
}

impl<T> RwLock<T> {
    /// Creates an unlocked lock.
    pub fn new(value: T) -> RwLock<T> {
        RwLock {
            state: AtomicUsize::new(0),
            queues: ListLock::new(Queues {
                readers: WaitList::new(),
                writers: WaitList::new(),
            }),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Acquires shared access, waiting while a writer holds or waits for the lock.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"RwLock::read"` at the
    /// caller's location.
    #[track_caller]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        if !self.try_read_fast() && !spin(|| self.try_read_fast()) {
            self.read_slow(Site::here("RwLock::read"));
        }
        RwLockReadGuard {
            lock: self,
            _marker: PhantomData,
        }
    }

    /// Acquires shared access if no writer holds or waits for the lock.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        self.try_read_fast().then(|| RwLockReadGuard {
            lock: self,
            _marker: PhantomData,
        })
    }

    /// Acquires exclusive access.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"RwLock::write"` at the
    /// caller's location.
    #[track_caller]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        if !self.try_write_fast() && !spin(|| self.try_write_fast()) {
            self.write_slow(Site::here("RwLock::write"));
        }
        RwLockWriteGuard {
            lock: self,
            _marker: PhantomData,
        }
    }

    /// Acquires exclusive access if the lock is free.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        self.try_write_fast().then(|| RwLockWriteGuard {
            lock: self,
            _marker: PhantomData,
        })
    }

    /// Returns a mutable reference to the value; no locking is needed.
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard exists.
        self.data.with_mut(|p| unsafe { &mut *p })
    }

    fn try_read_fast(&self) -> bool {
        let mut s = self.state.load(Relaxed);
        loop {
            if s & (WRITER | WRITERS_WAITING) != 0 {
                return false;
            }
            let new = s.checked_add(READER).expect("too many readers");
            match self.state.compare_exchange_weak(s, new, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    fn try_write_fast(&self) -> bool {
        self.state
            .compare_exchange(0, WRITER, Acquire, Relaxed)
            .is_ok()
    }

    #[cold]
    fn read_slow(&self, site: Site) {
        let ctx = Context::new();
        let node = Node::new();
        loop {
            let mut q = self.queues.lock();
            let s = self.state.load(Relaxed);
            if s & (WRITER | WRITERS_WAITING) == 0 {
                if self
                    .state
                    .compare_exchange(s, s + READER, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if self
                .state
                .compare_exchange(s, s | READERS_WAITING, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            ctx.reset();
            // SAFETY: unlinked node; it and `ctx` outlive the wait; the guard unlinks it.
            unsafe {
                node.set(&ctx, 0, ptr::null_mut());
                q.readers.push_back(&node);
            }
            drop(q);
            let guard = WaitGuard {
                lock: self,
                ctx: &ctx,
                node: &node,
                writer: false,
            };
            let sel = ctx.wait(None, site);
            std::mem::forget(guard);
            debug_assert_eq!(sel.map(|s| s.kind), Some(Kind::Handoff));
            // The releaser added our READER before handing over.
            return;
        }
    }

    #[cold]
    fn write_slow(&self, site: Site) {
        let ctx = Context::new();
        let node = Node::new();
        loop {
            let mut q = self.queues.lock();
            let s = self.state.load(Relaxed);
            if s & (WRITER | !(READER - 1)) == 0 {
                // Not held. Take it, even past queued waiters: a writer queued behind
                // WRITERS_WAITING is either about to be handed the lock by a releaser that now
                // finds it held (and leaves the turn to our unlock), or is leaving. Our unlock
                // sees the waiting bits and hands over.
                if self
                    .state
                    .compare_exchange(s, s | WRITER, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if self
                .state
                .compare_exchange(s, s | WRITERS_WAITING, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            ctx.reset();
            // SAFETY: as in read_slow.
            unsafe {
                node.set(&ctx, 0, ptr::null_mut());
                q.writers.push_back(&node);
            }
            drop(q);
            let guard = WaitGuard {
                lock: self,
                ctx: &ctx,
                node: &node,
                writer: true,
            };
            let sel = ctx.wait(None, site);
            std::mem::forget(guard);
            debug_assert_eq!(sel.map(|s| s.kind), Some(Kind::Handoff));
            // WRITER was set on our behalf.
            return;
        }
    }

    /// Releases one shared hold.
    fn read_unlock(&self) {
        let prev = self.state.fetch_sub(READER, Release);
        debug_assert!(prev >= READER);
        if prev & !(READER - 1) == READER && prev & WRITERS_WAITING != 0 {
            self.hand_to_writer();
        }
    }

    /// The lock may have become free with writers queued: give it to the first one.
    #[cold]
    fn hand_to_writer(&self) {
        let mut wakes = Wakeups::new();
        let mut q = self.queues.lock();
        self.hand_to_writer_locked(&mut q, &mut wakes);
        drop(q);
    }

    /// [`hand_to_writer`](Self::hand_to_writer) with the queue lock held.
    fn hand_to_writer_locked(&self, q: &mut Queues, wakes: &mut Wakeups) {
        let s = self.state.load(Acquire);
        if s & (WRITER | !(READER - 1)) != 0 {
            return; // held again (a handed-over writer, a barger, readers): its release looks
        }
        if let Some(c) = q.writers.claim(|_| true) {
            let empty = q.writers.is_empty();
            // Not held: the only concurrent changes are failing fast-path CASes (the state is
            // non-zero with WRITERS_WAITING set) and read unlocks (there are no readers).
            let _ = self.state.fetch_update(Relaxed, Relaxed, |s| {
                let s = s | WRITER;
                Some(if empty { s & !WRITERS_WAITING } else { s })
            });
            wakes.push(c.finish(Kind::Handoff));
        } else if q.writers.is_empty() {
            // Every queued writer left: let the queued readers in.
            self.state.fetch_and(!WRITERS_WAITING, Relaxed);
            self.release_readers(q, wakes, false);
        }
    }

    /// Releases the exclusive hold.
    fn write_unlock(&self) {
        if self
            .state
            .compare_exchange(WRITER, 0, Release, Relaxed)
            .is_err()
        {
            self.write_unlock_slow();
        }
    }

    #[cold]
    fn write_unlock_slow(&self) {
        let mut wakes = Wakeups::new();
        let mut q = self.queues.lock();
        let readers_waiting = q.readers.any(|r| r.is_waiting());
        if !readers_waiting {
            if let Some(c) = q.writers.claim(|_| true) {
                if q.writers.is_empty() {
                    self.state.fetch_and(!WRITERS_WAITING, Relaxed);
                }
                // WRITER stays set: the lock passes to the claimed writer.
                wakes.push(c.finish(Kind::Handoff));
                return;
            }
        }
        let phantom = self.release_readers(&mut q, &mut wakes, true);
        drop(q);
        if phantom {
            self.read_unlock();
        }
    }

    /// Hands the lock to every queued reader. With `from_writer`, the caller's WRITER is first
    /// turned into a phantom READER (returns true: the caller must `read_unlock` it after
    /// releasing the queue lock). Called with the queue lock held.
    fn release_readers(&self, q: &mut Queues, wakes: &mut Wakeups, from_writer: bool) -> bool {
        let _ = self.state.fetch_update(Release, Relaxed, |s| {
            let mut new = s & !READERS_WAITING;
            if from_writer {
                new = (new & !WRITER) + READER;
            }
            Some(new)
        });
        while let Some(c) = q.readers.claim(|_| true) {
            self.state.fetch_add(READER, Relaxed);
            wakes.push(c.finish(Kind::Handoff));
        }
        from_writer
    }
}

/// Unlinks a waiter that unwinds out of `park`; releases a hold that was handed to it.
struct WaitGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    ctx: &'a Context,
    node: &'a Node,
    writer: bool,
}

impl<T: ?Sized> Drop for WaitGuard<'_, T> {
    fn drop(&mut self) {
        let lock = self.lock;
        match self.ctx.try_abort() {
            Ok(()) => {
                let mut wakes = Wakeups::new();
                let mut q = lock.queues.lock();
                if self.writer {
                    // SAFETY: our node, only ever linked in the writer list.
                    unsafe { q.writers.remove(self.node) };
                    if q.writers.is_empty() {
                        let s = lock.state.fetch_and(!WRITERS_WAITING, Relaxed);
                        if s & WRITER == 0 {
                            // Readers queued behind us while readers held the lock: let them in.
                            lock.release_readers(&mut q, &mut wakes, false);
                        }
                    } else {
                        // A releaser may have skipped us while we were aborting.
                        lock.hand_to_writer_locked(&mut q, &mut wakes);
                    }
                } else {
                    // SAFETY: our node, only ever linked in the reader list.
                    unsafe { q.readers.remove(self.node) };
                    if q.readers.is_empty() {
                        lock.state.fetch_and(!READERS_WAITING, Relaxed);
                    }
                }
                drop(q);
            }
            Err(_) if self.writer => lock.write_unlock(),
            Err(_) => lock.read_unlock(),
        }
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read guard proves shared access.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.read_unlock();
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a write guard proves exclusive access.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: a write guard proves exclusive access.
        self.lock.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.write_unlock();
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
