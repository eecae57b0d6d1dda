//! The scheduled fiber ("task"): one heap object per spawn, holding the closure until the fiber
//! first runs, the fiber (and so its stack) while it lives, and the result until it is joined.
//!
//! `Task<dyn Body>` keeps the type-independent [`Header`] at a fixed offset, so the scheduler
//! reads the state word without a virtual call, and the closure/result types live only in the
//! `Body` implementation. One allocation per spawn.
//!
//! Who touches what:
//! * `header.state` — atomic; see [`super::state`].
//! * `header.fiber` — only the worker that owns the task (it popped it, so the state is RUNNING),
//!   or the task's destructor (no other reference exists then).
//! * `body` — the closure is taken and the result written by `Body::run`, on the fiber, exactly
//!   once; the result is taken by the single `JoinHandle` after `join` saw DONE.
//! * `join` — DONE is published in `state` with Release after the result is written; the
//!   joiners' `Unparker`s sit under a small lock (see [`JoinState`]).

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe, Location};
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread;

use crate::fiber::RawFiber;
use crate::loom::{AtomicBool, AtomicUsize};

use super::join_state::JoinState;
use super::runtime_hold::RuntimeRef;
use super::state::TaskState;
use super::task_ref::TaskRef;

/// `registry_slot` of a fiber that is not in the registry (it has not suspended yet).
pub(crate) const NOT_REGISTERED: usize = usize::MAX;

/// `home` of a fiber that has not run yet.
pub(crate) const NO_HOME: usize = usize::MAX;

/// The unwind payload of a cancelled fiber: `join` returns `Err` holding a `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// The type-independent part of a task.
///
/// `repr(C)`, hot fields first: a fiber that parks and resumes over and over (a sleep loop, a
/// socket server) touches the state word, the reference count, the runtime, its home, the wait
/// record, the park flags and the fiber's saved stack pointer on every cycle, and those fit in
/// the first two cache lines (`worker::PREFETCH_HEADER_BYTES` fetches exactly those). The rest
/// (names, ids, join waiters, registry slot) is read at spawn, at the end, or by `Runtime::dump`.
/// With 10,000 sleepers per worker the headers outgrow the core's cache, so every line a cycle
/// touches is a miss (the assertions below the struct keep the layout honest). The lines are
/// real cache lines because `task_memory` aligns task objects of up to 1 KiB to 64 bytes;
/// a larger closure's task comes from the global allocator and may straddle one more line.
#[repr(C)]
pub(crate) struct Header {
    // First line.
    pub(crate) state: TaskState,
    /// The count of [`TaskRef`]s (see [`super::task_ref`]).
    pub(crate) refs: AtomicUsize,
    /// The runtime; task objects hold it collectively (see [`super::runtime_hold`]).
    pub(crate) shared: RuntimeRef,
    pub(crate) home: AtomicUsize,
    /// What the fiber is blocked on, for `Runtime::dump` (written by the fiber itself).
    pub(crate) wait: super::wait_slot::WaitSlot,
    // Second line.
    /// A park token taken out of the state word by `TaskState::start_running`; the fiber's
    /// next park consumes it. Only the thread running the fiber touches it.
    pub(crate) token: AtomicBool,
    /// Set once the cancellation unwind has been delivered (touched only by the fiber).
    pub(crate) cancel_delivered: AtomicBool,
    /// Set while the fiber must not unwind on cancellation (see `worker::CancelShield`).
    pub(crate) cancel_shield: AtomicBool,
    /// True while the fiber waits in its home worker's queue after `yield_now` without having
    /// left RUNNING (see `WorkerContext::run_task`); only `Runtime::dump` reads it.
    pub(crate) yielded: AtomicBool,
    /// The fiber, created on first run. See the module docs for who may touch it. Its hot
    /// fields come first (see `RawFiber`).
    pub(crate) fiber: UnsafeCell<Option<RawFiber<()>>>,
    // Cold.
    pub(crate) join: JoinState,
    pub(crate) id: u64,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) stack_size: usize,
    pub(crate) spawned_at: &'static Location<'static>,
    /// Where the fiber sits in the runtime's registry of suspended fibers (encoded by
    /// [`super::registry`]), or [`NOT_REGISTERED`].
    pub(crate) registry_slot: AtomicUsize,
}

/// The hot fields of [`Header`] are in its first two cache lines (loom's atomics are larger, so
/// the check is for the real build only).
#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    let line = super::task_memory::GRAIN;
    assert!(offset_of!(Header, wait) + size_of::<super::wait_slot::WaitSlot>() <= line);
    assert!(offset_of!(Header, yielded) < 2 * line);
    assert!(offset_of!(Header, fiber) + crate::fiber::RAW_FIBER_HOT_BYTES <= 2 * line);
};

