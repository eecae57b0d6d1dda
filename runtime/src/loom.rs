//! The std/loom shim: every atomic, cell, lock and thread primitive that filament's concurrent
//! code uses is imported from here, never from `std` directly.
//!
//! Under `RUSTFLAGS="--cfg loom"` the same names resolve to loom's model-checked stand-ins, so a
//! protocol written once is both the production code and the model (the approach tokio takes).
//! crossbeam-deque and parking_lot are not loom-aware; under `cfg(loom)` this module offers
//! loom-built types with the interface our code uses from them ([`Mutex`] with parking_lot's
//! non-poisoning `lock()`), so the model checks our protocol around them.
//!
//! [`UnsafeCell`] has loom's closure-based API (`with`, `with_mut`) in both builds, so that loom
//! can track every access to cell contents.

#[cfg(loom)]
pub use loom::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(loom)]
pub use loom::thread;

#[cfg(not(loom))]
pub use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub use std::sync::Arc;
#[cfg(not(loom))]
pub use std::thread;

/// A cell whose contents are reached only through closures, so loom can check each access.
#[derive(Debug, Default)]
pub struct UnsafeCell<T: ?Sized> {
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self {
            inner: core::cell::UnsafeCell::new(value),
        }
    }

    /// Wraps `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self {
            inner: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Consumes the cell and returns its value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> UnsafeCell<T> {
    /// Runs `f` with a shared pointer to the contents. The caller's protocol must guarantee
    /// that no `with_mut` access runs at the same time.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(loom)]
        {
            self.inner.with(f)
        }
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
    }

    /// Runs `f` with a mutable pointer to the contents. The caller's protocol must guarantee
    /// exclusive access for the duration of `f`.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        {
            self.inner.with_mut(f)
        }
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
    }
}

/// A non-poisoning mutex with parking_lot's interface: `lock()` returns the guard directly.
/// It blocks the OS thread (not the fiber): use it only for short critical sections inside the
/// runtime.
#[cfg(not(loom))]
pub use parking_lot::{Mutex, MutexGuard};

#[cfg(loom)]
pub use self::loom_mutex::{Mutex, MutexGuard};

/// The lock of the sync primitives' waiter lists (loom's mutex under `cfg(loom)`).
#[cfg(loom)]
pub use self::loom_mutex::{Mutex as ListLock, MutexGuard as ListLockGuard};
/// The lock of the sync primitives' waiter lists: a spin lock (`crate::spin_lock`), or loom's
/// mutex under `cfg(loom)`.
#[cfg(not(loom))]
pub use crate::spin_lock::{SpinLock as ListLock, SpinLockGuard as ListLockGuard};

#[cfg(loom)]
mod loom_mutex {
    /// loom's mutex behind parking_lot's interface (no poisoning in the signature).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard of [`Mutex`].
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        /// Creates a mutex holding `value`.
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        /// Locks the mutex, blocking the (loom) thread.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Locks the mutex if it is free.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }

        /// Consumes the mutex and returns its value.
        pub fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(|e| e.into_inner())
        }
    }
}
