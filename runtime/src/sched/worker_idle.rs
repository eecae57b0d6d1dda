//! What an idle worker does before it parks: steal (Go's spinning M), spin on its own inbox, then
//! park through the protocol in [`super`].
//!
//! ## Spinning for pinned fibers
//!
//! In a runtime whose started fibers stay on their home worker (the default, DESIGN decision 7),
//! a fiber woken by another worker is pushed into its home worker's inbox. If that worker has
//! parked, the waker pays a futex wake (or an eventfd write when the worker polls the reactor),
//! and the fiber waits for the parked thread to be scheduled again: microseconds, for a hop that
//! otherwise costs a cache-line transfer. Two fibers passing a value back and forth across two
//! workers, or a token going round a ring spread over both, do that on every hop.
//!
//! So before it parks, a worker that has pinned fibers spins for a while, watching its inbox and
//! the other queues (`WorkerContext::spin_for_work`). The budget adapts to how long this
//! worker's idle periods have recently lasted: an idle period short enough that spinning would
//! have covered it doubles the budget (up to [`MAX_SPIN`]), a longer one halves it. A worker
//! whose fibers are woken every few microseconds keeps spinning; one that serves rare network
//! events soon spins for almost nothing, so an idle server stays idle.
//!
//! After the first 2 µs the spinner calls `sched_yield` between checks, so on a machine with more
//! runnable threads than cores (a load generator next to a server) it hands its core over
//! instead of burning it.
//!
//! Spinning never replaces parking as the guarantee against lost wake-ups: the waker still
//! wakes the worker's parker (which costs a lock and no syscall when no one waits on it), and a
//! spinner that sees nothing parks through the normal protocol.

use std::time::{Duration, Instant};

use crossbeam_deque::Steal;

use crate::loom::Ordering::*;

use super::task_ref::TaskRef;
use super::worker::{Local, WorkerContext, SPARE_IDLE};

/// The longest a worker spins before it parks.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// Below this budget the worker parks at once.
const MIN_SPIN: Duration = Duration::from_nanos(500);

/// The adaptive spin budget of one worker (owned by its thread).
pub(crate) struct SpinBudget {
    budget: Duration,
}

impl SpinBudget {
    pub(crate) fn new() -> Self {
        SpinBudget {
            budget: MAX_SPIN / 4,
        }
    }

    /// How long to spin now; `None`: park at once.
    pub(crate) fn current(&self) -> Option<Duration> {
        (self.budget >= MIN_SPIN).then_some(self.budget)
    }

    /// An idle period of this worker ended after `idle`.
    pub(crate) fn record_idle(&mut self, idle: Duration) {
        self.budget = if idle <= MAX_SPIN {
            // Spinning would have covered it: at least twice this period, never less than
            // before, and at least the minimum (so a worker that stopped spinning starts again).
            (idle * 2).clamp(self.budget.max(MIN_SPIN), MAX_SPIN)
        } else {
            self.budget / 2
        };
    }
}

/// Rounds of stealing a searching worker makes before it parks (with growing pauses between:
/// 240 `spin_loop` hints, a few microseconds in all).
const SEARCH_ROUNDS: u32 = 4;

/// How long a spinning worker spins on the CPU before it calls `sched_yield` between checks.
const SPIN_BEFORE_YIELDING: Duration = Duration::from_micros(2);

/// Most fibers one steal takes from another worker: half the victim's queue, up to this (Go and
/// tokio also take half; crossbeam's default batch is 32). Fibers first run by the same worker
/// stay together on it, so fibers spawned one after the other (a ring passing a token, a
/// pipeline) cross between workers less often: in a 10,000-fiber ring the token crossed 430
/// times a lap with batches of 32 and 235 with 128, and a hop fell from ~185 to ~150 ns.
const STEAL_LIMIT: usize = 128;

/// How often a spinning worker polls the reactor (without blocking) while no worker is blocked
/// in it, so that I/O readiness is not left waiting for the spin to end.
const SPIN_POLL_EVERY: Duration = Duration::from_micros(10);

