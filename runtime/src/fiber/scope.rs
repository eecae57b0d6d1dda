//! Scoped fibers, like `std::thread::scope`: fibers that may borrow from the enclosing stack,
//! all joined before `scope` returns.
//!
//! Soundness: every fiber spawned in the scope is recorded; `scope` waits for all of them to
//! finish (even when the scope's closure panics) and then drops every result that was not
//! joined, so no borrow of `'env` outlives the call. The results are dropped only after *all*
//! fibers finished: a handle may be joined by another scoped fiber, concurrently with the
//! scope's own wait, and only then is it certain that no handle is left to take a result.

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use crate::loom::Mutex;
use crate::sched::{Shared, TaskRef};

use super::builder::{current_shared, spawn_scoped_on};
use super::join::JoinHandle;

/// A scope to spawn borrowing fibers in; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<TaskRef>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// A handle to join one scoped fiber.
pub struct ScopedJoinHandle<'scope, T> {
    inner: JoinHandle<T>,
    _scope: PhantomData<&'scope ()>,
}

/// Runs `f` with a [`Scope`] whose fibers may borrow non-`'static` data; returns after every
/// fiber spawned in it has finished. If a fiber panicked and was not joined, `scope` panics
/// after all have finished (as `std::thread::scope` does).
///
/// ```
/// let mut data = vec![1, 2, 3];
/// filament_runtime::run(|| {
///     filament_runtime::scope(|s| {
///         s.spawn(|| assert_eq!(data.len(), 3));
///     });
/// });
/// data.push(4);
/// ```
#[track_caller]
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        shared: current_shared(),
        tasks: Mutex::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    let _wait = crate::fiber::waiting("scope", std::panic::Location::caller());
    // Wait for every fiber first (fibers may spawn more while we wait), and only then drop the
    // results nobody took: a handle can be joined by another scoped fiber, which may take its
    // result after we saw that fiber finish. Once all are finished, every handle is gone.
    let mut finished = Vec::new();
    loop {
        let tasks = std::mem::take(&mut *scope.tasks.lock());
        if tasks.is_empty() {
            break;
        }
        for task in tasks {
            task.header.wait_done();
            finished.push(task);
        }
    }
    let mut unjoined_panic = false;
    for task in finished {
        unjoined_panic |= task.body.drop_output();
    }
    match result {
        Err(payload) => panic::resume_unwind(payload),
        Ok(_) if unjoined_panic => panic!("a scoped fiber panicked"),
        Ok(value) => value,
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a fiber that may borrow from outside the scope.
    #[track_caller]
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let inner = spawn_scoped_on(&self.shared, f);
        self.tasks.lock().push(inner.task.clone());
        ScopedJoinHandle {
            inner,
            _scope: PhantomData,
        }
    }
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the fiber and returns its result (or its panic's payload).
    #[track_caller]
    pub fn join(self) -> thread::Result<T> {
        self.inner.join()
    }

    /// True once the fiber has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Asks the fiber to unwind at its next blocking point.
    pub fn cancel(&self) {
        self.inner.cancel()
    }
}
