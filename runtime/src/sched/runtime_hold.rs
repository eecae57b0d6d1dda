//! How task objects keep their runtime's [`Shared`] alive without a shared reference count.
//!
//! Every task object points at its runtime (`Header::shared`): wakes, timers and joins reach the
//! runtime through it, and a task object can outlive the `Runtime` (a `JoinHandle` or a `Fiber`
//! kept by the user). An `Arc<Shared>` per task would be correct, but it costs two locked
//! instructions per fiber on one cache line that every worker writes: the spawning worker
//! increments it and the worker that frees the task decrements it, so with two workers the line
//! moves between the cores twice per fiber.
//!
//! Instead the task objects hold the runtime *collectively*:
//!
//! * A task made or freed on one of the runtime's workers adds or subtracts one on that
//!   worker's own count (`Counters::task_holds`, written only by the thread serving the slot,
//!   like the other counters: a plain load and store, no locked instruction, no shared line).
//! * A task made or freed anywhere else (a plain thread, another runtime's worker) uses the
//!   `outside` count, atomically. Until the runtime is dropped, `outside` carries a bias of
//!   [`BIAS`] so it cannot reach zero however the holds are spread over the counts.
//! * While the `Runtime` exists its own `Arc<Shared>` keeps `Shared` alive, so the counts only
//!   matter once it is dropped. `Runtime::drop` calls [`TaskHolds::merge`] after it has joined
//!   every worker thread (so the per-worker counts are final and nobody writes them again): it
//!   parks one `Arc<Shared>` clone in `collective`, then adds the per-worker counts minus the
//!   bias to `outside` in one read-modify-write. From then on `outside` is the exact number of
//!   live task objects; every task freed later is freed outside the pool and subtracts one.
//! * Whoever brings `outside` to zero (the merge itself, or the last task freed after it) drops
//!   the parked clone. The clone is stored before the merge's read-modify-write (Release), and
//!   the one who reaches zero read `outside` with Acquire, so it sees the clone.
//!
//! A task object therefore never sees its `Shared` freed: before the merge the `Runtime` holds
//! it; after the merge the parked clone does until the last task object is gone.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::loom::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

use super::worker::WorkerContext;
use super::Shared;

/// Added to `outside` until the merge, so it cannot reach zero before (task objects number far
/// fewer than this).
const BIAS: usize = 1 << (usize::BITS - 2);

/// The runtime side: the count of task objects held from outside the pool, and the collective
/// reference parked at the merge (see the module docs).
pub(crate) struct TaskHolds {
    outside: AtomicUsize,
    collective: AtomicPtr<Shared>,
}

