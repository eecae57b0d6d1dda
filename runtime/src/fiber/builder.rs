//! Spawning fibers: `spawn`, the per-fiber `Builder`, and the internal spawns used by
//! `block_on` and `scope`.

use std::io;
use std::panic::Location;
use std::sync::Arc;

use crate::runtime::default_runtime;
use crate::sched::runtime_hold::RuntimeRef;
use crate::sched::task::{new_task, new_task_unchecked};
use crate::sched::worker::{self, WorkerContext};
use crate::sched::{Shared, TaskRef};
use crate::stack::round_stack_size;

use super::join::JoinHandle;

/// Per-fiber settings, like `std::thread::Builder`.
///
/// ```
/// let rt = filament_runtime::Runtime::builder().workers(1).build().unwrap();
/// let h = rt.block_on(|| {
///     filament_runtime::Builder::new()
///         .name("worker-7")
///         .stack_size(64 * 1024)
///         .spawn(|| filament_runtime::current().name().map(String::from))
///         .unwrap()
///         .join()
///         .unwrap()
/// });
/// assert_eq!(h.as_deref(), Some("worker-7"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// Default settings: no name, the runtime's stack size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the fiber (shown by `current().name()`, overflow reports and dumps).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The fiber's stack size in bytes (rounded up to pages; too small or too large is an error
    /// from `spawn`).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the fiber on the current runtime (the caller's, when called from a fiber; else
    /// the default runtime).
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let at = Location::caller();
        with_current_shared(|shared, here| self.spawn_at(shared, here, at, f))
    }

    #[track_caller]
    pub(crate) fn spawn_on<F, T>(self, shared: &Arc<Shared>, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_at(shared, shared.here(), Location::caller(), f)
    }

    /// Spawns on `shared`, whose worker the calling thread is `here` (if it is one).
    fn spawn_at<F, T>(
        self,
        shared: &Arc<Shared>,
        here: Option<&WorkerContext>,
        at: &'static Location<'static>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let stack_size = match self.stack_size {
            Some(s) => round_stack_size(s)?,
            None => shared.config.stack_size,
        };
        let name = self.name.map(Arc::<str>::from);
        Ok(JoinHandle::new(submit(shared, here, |hold, id| {
            new_task(hold, id, name, stack_size, at, f)
        })))
    }
}

/// Makes a new task (`make`, given a hold on the runtime and a fresh id), counts and queues it.
/// `here` is the calling thread's worker of `shared` (`Shared::here`), looked up once by the
/// caller for the hold, the id, the counter, the queue and the backpressure check.
fn submit(
    shared: &Arc<Shared>,
    here: Option<&WorkerContext>,
    make: impl FnOnce(RuntimeRef, u64) -> TaskRef,
) -> TaskRef {
    let task = make(RuntimeRef::new(shared, here), shared.next_fiber_id_at(here));
    shared.bump_at(here, |c| &c.spawned);
    // SAFETY: `make` just created the task and returned its only reference; scheduling is what
    // publishes it.
    shared.schedule_at(here, unsafe { task.clone_unshared() });
    // `here` is not used after this call: the backpressure may suspend the fiber.
    worker::spawn_backpressure(here);
    task
}

/// The runtime of the calling fiber, or the default runtime.
pub(crate) fn current_shared() -> Arc<Shared> {
    with_current_shared(|shared, _| shared.clone())
}

/// Spawns a fiber running `f` on the current runtime (see [`Builder::spawn`]), like
/// `std::thread::spawn`. Outside any runtime, a default runtime with one worker per CPU starts
/// on first use.
///
/// ```
/// let h = filament_runtime::spawn(|| 1 + 1);
/// assert_eq!(h.join().unwrap(), 2);
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let at = Location::caller();
    // Borrowed, not cloned: every worker spawning would otherwise bounce the runtime's
    // reference count between the cores twice per spawn.
    with_current_shared(|shared, here| {
        Builder::new()
            .spawn_at(shared, here, at, f)
            .expect("a builder without a stack size cannot fail")
    })
}

/// Runs `f` with the runtime of the calling fiber (or worker thread), else the default runtime,
/// and the calling thread's worker of it, if any (what `Shared::here` would find). `f` must not
/// keep either reference past a blocking point of a fiber (see `worker::current`): `submit` uses
/// them only up to its backpressure yield.
fn with_current_shared<R>(f: impl FnOnce(&Arc<Shared>, Option<&WorkerContext>) -> R) -> R {
    match worker::current() {
        Some(ctx) => f(&ctx.shared, Some(ctx)),
        None => f(default_runtime().shared(), None),
    }
}

/// Spawns a fiber whose closure and result may borrow from the caller (`block_on`, `scope`).
/// The returned handle must be joined, and its result taken or dropped, before those borrows
/// end: the callers guarantee that.
#[track_caller]
pub(crate) fn spawn_scoped_on<'a, F, T>(shared: &Arc<Shared>, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'a,
    T: Send + 'a,
{
    let at = Location::caller();
    JoinHandle::new(submit(shared, shared.here(), |hold, id| {
        // SAFETY: the callers (`Runtime::block_on`, `Scope`) wait for the fiber to finish and
        // take or drop its result before 'a ends.
        unsafe { new_task_unchecked(hold, id, None, shared.config.stack_size, at, f) }
    }))
}

impl<T> JoinHandle<T> {
    /// Waits for completion and takes the result (used by `block_on`).
    pub(crate) fn join_now(self) -> std::thread::Result<T> {
        self.task.header.wait_done();
        self.take()
    }
}
