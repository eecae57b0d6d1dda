//! The state word of a scheduled fiber: who owns it, and the park token.
//!
//! ```text
//!  bits 0-1  lifecycle   RUNNING (0)   a worker is running it, or is about to decide where it goes
//!                        PARKED (1)    suspended in `park`, in no queue: only a wake re-queues it
//!                                      (it owns one reference to the task, which the wake takes
//!                                      over: `task::take_parked_ref`)
//!                        SCHEDULED (2) in a run queue (or being handed to one): the queue owns it
//!                        DONE (3)      finished; wakes are ignored
//!  bit 2     NOTIFIED    the park token (std::thread::park semantics)
//!  bit 3     CANCELLED   JoinHandle::cancel was called
//!  bit 4     JOINER      a joiner has put its unparker in the task's `JoinState` (set once by
//!                        the joiner, never cleared; see `join_state`)
//!  bits 8..  generation  +1 on every wake from PARKED, so a stale timer cannot wake a later park
//! ```
//!
//! Transitions and who makes them:
//!
//! * spawn → SCHEDULED; the pusher owns the fiber until a worker pops it.
//! * pop: SCHEDULED → RUNNING ([`TaskState::start_running`]), by the popping worker, which
//!   also takes the token out of the word and hands it to the fiber (`Header::token`): the
//!   token is then that flag *or* NOTIFIED, and a park consumes either.
//! * yield: RUNNING → SCHEDULED, by the worker after the fiber suspended — except for a pinned
//!   fiber of a non-migrating runtime, which goes to its worker's private queue and stays
//!   RUNNING (owned by that worker; a wake only leaves the token either way), so a yield costs
//!   no read-modify-write; the worker pops it without `start_running`.
//! * park, in two halves. The fiber first consumes a pending token ([`TaskState::take_token`])
//!   and, if there was none, suspends. Only after the switch — when its stack is fully saved —
//!   does the worker publish PARKED ([`TaskState::finish_park`]); if a token arrived in between,
//!   the CAS fails, sees NOTIFIED and the worker resumes the fiber instead of parking it.
//! * wake ([`TaskState::unpark`], any thread): sets NOTIFIED; if the fiber was PARKED it becomes
//!   SCHEDULED (generation + 1) and the waker must queue it. A wake while RUNNING or SCHEDULED
//!   only leaves the token.
//! * timer ([`TaskState::timer_fire`]): PARKED with the same generation → SCHEDULED, without a
//!   token (the park reports a timeout). A timer that fires while its park is still on the way
//!   (RUNNING, same generation) leaves the token instead, so `finish_park` resumes the fiber.
//!   A park that ends through the token in `finish_park` also starts a new generation.
//! * finish: RUNNING → DONE, returning whether JOINER was set (then the finisher wakes the
//!   joiner). Joining sets JOINER ([`TaskState::register_joiner`]) after it stored its
//!   unparker and learns in the same instruction whether the fiber is DONE already. Both are
//!   read-modify-writes of this word, so one of them sees the other: this is the whole join
//!   protocol, and a fiber nobody joins finishes with the one `fetch_or` it always paid.
//!
//! **No lost wake-up:** a wake either finds PARKED (and queues the fiber itself), or happens
//! while the worker still owns the fiber (RUNNING/SCHEDULED) and leaves NOTIFIED, which
//! `finish_park` (a CAS from exactly the state it read) cannot miss. **No double queueing:** only
//! the single successful CAS out of PARKED queues the fiber.

use crate::loom::{AtomicUsize, Ordering::*};

const LIFECYCLE: usize = 0b11;
const RUNNING: usize = 0;
const PARKED: usize = 1;
const SCHEDULED: usize = 2;
const DONE: usize = 3;
const NOTIFIED: usize = 1 << 2;
const CANCELLED: usize = 1 << 3;
const JOINER: usize = 1 << 4;
const GEN_SHIFT: u32 = 8;
const GEN_ONE: usize = 1 << GEN_SHIFT;

/// The observable lifecycle of a fiber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// On a worker.
    Running,
    /// Waiting for a wake or a timer.
    Parked,
    /// In a run queue.
    Scheduled,
    /// Finished.
    Done,
}

/// What [`TaskState::finish_park`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkOutcome {
    /// The fiber is PARKED; a wake will queue it.
    Parked,
    /// A token or a cancellation arrived during the switch: run the fiber again now.
    Resume,
}

/// The atomic state word of a scheduled fiber. See the module docs.
#[derive(Debug)]
pub struct TaskState(AtomicUsize);

impl TaskState {
    /// A fiber that is about to be pushed to a run queue.
    pub fn new_scheduled() -> Self {
        TaskState(AtomicUsize::new(SCHEDULED))
    }

    /// The lifecycle bits.
    pub fn lifecycle(&self) -> Lifecycle {
        match self.0.load(Acquire) & LIFECYCLE {
            RUNNING => Lifecycle::Running,
            PARKED => Lifecycle::Parked,
            SCHEDULED => Lifecycle::Scheduled,
            _ => Lifecycle::Done,
        }
    }

