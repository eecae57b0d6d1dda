//! [`SpinLock`]: the lock behind the sync primitives' waiter lists.
//!
//! Those lists are held for a handful of pointer writes and never across a park or a fiber
//! switch, so a waiting thread gives up the CPU only when the holder's thread has been
//! preempted (then it calls `sched_yield`). Compared with a parking mutex (parking_lot's, one
//! compare-and-swap to lock and another to unlock), unlocking is a plain release store: on the
//! paths where a fiber wakes another (a channel hop, a mutex hand-off) that is one locked
//! instruction less per lock.
//!
//! Protocol: `locked` is the whole state. Lock = CAS `false → true` (Acquire); a failed CAS
//! spins on plain loads (test-and-test-and-set, so waiters do not keep stealing the line from
//! the holder) with a growing pause, then yields the thread between attempts. Unlock = store
//! `false` (Release). The Acquire/Release pair orders everything done under the lock.
//!
//! Under `cfg(loom)` the crate uses loom's mutex instead (see `loom.rs`), so the models see
//! every interleaving of the critical sections.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering::*};

/// A test-and-test-and-set spin lock for short critical sections that never block.
pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time (module docs), so it
// may be shared between threads whenever `T` may be sent between them.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: owning the lock is owning a `T`.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

/// Access to a [`SpinLock`]'s value; unlocks when dropped.
#[must_use = "the lock is released when the guard drops"]
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
}

/// Spins (with pauses) before a waiter starts yielding its thread between attempts.
const SPINS_BEFORE_YIELD: u32 = 6;

impl<T> SpinLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Consumes the lock and returns its value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Locks, spinning (and then yielding the thread) while another thread holds it.
    #[inline]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinLockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut round = 0u32;
        loop {
            while self.locked.load(Relaxed) {
                if round < SPINS_BEFORE_YIELD {
                    for _ in 0..(1u32 << round) {
                        std::hint::spin_loop();
                    }
                    round += 1;
                } else {
                    // The holder's thread is not running (its critical section is a few
                    // instructions): let it.
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Acquire, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Locks if the lock is free.
    #[inline]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
            .then_some(SpinLockGuard { lock: self })
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("SpinLock").field("value", &&*guard).finish(),
            None => f.write_str("SpinLock { <locked> }"),
        }
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock, and `&mut self`
        // makes this the only access through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_threads_that_outnumber_the_cores() {
        // More threads than cores, so holders get preempted and waiters must yield.
        let threads = 2 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
        let per_thread = 20_000u64;
        let lock = Arc::new(SpinLock::new((0u64, 0u64)));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        let mut g = lock.lock();
                        // Two writes that a racing holder would tear apart.
                        g.0 += 1;
                        g.1 = g.0;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let g = lock.lock();
        assert_eq!(g.0, threads as u64 * per_thread);
        assert_eq!(g.0, g.1);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = SpinLock::new(1);
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert_eq!(*lock.try_lock().expect("free"), 1);
    }
}
