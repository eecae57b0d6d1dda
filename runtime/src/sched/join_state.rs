//! The join-handle state machine: a completion flag plus the joiner's unparker, shared by a
//! fiber (the finisher) and whoever joins it (a fiber or an OS thread).
//!
//! Protocol: the finisher writes the result, sets `complete` (Release), then takes the waiter
//! under the lock and unparks it. The joiner registers its unparker under the lock, re-checks
//! `complete` (Acquire), then parks; it parks again after a spurious return until `complete`.
//! Either the finisher finds the waiter, or the joiner sees `complete` on its re-check: the
//! wake-up cannot be lost. A joiner that gives up (its wait unwinds on cancellation) removes its
//! unparker, so no stale waiter is woken later. Model-checked in `loom_tests`.

use crate::loom::{AtomicBool, Mutex, Ordering::*};
use crate::park::{self, Unparker};

/// Completion flag plus the joiner's unparker (see the module docs).
pub(crate) struct JoinState {
    complete: AtomicBool,
    waiter: Mutex<Option<Unparker>>,
}

impl JoinState {
    pub(crate) fn new() -> Self {
        JoinState {
            complete: AtomicBool::new(false),
            waiter: Mutex::new(None),
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.complete.load(Acquire)
    }

    /// Publishes completion and wakes the joiner, if any.
    pub(crate) fn complete(&self) {
        self.complete.store(true, Release);
        let waiter = self.waiter.lock().take();
        if let Some(w) = waiter {
            w.unpark();
        }
    }

    /// Blocks the calling fiber or thread until completion.
    pub(crate) fn wait(&self) {
        if self.is_complete() {
            return;
        }
        *self.waiter.lock() = Some(park::unparker());
        struct Unregister<'a>(&'a JoinState);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0.waiter.lock().take();
            }
        }
        let _unregister = Unregister(self);
        while !self.is_complete() {
            park::park();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{thread, Arc};

    /// The joiner waits while the finisher completes: the joiner always returns (a lost wake-up
    /// would be a loom deadlock) and sees completion.
    #[test]
    fn join_races_completion() {
        loom::model(|| {
            let state = Arc::new(JoinState::new());
            let s = state.clone();
            let finisher = thread::spawn(move || s.complete());
            state.wait();
            assert!(state.is_complete());
            finisher.join().unwrap();
            assert!(state.waiter.lock().is_none(), "no stale waiter left behind");
        });
    }

    /// Two joiners in turn (the second arrives after the first returned) and completion.
    #[test]
    fn late_joiner_returns_at_once() {
        loom::model(|| {
            let state = Arc::new(JoinState::new());
            let s = state.clone();
            let finisher = thread::spawn(move || s.complete());
            finisher.join().unwrap();
            state.wait();
            assert!(state.waiter.lock().is_none());
        });
    }
}
