//! The running fiber: `current()`, `yield_now`, `sleep`, and the `Fiber` handle.

use std::fmt;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::sched::{worker, TaskRef};

/// A fiber's unique id within the process (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiberId(NonZeroU64);

impl FiberId {
    pub(crate) fn from_raw(id: u64) -> Self {
        FiberId(NonZeroU64::new(id).expect("fiber ids start at 1"))
    }

    /// The id as a number.
    pub fn as_u64(&self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for FiberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A handle to a fiber, like `std::thread::Thread`: its id and name, and `unpark`.
#[derive(Clone)]
pub struct Fiber {
    task: TaskRef,
}

impl Fiber {
    pub(crate) fn from_task(task: TaskRef) -> Self {
        Fiber { task }
    }

    /// The fiber's id.
    pub fn id(&self) -> FiberId {
        FiberId::from_raw(self.task.header.id)
    }

    /// The fiber's name, if it was given one (`Builder::name`).
    pub fn name(&self) -> Option<&str> {
        self.task.header.name.as_deref()
    }

    /// Sets the fiber's park token, waking it if it is in [`crate::park::park`].
    pub fn unpark(&self) {
        crate::sched::unpark_fiber(&crate::sched::FiberRef(self.task.clone()));
    }
}

impl fmt::Debug for Fiber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fiber")
            .field("id", &self.task.header.id)
            .field("name", &self.task.header.name)
            .finish()
    }
}

/// The fiber that calls it, or `None` on a thread that is not running a fiber.
pub fn try_current() -> Option<Fiber> {
    if !crate::sched::in_fiber() {
        return None;
    }
    worker::current_task_ref().map(Fiber::from_task)
}

/// The fiber that calls it.
///
/// # Panics
/// When called outside a fiber (use [`try_current`] there).
#[track_caller]
pub fn current() -> Fiber {
    try_current().expect("filament::current() called outside a fiber (see try_current)")
}

/// Lets the other runnable fibers of this worker run; the caller goes to the back of the queue.
/// Outside a fiber, yields the OS thread.
///
/// Inlined (with the switch inside it) so that the fiber, once resumed, continues in its caller
/// without executing a `ret` whose return-stack prediction the switch has invalidated.
#[inline]
pub fn yield_now() {
    if crate::sched::in_fiber() {
        worker::yield_fiber();
    } else {
        std::thread::yield_now();
    }
}

/// Suspends the calling fiber (or thread) for at least `duration`. Other fibers run meanwhile.
#[track_caller]
pub fn sleep(duration: Duration) {
    let now = Instant::now();
    match now.checked_add(duration) {
        Some(deadline) => sleep_between(now, deadline),
        None => loop {
            sleep(Duration::from_secs(86_400 * 365));
        },
    }
}

/// Suspends the calling fiber (or thread) until `deadline`.
#[track_caller]
pub fn sleep_until(deadline: Instant) {
    sleep_between(Instant::now(), deadline);
}

/// Sleeps from `now` (just read from the clock) until `deadline`.
#[track_caller]
fn sleep_between(now: Instant, deadline: Instant) {
    if deadline <= now {
        return;
    }
    if !crate::sched::in_fiber() {
        std::thread::sleep(deadline - now);
        return;
    }
    let _wait = crate::fiber::waiting("sleep", std::panic::Location::caller());
    // The first park knows its deadline is ahead (no second clock read); a park that ends early
    // (a stray token) parks again, checking the clock.
    if crate::sched::park_fiber_until_future(deadline) {
        return;
    }
    while !crate::park::park_until(Some(deadline)) {}
}
