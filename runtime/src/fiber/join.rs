//! `JoinHandle`: waiting for a fiber, taking its result, cancelling it.

use std::fmt;
use std::marker::PhantomData;
use std::thread;

use crate::sched::TaskRef;

use super::current::Fiber;

/// An owned permission to join a fiber (to wait for it and take its result), like
/// `std::thread::JoinHandle`. Dropping it detaches the fiber.
pub struct JoinHandle<T> {
    pub(crate) task: TaskRef,
    pub(crate) _result: PhantomData<fn() -> T>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TaskRef) -> Self {
        JoinHandle {
            task,
            _result: PhantomData,
        }
    }

    /// Waits for the fiber to finish and returns its result, or the payload of its panic. From a
    /// fiber this parks the fiber (the worker runs others meanwhile); from an OS thread it blocks
    /// the thread. A cancelled fiber's payload is a [`crate::Cancelled`].
    #[track_caller]
    pub fn join(self) -> thread::Result<T> {
        let header = &self.task.header;
        if !header.state.is_done() {
            let _wait = crate::fiber::waiting("join", std::panic::Location::caller());
            header.wait_done();
        }
        self.take()
    }

    pub(crate) fn take(&self) -> thread::Result<T> {
        let mut out: Option<thread::Result<T>> = None;
        // SAFETY: `wait` observed completion; this handle is the only taker (it is consumed or,
        // for scoped handles, taken once), and `out` has the type this task was created with.
        unsafe {
            self.task
                .body
                .take_output(&mut out as *mut Option<thread::Result<T>> as *mut ())
        };
        out.expect("a finished fiber has a result until it is joined")
    }

    /// Asks the fiber to stop: it unwinds (running its destructors) at its next blocking point,
    /// and `join` then returns `Err` with a [`crate::Cancelled`] payload. A fiber that has not
    /// started yet never runs. Cancelling a finished fiber does nothing.
    pub fn cancel(&self) {
        if self.task.header.state.cancel() {
            // SAFETY: our `cancel` moved the task out of PARKED; we hold a reference.
            let task = unsafe { crate::sched::take_parked_ref(&self.task) };
            self.task.header.shared.schedule(task);
        }
    }

    /// True once the fiber has finished (its result is ready).
    pub fn is_finished(&self) -> bool {
        self.task.header.state.is_done()
    }

    /// The fiber's handle (id, name).
    pub fn fiber(&self) -> Fiber {
        Fiber::from_task(self.task.clone())
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.task.header.id)
            .field("name", &self.task.header.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}
