//! Where a fiber of a non-migrating runtime makes its home.
//!
//! A started fiber stays on the worker it first ran on (DESIGN.md decision 7), so the only moment
//! its load can be balanced is its first run. Stealing unstarted fibers covers the case of a
//! worker that spawns faster than it runs; it does not cover a fiber that is spawned and run at
//! once. The usual shape is a server: an accept loop spawns a fiber per connection, the new
//! fiber runs from the LIFO slot as soon as the acceptor waits for the next connection, parks on
//! its first `read`, and is pinned there. Every connection then lives on the acceptor's worker
//! while the others only poll the reactor and forward readiness to it.
//!
//! Only *detached* fibers are placed this way: those whose `JoinHandle` is already gone when they
//! first run (`filament::spawn(..);` as a statement, the accept loop's shape). A fiber whose
//! handle is still held usually talks to the fiber holding it (it will be joined, or it shares
//! channels with its spawner, as in a fork/join tree or two fibers passing a value back and
//! forth), and putting the two on different workers turns every exchange into a cross-worker
//! wake: in skynet (a fork/join tree of a million fibers) and pingpong, placing every fiber made
//! the runs 1.5x and 5x slower. Those fibers are left to work stealing as before.
//!
//! So a worker about to start a detached fiber compares the number of fibers homed on it (`homed`) with
//! another worker's. If it has clearly more, it gives the fiber to that worker instead: it
//! records the home, counts the fiber in the target's `homed` at once (so a burst of spawns sees
//! the hand-over before the target has run anything), and pushes it into the target's inbox,
//! exactly like a pinned fiber woken elsewhere. The target starts it without asking again.
//!
//! *Clearly more* is `mine > theirs + 1 + mine / 8`, and once a worker starts handing fibers over
//! it goes on until the two counts are level. The slack grows with the population, so hand-overs
//! come in runs: a hundred connections end up split within a few of even (48–53 each in the echo
//! bench), while ten thousand detached fibers move in runs of hundreds, so fibers spawned one
//! after the other mostly share a worker.
//!
//! The comparison is with one other worker: the one this worker is currently handing over to,
//! or else one picked at random (with two choices per decision, the populations stay within the
//! slack of each other, as in "the power of two choices"). Spare workers (started by the monitor
//! for a stuck worker) neither give nor receive: they exist for a while only. The counts are
//! read without synchronisation; a stale count makes one placement worse, never a fiber lost,
//! because the inbox and wake are the same path every cross-worker wake takes.

use super::task_ref::TaskRef;
use super::worker::WorkerContext;

/// True when no `JoinHandle` of the unstarted `task` exists any more: the only reference left is
/// the one the calling worker runs it with (the registry takes its own only once the fiber
/// starts). The count can only fall meanwhile, and a stale read only makes one placement
/// decision differently.
fn is_detached(task: &TaskRef) -> bool {
    task.count() <= 1
}

impl WorkerContext {
    /// The worker the unstarted fiber this worker is about to run should live on instead, if
    /// any (module docs). A returned worker has already counted the fiber in its `homed`.
    pub(super) fn hand_over_target(&self, task: &TaskRef) -> Option<usize> {
        let shared = &self.shared;
        let workers = shared.config.workers;
        if workers < 2 || self.is_spare() || shared.config.migrate || !is_detached(task) {
            return None;
        }
        let mut local = self.local.borrow_mut();
        let mine = shared.workers[self.index].homed.get();
        let (target, level) = match local.handing_over_to {
            Some(target) => (target, 0),
            None => {
                let pick = (local.next_random() % (workers as u64 - 1)) as usize;
                let target = if pick >= self.index { pick + 1 } else { pick };
                (target, 1 + mine / 8)
            }
        };
        let theirs = shared.workers[target].homed.get();
        if mine > theirs + level {
            local.handing_over_to = Some(target);
            shared.workers[target].homed.add_other(1);
            Some(target)
        } else {
            local.handing_over_to = None;
            None
        }
    }
}