impl TaskHolds {
    pub(crate) fn new() -> Self {
        TaskHolds {
            outside: AtomicUsize::new(BIAS),
            collective: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Called once by `Runtime::drop` when no worker thread of `shared` runs any more: hands the
    /// task objects still alive a reference of their own (see the module docs).
    pub(crate) fn merge(shared: &Arc<Shared>) {
        let holds = &shared.task_holds;
        let on_workers = shared.workers.iter().fold(0usize, |sum, w| {
            sum.wrapping_add(w.counters.task_holds.load(Acquire) as usize)
        });
        holds
            .collective
            .store(Arc::into_raw(shared.clone()).cast_mut(), Release);
        let delta = on_workers.wrapping_sub(BIAS);
        if holds.outside.fetch_add(delta, AcqRel).wrapping_add(delta) == 0 {
            holds.release_collective();
        }
    }

    /// Drops the parked reference: the last task object is gone.
    fn release_collective(&self) {
        let ptr = self.collective.swap(std::ptr::null_mut(), Acquire);
        debug_assert!(!ptr.is_null(), "released before the merge");
        // SAFETY: `ptr` came from `Arc::into_raw` in `merge`, and only the one who brought
        // `outside` to zero gets here, once (the swap leaves null behind).
        drop(unsafe { Arc::from_raw(ptr) });
    }
}

/// A task object's pointer to its runtime, counted in the runtime's [`TaskHolds`].
pub(crate) struct RuntimeRef {
    ptr: NonNull<Shared>,
}

// SAFETY: `Shared` is `Send + Sync` (it is shared through `Arc` by the worker threads), and the
// hold's count is updated with atomics or by the worker slot's own thread.
unsafe impl Send for RuntimeRef {}
// SAFETY: as above; `&RuntimeRef` only gives out `&Shared`.
unsafe impl Sync for RuntimeRef {}

impl RuntimeRef {
    /// Takes a hold on `shared` for a new task object; `here` is the calling thread's worker of
    /// `shared`, if it is one ([`Shared::here`]).
    pub(crate) fn new(shared: &Arc<Shared>, here: Option<&WorkerContext>) -> Self {
        count(shared, here, 1);
        RuntimeRef {
            ptr: NonNull::from(&**shared),
        }
    }
}

impl Deref for RuntimeRef {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        // SAFETY: the hold this value took keeps `Shared` alive until it is dropped (module
        // docs: the `Runtime`'s `Arc`, then the collective one).
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for RuntimeRef {
    fn drop(&mut self) {
        let shared: &Shared = self;
        let here = shared.here();
        if here.is_some() {
            count(shared, here, -1);
        } else if shared.task_holds.outside.fetch_sub(1, AcqRel) == 1 {
            // Only possible after the merge: this was the last task object.
            shared.task_holds.release_collective();
        }
    }
}

/// Adds `delta` to the calling thread's count: its worker's own, or `outside`.
fn count(shared: &Shared, here: Option<&WorkerContext>, delta: i64) {
    match here {
        Some(ctx) => {
            let c: &AtomicU64 = &shared.workers[ctx.index].counters.task_holds;
            // Only the thread serving this slot writes it (see `Shared::bump_at`).
            c.store(c.load(Relaxed).wrapping_add(delta as u64), Release);
        }
        None => {
            shared.task_holds.outside.fetch_add(delta as usize, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::Runtime;

    /// Handles kept past the `Runtime` keep `Shared` alive, and the last one to go frees it,
    /// whether the fibers' task objects were made on a worker or on a plain thread.
    #[test]
    fn handles_outliving_the_runtime_keep_it_until_the_last_goes() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let weak = Arc::downgrade(rt.shared());
        let from_fibers = rt.block_on(|| {
            (0..100)
                .map(|i| crate::spawn(move || i))
                .collect::<Vec<_>>()
        });
        let from_thread: Vec<_> = (0..100)
            .map(|i| {
                crate::Builder::new()
                    .spawn_on(rt.shared(), move || i)
                    .unwrap()
            })
            .collect();
        drop(rt);
        assert!(
            weak.upgrade().is_some(),
            "freed while task objects point at it"
        );
        let sum: i32 = from_fibers.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 4950);
        assert!(
            weak.upgrade().is_some(),
            "freed while task objects point at it"
        );
        // Joined on this plain thread: the outside count reaches zero with the last one.
        let cancelled = from_thread.into_iter().filter(|h| h.is_finished()).count();
        assert_eq!(
            cancelled, 100,
            "every fiber ended (ran or was cancelled) before the drop"
        );
        assert!(
            weak.upgrade().is_none(),
            "the last task object's drop frees `Shared`"
        );
    }

    /// With no task object left, dropping the runtime frees `Shared` at once.
    #[test]
    fn a_runtime_without_live_task_objects_is_freed_by_its_drop() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let weak = Arc::downgrade(rt.shared());
        rt.block_on(|| {
            let hs: Vec<_> = (0..1000).map(|i| crate::spawn(move || i)).collect();
            hs.into_iter().for_each(|h| drop(h.join()));
        });
        drop(rt);
        assert!(weak.upgrade().is_none());
    }
}
