//! Per-thread stack pools: the allocator's fast path.
//!
//! Each thread has a [`ThreadPool`] (a `thread_local`) holding, per stack size, up to
//! [`POOL_CAP`] free stacks, most recently released last (reused first, so the memory is warm).
//! Only the owning thread touches it, so popping and pushing need no lock and no atomic
//! read-modify-write: a hit costs a TLS access, a short linear search over the sizes this thread
//! uses (usually one), a `Vec` pop or push, and one relaxed store that publishes the pool's
//! length for [`pooled_in_threads`].
//!
//! * **Fetch ahead:** a pop also starts loading the top of the stack the next pop will return
//!   ([`NEXT_PREFETCH_BYTES`]), so a burst of first runs does not wait on each stack's misses.
//! * **Miss:** [`refill_and_pop`] takes up to [`REFILL`] stacks from the global free list in one
//!   lock acquisition (or carves one), so a burst of spawns takes the lock once per batch.
//! * **Overflow:** when a size's pool is full, the oldest (coldest) half goes to the global free
//!   list in one lock acquisition, so a thread that frees many stacks another thread allocated
//!   does not hoard them.
//! * **Thread exit:** the pool's destructor hands every stack to the global free list. A
//!   release after that (from a later thread-local destructor) goes to the global list directly.

use std::io;
use std::num::NonZeroUsize;

use crossbeam_utils::CachePadded;

use super::arena;
use crate::loom::{Arc, AtomicUsize, Mutex, Ordering, UnsafeCell};

/// Stacks of one size a thread keeps at most.
pub(super) const POOL_CAP: usize = 64;

/// Bytes at the top of the next pooled stack fetched ahead on every pop: what a fiber's first
/// run writes (its record, the entry frame and a few hundred bytes of frames).
///
/// A burst of first runs (10,000 fibers each spawned and sent to sleep, or skynet's leaves)
/// enters one stack after another, and stacks reused a while after they were freed are no
/// longer cached: the first run then waits on a miss for every line it writes. Fetching the
/// next stack while the current fiber runs overlaps those misses with useful work. In the sleep
/// benchmark (10,000 fibers x 10 sleeps of 1 ms, 2 workers; seven alternating pairs of runs)
/// the median went from 15.9 to 14.7 ms; spawn and skynet did not change.
const NEXT_PREFETCH_BYTES: usize = 512;

/// Stacks taken from the global free list on a miss (the one returned included).
pub(super) const REFILL: usize = 16;

/// A thread's count of pooled stacks, published for `stats` (written only by its thread;
/// registered in [`PUBLISHED`] the first time the thread pools a stack).
type Published = Arc<CachePadded<AtomicUsize>>;

/// The counters of all live thread pools.
static PUBLISHED: Mutex<Vec<Published>> = Mutex::new(Vec::new());

thread_local! {
    static POOL: ThreadPool = const {
        ThreadPool {
            inner: UnsafeCell::new(Inner { sizes: Vec::new(), pooled: 0, published: None }),
        }
    };
}

/// The calling thread's free stacks.
struct ThreadPool {
    /// Touched only by the owning thread, and never re-entered: see [`ThreadPool::with`].
    inner: UnsafeCell<Inner>,
}

struct Inner {
    sizes: Vec<SizePool>,
    /// Stacks in all of `sizes`.
    pooled: usize,
    /// Where `pooled` is published; registered on the first push.
    published: Option<Published>,
}

/// Free stacks of one size (their bottoms), oldest first.
struct SizePool {
    size: usize,
    stacks: Vec<NonZeroUsize>,
}

impl ThreadPool {
    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // SAFETY: the pool is thread-local, so only this thread reaches it, and no `&mut Inner`
        // is live when `with` is entered: `f` only manipulates vectors and calls into `arena`
        // (a mutex and syscalls), none of which can call back into this module (nor may the
        // global allocator, which the vectors use: it must not acquire or release stacks).
        self.inner.with_mut(|inner| f(unsafe { &mut *inner }))
    }
}

impl Inner {
    #[inline(always)]
    fn index_of(&self, size: usize) -> Option<usize> {
        self.sizes.iter().position(|p| p.size == size)
    }

    fn index_or_insert(&mut self, size: usize) -> usize {
        match self.index_of(size) {
            Some(index) => index,
            None => {
                self.sizes.push(SizePool {
                    size,
                    stacks: Vec::with_capacity(POOL_CAP),
                });
                self.sizes.len() - 1
            }
        }
    }