/// A task: header first, then the typed body.
pub(crate) struct Task<B: ?Sized> {
    pub(crate) header: Header,
    pub(crate) body: B,
}

impl Header {
    /// Blocks the calling fiber or thread until the fiber has finished (its result is then
    /// visible); see [`JoinState`].
    pub(crate) fn wait_done(&self) {
        self.join.wait(&self.state);
    }
}

/// The reference a PARKED fiber's state owns, taken by whoever moves the fiber out of PARKED
/// (a wake, a cancel, its timer), to queue it.
///
/// A parked fiber is in no queue, but its task must stay alive for the wake that will queue it.
/// Instead of the waker taking a new reference (a locked increment) and the worker dropping the
/// one it ran the fiber with (a locked decrement), the worker that publishes PARKED keeps its
/// reference uncounted-for (`mem::forget`) and the single thread whose compare-and-swap moves the
/// state out of PARKED takes it over here. Exactly one such CAS succeeds per park
/// (`super::state`), so the reference is taken exactly once.
///
/// # Safety
///
/// The caller's own state transition (`TaskState::unpark`, `cancel` or `timer_fire` returning
/// true) has just moved this task out of PARKED, and `task` is alive (the caller holds a
/// reference or, for a bare pointer, knows the task cannot be freed during the call).
pub(crate) unsafe fn take_parked_ref(task: &Task<dyn Body>) -> TaskRef {
    // SAFETY: the parked state owned one count (see above), which the caller's transition
    // hands to us; the task is alive (caller).
    unsafe { TaskRef::from_raw(NonNull::from(task)) }
}

// SAFETY: `header.fiber` is accessed only by the task's owning worker (state RUNNING) or by the
// destructor; the started fiber moves between threads only under the migration contract the
// runtime's creator accepted (`migrate_fibers`), otherwise it stays on its home worker. All other
// fields are atomics, locks or immutable.
unsafe impl<B: ?Sized + Send + Sync> Send for Task<B> {}
// SAFETY: as above; shared access goes through atomics and locks only.
unsafe impl<B: ?Sized + Send + Sync> Sync for Task<B> {}

/// The typed part of a task.
pub(crate) trait Body: Send + Sync {
    /// Runs the closure (on the fiber) and stores its result. Called at most once.
    fn run(&self);
    /// Ends a task that never ran: stores `Err(payload)` and drops the closure.
    fn fail_unstarted(&self, payload: Box<dyn Any + Send>);
    /// Moves the result out into `*out`.
    ///
    /// # Safety
    /// `out` must point at an `Option<thread::Result<T>>` for this body's `T`; the result must be
    /// complete (`TaskState::is_done`) and taken at most once.
    unsafe fn take_output(&self, out: *mut ());
    /// Drops a result that nobody took; returns true if it was a panic.
    fn drop_output(&self) -> bool;
}

enum Stage<F, T> {
    Pending(F),
    Running,
    Finished(thread::Result<T>),
    Taken,
}

pub(crate) struct BodyImpl<F, T> {
    stage: UnsafeCell<Stage<F, T>>,
}

// SAFETY: the stage is touched by one party at a time (see the module docs): the closure `F`
// may be moved to another thread before it runs (F: Send) and the result `T` to the joiner
// (T: Send).
unsafe impl<F: Send, T: Send> Sync for BodyImpl<F, T> {}

impl<F, T> Body for BodyImpl<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self) {
        // SAFETY: `run` is called once, by the fiber of this task, before completion is
        // published: no one else touches the stage now.
        let stage = unsafe { &mut *self.stage.get() };
        let f = match std::mem::replace(stage, Stage::Running) {
            Stage::Pending(f) => f,
            _ => unreachable!("a task body runs once"),
        };
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        // SAFETY: as above.
        unsafe { *self.stage.get() = Stage::Finished(result) };
    }

    fn fail_unstarted(&self, payload: Box<dyn Any + Send>) {
        // SAFETY: called by the owning worker for a task that never ran, before completion.
        let stage = unsafe { &mut *self.stage.get() };
        *stage = Stage::Finished(Err(payload));
    }

    unsafe fn take_output(&self, out: *mut ()) {
        // SAFETY: completion was observed with Acquire, so the writer is done; the caller
        // guarantees a single taker and the type of `out`.
        let stage = unsafe { &mut *self.stage.get() };
        if let Stage::Finished(result) = std::mem::replace(stage, Stage::Taken) {
            // SAFETY: the caller guarantees `out`'s type.
            unsafe { *(out as *mut Option<thread::Result<T>>) = Some(result) };
        }
    }

    fn drop_output(&self) -> bool {
        debug_assert!(!matches!(
            // SAFETY: a shared peek; the caller observed completion.
            unsafe { &*self.stage.get() },
            Stage::Pending(_) | Stage::Running
        ));
        // SAFETY: called after completion by the scope that owns the task's results; the handle
        // that could also take it has been consumed or is never used again (scope ended).
        let stage = unsafe { &mut *self.stage.get() };
        matches!(
            std::mem::replace(stage, Stage::Taken),
            Stage::Finished(Err(_))
        )
    }
}