    /// The current generation (only stable while the caller owns the fiber, i.e. it is RUNNING).
    pub fn generation(&self) -> usize {
        self.0.load(Acquire) >> GEN_SHIFT
    }

    /// True once `cancel` was requested.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Acquire) & CANCELLED != 0
    }

    /// Popped from a queue: SCHEDULED → RUNNING, taking the park token out of the word in the
    /// same instruction; returns whether it was set. The caller hands a taken token to the
    /// fiber (`Header::token`), whose next park consumes it, so a fiber woken from PARKED (the
    /// wake left the token) does not pay a second read-modify-write to take it.
    pub fn start_running(&self) -> bool {
        // RUNNING is 0 and SCHEDULED a single bit: clearing it is the transition.
        let prev = self.0.fetch_and(!(SCHEDULED | NOTIFIED), AcqRel);
        debug_assert_eq!(
            prev & LIFECYCLE,
            SCHEDULED,
            "popped a fiber that was not scheduled"
        );
        prev & NOTIFIED != 0
    }

    /// Yielded: RUNNING → SCHEDULED (the caller then queues it).
    pub fn yield_now(&self) {
        let prev = self.0.fetch_add(SCHEDULED - RUNNING, AcqRel);
        debug_assert_eq!(prev & LIFECYCLE, RUNNING);
    }

    /// Finished: RUNNING → DONE. Returns true if a joiner registered before (see
    /// [`TaskState::register_joiner`]): the caller must then wake it.
    ///
    /// Release publishes the fiber's result to whoever sees DONE ([`TaskState::is_done`]).
    #[must_use]
    pub fn finish(&self) -> bool {
        let prev = self.0.fetch_or(DONE, AcqRel);
        debug_assert_eq!(prev & LIFECYCLE, RUNNING);
        prev & JOINER != 0
    }

    /// True once the fiber finished (Acquire: its result is then visible).
    #[inline]
    pub fn is_done(&self) -> bool {
        self.0.load(Acquire) & LIFECYCLE == DONE
    }

    /// A joiner stored its unparker: sets JOINER. Returns true if the fiber is DONE already (the
    /// finisher may not have seen the bit; the joiner must not wait for a wake).
    pub fn register_joiner(&self) -> bool {
        self.0.fetch_or(JOINER, AcqRel) & LIFECYCLE == DONE
    }

    /// Consumes the park token; true if it was set.
    #[inline]
    pub fn take_token(&self) -> bool {
        if self.0.load(Relaxed) & NOTIFIED == 0 {
            return false;
        }
        self.0.fetch_and(!NOTIFIED, AcqRel) & NOTIFIED != 0
    }

    /// After the fiber suspended to park: RUNNING → PARKED, unless a token arrived meanwhile.
    ///
    /// A cancellation arrives as a token too (`cancel` sets CANCELLED, then unparks), so it is
    /// seen here exactly once: a fiber that keeps parking after it was cancelled (a destructor
    /// joining another fiber while it unwinds, or a shielded wait) parks for real instead of
    /// being resumed in a busy loop.
    pub fn finish_park(&self) -> ParkOutcome {
        let mut cur = self.0.load(Acquire);
        loop {
            debug_assert_eq!(cur & LIFECYCLE, RUNNING);
            if cur & NOTIFIED != 0 {
                // The park ends here: a new generation, so its timer (if any) is stale.
                match self
                    .0
                    .compare_exchange_weak(cur, cur.wrapping_add(GEN_ONE), AcqRel, Acquire)
                {
                    Ok(_) => return ParkOutcome::Resume,
                    Err(actual) => {
                        cur = actual;
                        continue;
                    }
                }
            }
            match self
                .0
                .compare_exchange_weak(cur, cur | PARKED, AcqRel, Acquire)
            {
                Ok(_) => return ParkOutcome::Parked,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the token; returns true if the fiber was PARKED and the caller must now queue it.
    pub fn unpark(&self) -> bool {
        let mut cur = self.0.load(Acquire);
        loop {
            let lifecycle = cur & LIFECYCLE;
            if lifecycle == DONE || (cur & NOTIFIED != 0 && lifecycle != PARKED) {
                return false;
            }
            let new = if lifecycle == PARKED {
                (cur & !LIFECYCLE | SCHEDULED | NOTIFIED).wrapping_add(GEN_ONE)
            } else {
                cur | NOTIFIED
            };
            match self.0.compare_exchange_weak(cur, new, AcqRel, Acquire) {
                Ok(_) => return lifecycle == PARKED,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A timer registered during the park of generation `generation` expired: returns true if
    /// that park is still in progress, in which case the fiber is now SCHEDULED and the caller
    /// must queue it.
    ///
    /// The timer may fire before the park is published: the fiber added its timer and is still
    /// RUNNING on its way to `finish_park`. Then the timer leaves the token (same generation
    /// only), which `finish_park` sees, so the fiber resumes at once instead of parking with no
    /// timer left to wake it.
    pub fn timer_fire(&self, generation: usize) -> bool {
        let mut cur = self.0.load(Acquire);
        loop {
            if cur >> GEN_SHIFT != generation & (usize::MAX >> GEN_SHIFT) {
                return false;
            }
            let new = match cur & LIFECYCLE {
                PARKED => (cur & !LIFECYCLE | SCHEDULED).wrapping_add(GEN_ONE),
                RUNNING if cur & NOTIFIED == 0 => cur | NOTIFIED,
                _ => return false,
            };
            match self.0.compare_exchange_weak(cur, new, AcqRel, Acquire) {
                Ok(_) => return cur & LIFECYCLE == PARKED,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Marks the fiber cancelled; returns true if the caller must queue it (it was PARKED).
    pub fn cancel(&self) -> bool {
        self.0.fetch_or(CANCELLED, AcqRel);
        self.unpark()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{thread, Arc, AtomicUsize as Counter};

    /// A wake racing the two-phase park: the fiber is queued exactly once or resumed at once.
    #[test]
    fn wake_races_park() {
        loom::model(|| {
            let state = Arc::new(TaskState(AtomicUsize::new(RUNNING)));
            let queued = Arc::new(Counter::new(0));
            let (s, q) = (state.clone(), queued.clone());
            let waker = thread::spawn(move || {
                if s.unpark() {
                    q.fetch_add(1, SeqCst);
                }
            });
            // The fiber found no token and suspended; the worker finishes the park.
            let parked_then_woken = match state.finish_park() {
                ParkOutcome::Resume => false,
                ParkOutcome::Parked => true,
            };
            waker.join().unwrap();
            let queued = queued.load(SeqCst);
            if parked_then_woken {
                assert_eq!(queued, 1, "a parked fiber was woken exactly once");
                assert_eq!(state.lifecycle(), Lifecycle::Scheduled);
            } else {
                assert_eq!(queued, 0, "a fiber resumed at once is not queued too");
                assert_eq!(state.lifecycle(), Lifecycle::Running);
            }
        });
    }

    /// A timer and a wake racing for the same park: exactly one queues the fiber; a timer of an
    /// older generation never does.
    #[test]
    fn timer_races_wake() {
        loom::model(|| {
            let state = Arc::new(TaskState(AtomicUsize::new(RUNNING)));
            let generation = state.generation();
            assert_eq!(state.finish_park(), ParkOutcome::Parked);
            let queued = Arc::new(Counter::new(0));
            let (s, q) = (state.clone(), queued.clone());
            let timer = thread::spawn(move || {
                if s.timer_fire(generation) {
                    q.fetch_add(1, SeqCst);
                }
            });
            if state.unpark() {
                queued.fetch_add(1, SeqCst);
            }
            timer.join().unwrap();
            assert_eq!(queued.load(SeqCst), 1);
            // The fiber runs again (taking the token the wake left) and parks a second time:
            // the old timer is stale.
            assert!(state.start_running(), "token left by the wake");
            assert_eq!(state.finish_park(), ParkOutcome::Parked);
            assert!(!state.timer_fire(generation));
        });
    }

    /// A timer that fires while the fiber is still on its way to park (between adding the
    /// timer and `finish_park`) is not lost: the fiber either resumes at once or is queued by
    /// the timer, exactly once.
    #[test]
    fn timer_races_park() {
        loom::model(|| {
            let state = Arc::new(TaskState(AtomicUsize::new(RUNNING)));
            let generation = state.generation();
            let s = state.clone();
            let timer = thread::spawn(move || s.timer_fire(generation));
            let outcome = state.finish_park();
            let queued_by_timer = timer.join().unwrap();
            match outcome {
                ParkOutcome::Resume => {
                    assert!(!queued_by_timer);
                    assert!(state.take_token());
                    // The next park is a new generation: the fired timer cannot touch it.
                    assert_eq!(state.finish_park(), ParkOutcome::Parked);
                    assert!(!state.timer_fire(generation));
                }
                ParkOutcome::Parked => {
                    assert!(queued_by_timer, "a parked fiber's timer must queue it");
                    assert_eq!(state.lifecycle(), Lifecycle::Scheduled);
                }
            }
        });
    }

    /// Cancel racing a park: the fiber is either resumed at once or queued by the cancel.
    #[test]
    fn cancel_races_park() {
        loom::model(|| {
            let state = Arc::new(TaskState(AtomicUsize::new(RUNNING)));
            let s = state.clone();
            let canceller = thread::spawn(move || s.cancel());
            let outcome = state.finish_park();
            let queued_by_cancel = canceller.join().unwrap();
            assert!(state.is_cancelled());
            match outcome {
                ParkOutcome::Resume => assert!(!queued_by_cancel),
                ParkOutcome::Parked => assert!(queued_by_cancel),
            }
        });
    }
}