    /// Publishes `pooled` for `stats` (registering this thread's counter the first time).
    #[inline(always)]
    fn publish(&mut self) {
        match &self.published {
            Some(published) => published.store(self.pooled, Ordering::Relaxed),
            None => self.register(),
        }
    }

    #[inline]
    fn pop(&mut self, size: usize) -> Option<NonZeroUsize> {
        let index = self.index_of(size)?;
        let stacks = &mut self.sizes[index].stacks;
        let stack = stacks.pop()?;
        if let Some(&next) = stacks.last() {
            // The next stack handed out: start loading the top it will be entered at.
            let top = next.get() + size;
            crate::arch::prefetch_range(
                (top - NEXT_PREFETCH_BYTES) as *const u8,
                NEXT_PREFETCH_BYTES,
            );
        }
        self.pooled -= 1;
        self.publish();
        Some(stack)
    }

    #[inline]
    fn push(&mut self, size: usize, stack: NonZeroUsize) {
        let index = match self.index_of(size) {
            Some(index) if self.sizes[index].stacks.len() < POOL_CAP => index,
            _ => self.make_room(size),
        };
        self.sizes[index].stacks.push(stack);
        self.pooled += 1;
        self.publish();
    }

    /// Makes room for one more stack of `size`: creates its pool, or hands the oldest half of
    /// a full one to the global free list.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, size: usize) -> usize {
        let index = self.index_or_insert(size);
        let stacks = &mut self.sizes[index].stacks;
        if stacks.len() >= POOL_CAP {
            let spill = stacks.len() / 2;
            arena::give_back(size, stacks.drain(..spill));
            self.pooled -= spill;
        }
        index
    }

    /// Registers this thread's counter with `stats` and publishes `pooled` in it.
    #[cold]
    #[inline(never)]
    fn register(&mut self) {
        let published = Published::default();
        published.store(self.pooled, Ordering::Relaxed);
        PUBLISHED.lock().push(published.clone());
        self.published = Some(published);
    }

    /// Takes a batch from the global free list (or a new slot) and returns one of it.
    fn refill_and_pop(&mut self, size: usize) -> io::Result<NonZeroUsize> {
        let index = self.index_or_insert(size);
        let stacks = &mut self.sizes[index].stacks;
        let before = stacks.len();
        let room = POOL_CAP - before;
        let one = arena::take(size, room.min(REFILL - 1), stacks)?;
        let added = stacks.len() - before;
        if added > 0 {
            self.pooled += added;
            self.publish();
        }
        Ok(one)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.with(|inner| {
            for pool in inner.sizes.drain(..) {
                arena::give_back(pool.size, pool.stacks);
            }
            inner.pooled = 0;
            if let Some(published) = inner.published.take() {
                published.store(0, Ordering::Relaxed);
                PUBLISHED.lock().retain(|p| !Arc::ptr_eq(p, &published));
            }
        });
    }
}

/// A free stack of `size` from the calling thread's pool, if it has one.
#[inline(always)]
pub(super) fn pop(size: usize) -> Option<NonZeroUsize> {
    POOL.try_with(|pool| pool.with(|inner| inner.pop(size)))
        .ok()
        .flatten()
}

/// Pools a free stack of `size`; false when the thread's pool is already destroyed (the thread
/// is exiting), in which case the caller keeps the stack.
#[inline(always)]
pub(super) fn push(size: usize, stack: NonZeroUsize) -> bool {
    POOL.try_with(|pool| pool.with(|inner| inner.push(size, stack)))
        .is_ok()
}

/// On a pool miss: a stack from the global free list (taking a batch of them into this
/// thread's pool) or a newly carved one.
pub(super) fn refill_and_pop(size: usize) -> io::Result<NonZeroUsize> {
    match POOL.try_with(|pool| pool.with(|inner| inner.refill_and_pop(size))) {
        Ok(result) => result,
        Err(_) => arena::take(size, 0, &mut Vec::new()),
    }
}

/// Stacks pooled in all threads' pools (a snapshot).
pub(super) fn pooled_in_threads() -> usize {
    PUBLISHED
        .lock()
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .sum()
}

/// Stacks of `size` in the calling thread's pool.
#[cfg(test)]
pub(super) fn pooled_here(size: usize) -> usize {
    POOL.with(|pool| {
        pool.with(|inner| {
            inner
                .index_of(size)
                .map_or(0, |index| inner.sizes[index].stacks.len())
        })
    })
}