/// Creates a task for `f`.
pub(crate) fn new_task<F, T>(
    shared: RuntimeRef,
    id: u64,
    name: Option<Arc<str>>,
    stack_size: usize,
    spawned_at: &'static Location<'static>,
    f: F,
) -> TaskRef
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: F and T are 'static, so nothing they borrow can end.
    unsafe { new_task_unchecked(shared, id, name, stack_size, spawned_at, f) }
}

/// Creates a task for a closure and result that may borrow data living for `'a`.
///
/// # Safety
/// The caller must make sure the fiber has finished, and its result has been taken or dropped
/// (`Body::take_output` / `Body::drop_output`), before `'a` ends. (The task object itself may
/// outlive `'a`: by then it holds neither an `F` nor a `T`.)
pub(crate) unsafe fn new_task_unchecked<'a, F, T>(
    shared: RuntimeRef,
    id: u64,
    name: Option<Arc<str>>,
    stack_size: usize,
    spawned_at: &'static Location<'static>,
    f: F,
) -> TaskRef
where
    F: FnOnce() -> T + Send + 'a,
    T: Send + 'a,
{
    #[cfg(test)]
    shared
        .live_tasks
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let task = Task {
        header: Header {
            refs: AtomicUsize::new(1),
            state: TaskState::new_scheduled(),
            id,
            name,
            stack_size,
            home: AtomicUsize::new(NO_HOME),
            fiber: UnsafeCell::new(None),
            join: JoinState::new(),
            shared,
            spawned_at,
            registry_slot: AtomicUsize::new(NOT_REGISTERED),
            cancel_delivered: AtomicBool::new(false),
            cancel_shield: AtomicBool::new(false),
            yielded: AtomicBool::new(false),
            token: AtomicBool::new(false),
            wait: super::wait_slot::WaitSlot::new(),
        },
        body: BodyImpl {
            stage: UnsafeCell::new(Stage::Pending(f)),
        },
    };
    // SAFETY: the count starts at 1; the caller guarantees no `F` or `T` is used or dropped
    // after 'a.
    unsafe { TaskRef::new(task) }
}

#[cfg(test)]
impl Drop for Header {
    fn drop(&mut self) {
        self.shared
            .live_tasks
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crate::park::{park, park_until, unparker, Unparker};
    use crate::Runtime;

    /// Every way out of PARKED (a wake from a fiber, a wake from an OS thread, a timer, a
    /// cancel) hands the parked state's task reference on exactly once: afterwards every task
    /// object is freed (a missed hand-off would leak it; a double one would free it early).
    #[test]
    fn parked_references_are_handed_on_exactly_once() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let shared = rt.shared().clone();
        rt.block_on(|| {
            let published: Arc<Mutex<Vec<(u32, Unparker)>>> = Arc::default();
            let handles: Vec<_> = (0..400u32)
                .map(|i| {
                    let published = published.clone();
                    crate::spawn(move || match i % 4 {
                        // Woken by its timer.
                        0 => {
                            park_until(Some(Instant::now() + Duration::from_millis(2)));
                        }
                        // Parked until cancelled.
                        3 => loop {
                            park();
                        },
                        // Woken by a fiber (1) or by an OS thread (2).
                        _ => {
                            published.lock().unwrap().push((i, unparker()));
                            park();
                        }
                    })
                })
                .collect();
            crate::sleep(Duration::from_millis(20));
            for h in handles.iter().skip(3).step_by(4) {
                h.cancel();
            }
            let (by_fiber, by_thread): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *published.lock().unwrap())
                    .into_iter()
                    .partition(|(i, _)| i % 4 == 1);
            by_fiber.iter().for_each(|(_, u)| u.unpark());
            std::thread::spawn(move || by_thread.iter().for_each(|(_, u)| u.unpark()))
                .join()
                .unwrap();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.join().is_err(), i % 4 == 3, "fiber {i}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.live_tasks.load(Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(shared.live_tasks.load(Relaxed), 0, "task objects leaked");
    }
}
