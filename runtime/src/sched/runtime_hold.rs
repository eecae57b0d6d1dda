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
//!   matter once it is dropped. `Runtime::drop` calls [`RuntimeHolds::merge`] after it has joined
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

#[cfg(not(loom))]
use std::ops::Deref;
#[cfg(not(loom))]
use std::ptr::NonNull;

use crate::loom::{Arc, AtomicPtr, AtomicUsize, Ordering::*};

#[cfg(not(loom))]
use super::worker::WorkerContext;
#[cfg(not(loom))]
use super::Shared;

/// Added to `outside` until the merge, so it cannot reach zero before (task objects number far
/// fewer than this).
const BIAS: usize = 1 << (usize::BITS - 2);

/// The runtime side: the count of task objects held from outside the pool, and the collective
/// reference parked at the merge (see the module docs). Generic only so that the loom model can
/// stand in a small object for `Shared`; the runtime uses [`RuntimeHolds`].
pub(crate) struct TaskHolds<T> {
    outside: AtomicUsize,
    collective: AtomicPtr<T>,
}

/// The holds on a runtime's `Shared` (a field of it).
#[cfg(not(loom))]
pub(crate) type RuntimeHolds = TaskHolds<Shared>;

impl<T> TaskHolds<T> {
    pub(crate) fn new() -> Self {
        TaskHolds {
            outside: AtomicUsize::new(BIAS),
            collective: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// One more task object made outside the pool.
    fn take_outside(&self) {
        let prev = self.outside.fetch_add(1, Relaxed);
        debug_assert_ne!(
            prev, 0,
            "a task object made after its runtime's last one went"
        );
    }

    /// One task object made outside the pool, or made on a worker before the merge, is freed
    /// outside the pool. Returns the collective reference if this was the last task object
    /// after the merge: the caller drops it.
    fn release_outside(&self) -> Option<Arc<T>> {
        if self.outside.fetch_sub(1, AcqRel) == 1 {
            // Only possible after the merge (the bias): this was the last task object.
            Some(self.take_collective())
        } else {
            None
        }
    }

    /// The merge (module docs): `on_workers` is the sum of the per-worker counts (wrapping),
    /// final because no worker thread runs any more. Returns `collective` back when no task
    /// object is left; otherwise the last one to go drops it.
    fn merge_counts(&self, on_workers: usize, collective: Arc<T>) -> Option<Arc<T>> {
        self.collective
            .store(Arc::into_raw(collective).cast_mut(), Release);
        let delta = on_workers.wrapping_sub(BIAS);
        if self.outside.fetch_add(delta, AcqRel).wrapping_add(delta) == 0 {
            Some(self.take_collective())
        } else {
            None
        }
    }

    /// Takes the parked reference: the last task object is gone.
    fn take_collective(&self) -> Arc<T> {
        let ptr = self.collective.swap(std::ptr::null_mut(), Acquire);
        assert!(!ptr.is_null(), "task holds released before the merge");
        // SAFETY: `ptr` came from `Arc::into_raw` in `merge_counts`, and only the one who
        // brought `outside` to zero gets here, once (the swap leaves null behind).
        unsafe { Arc::from_raw(ptr) }
    }
}

#[cfg(not(loom))]
impl RuntimeHolds {
    /// Called once by `Runtime::drop` when no worker thread of `shared` runs any more: hands the
    /// task objects still alive a reference of their own (see the module docs).
    pub(crate) fn merge(shared: &Arc<Shared>) {
        let on_workers = shared.workers.iter().fold(0usize, |sum, w| {
            sum.wrapping_add(w.counters.task_holds.load(Acquire) as usize)
        });
        drop(shared.task_holds.merge_counts(on_workers, shared.clone()));
    }
}

/// A task object's pointer to its runtime, counted in the runtime's [`RuntimeHolds`].
#[cfg(not(loom))]
pub(crate) struct RuntimeRef {
    ptr: NonNull<Shared>,
}

// SAFETY: `Shared` is `Send + Sync` (it is shared through `Arc` by the worker threads), and the
// hold's count is updated with atomics or by the worker slot's own thread.
#[cfg(not(loom))]
unsafe impl Send for RuntimeRef {}
// SAFETY: as above; `&RuntimeRef` only gives out `&Shared`.
#[cfg(not(loom))]
unsafe impl Sync for RuntimeRef {}

#[cfg(not(loom))]
impl RuntimeRef {
    /// Takes a hold on `shared` for a new task object; `here` is the calling thread's worker of
    /// `shared`, if it is one ([`Shared::here`]).
    pub(crate) fn new(shared: &Arc<Shared>, here: Option<&WorkerContext>) -> Self {
        match here {
            Some(ctx) => count_on_worker(shared, ctx, 1),
            None => shared.task_holds.take_outside(),
        }
        RuntimeRef {
            ptr: NonNull::from(&**shared),
        }
    }
}

#[cfg(not(loom))]
impl Deref for RuntimeRef {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        // SAFETY: the hold this value took keeps `Shared` alive until it is dropped (module
        // docs: the `Runtime`'s `Arc`, then the collective one).
        unsafe { self.ptr.as_ref() }
    }
}

#[cfg(not(loom))]
impl Drop for RuntimeRef {
    fn drop(&mut self) {
        let shared: &Shared = self;
        match shared.here() {
            Some(ctx) => count_on_worker(shared, ctx, u64::MAX),
            // The returned `Arc` (if this was the last task object) is dropped after `shared`'s
            // last use.
            None => drop(shared.task_holds.release_outside()),
        }
    }
}

/// Adds `delta` (wrapping) to the count of `ctx`'s worker slot.
#[cfg(not(loom))]
fn count_on_worker(shared: &Shared, ctx: &WorkerContext, delta: u64) {
    let c = &shared.workers[ctx.index].counters.task_holds;
    // Only the thread serving this slot writes it (see `Shared::bump_at`).
    c.store(c.load(Relaxed).wrapping_add(delta), Release);
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::thread;

    /// The merge races the last task objects being freed outside the pool (one made on a
    /// worker, one made outside): the collective reference is handed back exactly once, and
    /// only when no task object is left (loom checks the `Arc` is not leaked or freed twice).
    #[test]
    fn merge_races_the_last_releases() {
        loom::model(|| {
            let holds = Arc::new(TaskHolds::<u8>::new());
            // A task object made outside the pool, and one made on worker 0 (count 1).
            holds.take_outside();
            let on_workers = 1usize;
            let releasers: Vec<_> = (0..2)
                .map(|_| {
                    let holds = holds.clone();
                    thread::spawn(move || holds.release_outside().is_some())
                })
                .collect();
            let collective = Arc::new(0u8);
            let merged_last = holds.merge_counts(on_workers, collective.clone()).is_some();
            let released_last = releasers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&last| last)
                .count();
            assert_eq!(
                merged_last as usize + released_last,
                1,
                "handed back exactly once"
            );
            assert_eq!(
                Arc::strong_count(&collective),
                1,
                "the parked clone was dropped"
            );
        });
    }
}

#[cfg(all(test, not(loom)))]
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
        // Dropping the runtime cancels the fibers that have not run yet; the ones spawned by
        // fibers must have run for the sum below, so wait for them (at most 10 s).
        let start = std::time::Instant::now();
        while !from_fibers.iter().all(|h| h.is_finished()) {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
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
        let ended = from_thread.into_iter().filter(|h| h.is_finished()).count();
        assert_eq!(
            ended, 100,
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
