//! The joiners of a fiber: the unparkers of whoever waits for it to finish (fibers or OS
//! threads; usually one, but a scoped fiber can be joined through its handle while its scope
//! waits for it too).
//!
//! Protocol, on the fiber's state word ([`TaskState`]): the finisher writes the result, then
//! `finish` (RUNNING → DONE, Release) returns whether a joiner registered; only then does it
//! take the waiters under the lock and unpark them. A joiner adds its unparker under the lock,
//! then `register_joiner` sets the JOINER bit and returns whether the fiber is DONE already
//! (then it does not wait); otherwise it parks until it sees DONE (Acquire), parking again after
//! a spurious return. The two read-modify-writes of one word are ordered: either `finish` sees
//! JOINER (and the waiter is in the list, added before the bit), or the joiner sees DONE. So no
//! wake-up is lost, and a fiber that nobody waits for finishes without touching the lock. A
//! joiner that gives up (its wait unwinds on cancellation) removes its own entry, so no stale
//! waiter is woken later. Model-checked in `loom_tests`.

use crate::loom::Mutex;
use crate::park::{self, Unparker};

use super::state::TaskState;

/// One waiting joiner: a key that is unique while it waits (the address of its wait's stack
/// frame) and its unparker.
type Waiter = (usize, Unparker);

/// The waiting joiners (see the module docs). The first one is stored inline, so a join with
/// one joiner allocates nothing.
pub(crate) struct JoinState {
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    first: Option<Waiter>,
    more: Vec<Waiter>,
}

impl JoinState {
    pub(crate) fn new() -> Self {
        JoinState {
            waiters: Mutex::new(Waiters::default()),
        }
    }

    /// The finisher's side, when [`TaskState::finish`] returned true: wakes every joiner.
    pub(crate) fn wake_joiners(&self) {
        let Waiters { first, more } = std::mem::take(&mut *self.waiters.lock());
        for (_, waiter) in first.into_iter().chain(more) {
            waiter.unpark();
        }
    }

    /// Blocks the calling fiber or thread until `state` (the same task's) is DONE.
    pub(crate) fn wait(&self, state: &TaskState) {
        if state.is_done() {
            return;
        }
        let key = &state as *const &TaskState as usize;
        {
            let mut waiters = self.waiters.lock();
            let entry = (key, park::unparker());
            if waiters.first.is_none() {
                waiters.first = Some(entry);
            } else {
                waiters.more.push(entry);
            }
        }
        struct Unregister<'a>(&'a JoinState, usize);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                let mut waiters = self.0.waiters.lock();
                if waiters.first.as_ref().is_some_and(|(k, _)| *k == self.1) {
                    waiters.first = None;
                } else {
                    waiters.more.retain(|(k, _)| *k != self.1);
                }
            }
        }
        let _unregister = Unregister(self, key);
        if state.register_joiner() {
            return;
        }
        while !state.is_done() {
            park::park();
        }
    }

    #[cfg(all(test, loom))]
    fn is_empty(&self) -> bool {
        let waiters = self.waiters.lock();
        waiters.first.is_none() && waiters.more.is_empty()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{thread, Arc};

    /// A fiber's state word and its joiners, as a task header holds them.
    struct Task {
        state: TaskState,
        join: JoinState,
    }

    fn running_task() -> Arc<Task> {
        let task = Task {
            state: TaskState::new_scheduled(),
            join: JoinState::new(),
        };
        // Popped by a worker: SCHEDULED → RUNNING.
        task.state.start_running();
        Arc::new(task)
    }

    fn finish(task: &Task) {
        if task.state.finish() {
            task.join.wake_joiners();
        }
    }

    /// The joiner waits while the finisher completes: the joiner always returns (a lost wake-up
    /// would be a loom deadlock) and sees completion.
    #[test]
    fn join_races_completion() {
        loom::model(|| {
            let task = running_task();
            let t = task.clone();
            let finisher = thread::spawn(move || finish(&t));
            task.join.wait(&task.state);
            assert!(task.state.is_done());
            finisher.join().unwrap();
            assert!(task.join.is_empty(), "no stale waiter left behind");
        });
    }

    /// Two joiners at once (a scoped fiber's handle joined while its scope waits for it): both
    /// are woken.
    #[test]
    fn two_joiners_race_completion() {
        loom::model(|| {
            let task = running_task();
            let t = task.clone();
            let other = thread::spawn(move || t.join.wait(&t.state));
            let t = task.clone();
            let finisher = thread::spawn(move || finish(&t));
            task.join.wait(&task.state);
            other.join().unwrap();
            finisher.join().unwrap();
            assert!(task.join.is_empty(), "no stale waiter left behind");
        });
    }

    /// A joiner that arrives after completion returns at once and leaves nothing behind.
    #[test]
    fn late_joiner_returns_at_once() {
        loom::model(|| {
            let task = running_task();
            let t = task.clone();
            let finisher = thread::spawn(move || finish(&t));
            finisher.join().unwrap();
            task.join.wait(&task.state);
            assert!(task.join.is_empty());
        });
    }
}