impl WorkerContext {
    pub(super) fn steal(&self) -> Option<TaskRef> {
        let shared = &self.shared;
        let mut local = self.local.borrow_mut();
        let n = shared.slots_used.load(Acquire).max(1);
        for _ in 0..2 {
            let mut retry = false;
            if !shared.injector.is_empty() {
                match shared.injector.steal_batch_and_pop(&local.queue) {
                    Steal::Success(t) => return Some(t),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            let start = (local.next_random() % n as u64) as usize;
            for i in 0..n {
                let victim = (start + i) % n;
                // Most slots are unused spare slots: an emptiness check is two loads, while a
                // steal attempt pins crossbeam's epoch.
                if victim == self.index || shared.workers[victim].stealer.is_empty() {
                    continue;
                }
                match self.steal_batch_from(victim, &local) {
                    Steal::Success(t) => return Some(t),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                break;
            }
        }
        None
    }

    /// Moves a batch of worker `victim`'s unstarted fibers into this worker's queue and pops one
    /// (counted in `steals`).
    pub(super) fn steal_batch_from(&self, victim: usize, local: &Local) -> Steal<TaskRef> {
        let stolen = self.shared.workers[victim]
            .stealer
            .steal_batch_with_limit_and_pop(&local.queue, STEAL_LIMIT);
        if stolen.is_success() {
            self.shared.bump_at(Some(self), |c| &c.steals);
        }
        stolen
    }

    /// Steals, and keeps looking for a short while before giving up (Go's spinning M): work
    /// often appears within microseconds (a fiber woken by another worker, a spawn), and
    /// parking and waking a thread costs two system calls and a few microseconds each.
    pub(super) fn search(&self) -> Option<TaskRef> {
        for round in 0..SEARCH_ROUNDS {
            if let Some(task) = self.steal() {
                return Some(task);
            }
            if self.has_local_work() || self.shared.stopping() {
                return None;
            }
            for _ in 0..(16 << round.min(4)) {
                std::hint::spin_loop();
            }
        }
        None
    }

    pub(super) fn set_searching(&self, on: bool) {
        self.local.borrow_mut().searching = on;
    }

    pub(super) fn is_searching(&self) -> bool {
        self.local.borrow().searching
    }

    /// Found work while searching: stop, and wake another searcher if we were the last one and
    /// more work is waiting.
    pub(super) fn found_work(&self) {
        if self.is_searching() {
            self.set_searching(false);
            if self.shared.idle.stop_searching() && self.shared.has_stealable_work() {
                self.shared.notify_work();
            }
        }
    }

    pub(super) fn has_local_work(&self) -> bool {
        let local = self.local.borrow();
        local.lifo.is_some()
            || local.spawner.is_some()
            || !local.pinned.is_empty()
            || !local.queue.is_empty()
            || !self.shared.workers[self.index].inbox.is_empty()
    }

    pub(super) fn is_spare(&self) -> bool {
        self.index >= self.shared.config.workers
    }

    /// Parks this worker (see the protocol in `sched`). Returns false if the worker should exit.
    pub(super) fn park(&self, idle_since: Instant) -> bool {
        let shared = &self.shared;
        let idle = &shared.idle;
        let me = &shared.workers[self.index];
        let was_searching = self.is_searching();
        self.set_searching(false);
        idle.begin_park(self.index, was_searching);
        let now = Instant::now();
        let recheck = shared.has_stealable_work()
            || self.has_local_work()
            || shared.timers.is_due(now, self.index)
            || shared.stopping();
        let mut timed_out_idle = false;
        if !recheck {
            shared.bump_at(Some(self), |c| &c.worker_parks);
            let spare_idle = self.is_spare().then_some(SPARE_IDLE);
            shared.block_worker(self.index, spare_idle);
            timed_out_idle = self.is_spare() && now.elapsed() >= SPARE_IDLE;
            self.local
                .borrow_mut()
                .spin
                .record_idle(idle_since.elapsed());
        }
        // Not on the idle list any more: a notifier popped us and counted us as searching on
        // our behalf (even if we never blocked), so we are searching now.
        if !idle.remove_parked(self.index) {
            self.set_searching(true);
        }
        if timed_out_idle
            && me.homed.get() == 0
            && !self.has_local_work()
            && !shared.has_stealable_work()
        {
            return false;
        }
        true
    }

    /// Spins for up to this worker's budget (module docs) while it has pinned fibers that could
    /// be woken. Returns true as soon as work (or a due timer, or shutdown) appears; false if
    /// the budget ran out and the worker should park. `since` is when the worker went idle.
    pub(super) fn spin_for_work(&self, since: Instant) -> bool {
        let shared = &self.shared;
        if shared.config.migrate || shared.workers[self.index].homed.get() == 0 {
            return false;
        }
        let Some(budget) = self.local.borrow().spin.current() else {
            return false;
        };
        let mut polled = since;
        loop {
            for _ in 0..32 {
                if self.has_local_work() {
                    self.local.borrow_mut().spin.record_idle(since.elapsed());
                    return true;
                }
                std::hint::spin_loop();
            }
            if shared.has_stealable_work() || shared.stopping() {
                return true;
            }
            let now = Instant::now();
            if shared.timers.is_due(now, self.index) {
                return true;
            }
            if now - since >= budget {
                return false;
            }
            if now - polled >= SPIN_POLL_EVERY && shared.idle.poller.load(Relaxed) == 0 {
                shared.poll_reactor_now();
                polled = now;
            }
            if now - since >= SPIN_BEFORE_YIELDING {
                // Past the first microseconds, give the core to any other runnable thread (a
                // client on the same machine, another process) between checks: on an idle
                // core `sched_yield` returns at once, so this costs only latency.
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_idle_periods_grow_the_budget_and_long_ones_shrink_it() {
        let mut spin = SpinBudget::new();
        for _ in 0..20 {
            spin.record_idle(Duration::from_millis(5));
        }
        assert_eq!(
            spin.current(),
            None,
            "a worker idle for long periods stops spinning"
        );
        spin.record_idle(Duration::from_micros(3));
        assert_eq!(spin.current(), Some(Duration::from_micros(6)));
        spin.record_idle(Duration::from_micros(40));
        assert_eq!(spin.current(), Some(MAX_SPIN));
        spin.record_idle(Duration::from_micros(1));
        assert_eq!(
            spin.current(),
            Some(MAX_SPIN),
            "a short period never shrinks it"
        );
        spin.record_idle(Duration::from_millis(1));
        assert_eq!(spin.current(), Some(MAX_SPIN / 2));
    }
}
