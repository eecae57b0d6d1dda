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
//!
//! ## Balancing steals
//!
//! Plain work stealing only balances *idle* workers: a worker steals once it has nothing else to
//! run. With pinned fibers that is not enough. A worker that stole one batch of a burst of
//! spawns starts them, they become its pinned work, and it never looks at the spawner's queue
//! again, however long that queue is: 1,000 fibers spawned by one fiber and yielding in a loop
//! ended up split 968 to 32 (with steals of 32), and the run took as long as on one worker.
//!
//! So at its periodic maintenance tick (every `GLOBAL_INTERVAL` scheduling decisions) a busy
//! worker whose own stealable queue is empty looks at one other worker (picked as above). If that
//! worker has unstarted fibers queued and clearly more fibers homed (`theirs > mine + 1 +
//! theirs / 8`, the same slack as a hand-over), it steals a batch of them. The fibers stolen are
//! not started yet, so this moves nothing pinned; joined and detached fibers alike are taken,
//! exactly as an idle thief would take them. The counts are read without synchronisation: a
//! stale one costs one steal more or less.

use super::task_ref::TaskRef;
use super::worker::{Local, WorkerContext};

/// True when no `JoinHandle` of the unstarted `task` exists any more: the only reference left is
/// the one the calling worker runs it with (the registry takes its own only once the fiber
/// starts). The count can only fall meanwhile, and a stale read only makes one placement
/// decision differently.
fn is_detached(task: &TaskRef) -> bool {
    task.count() <= 1
}

impl WorkerContext {
    /// Whether this worker takes part in placement: a non-migrating runtime with at least two
    /// workers, and not a spare.
    fn places_fibers(&self) -> bool {
        let config = &self.shared.config;
        config.workers >= 2 && !self.is_spare() && !config.migrate
    }

    /// Another configured worker, uniformly at random (needs [`Self::places_fibers`]).
    fn random_peer(&self, local: &mut Local) -> usize {
        let workers = self.shared.config.workers as u64;
        let pick = (local.next_random() % (workers - 1)) as usize;
        if pick >= self.index {
            pick + 1
        } else {
            pick
        }
    }

    /// A balancing steal (module docs): unstarted fibers from a worker with clearly more fibers
    /// homed than this one, when this worker has none of its own queued. Returns one of them to
    /// run; the rest are in `local.queue`.
    pub(super) fn steal_to_balance(&self, local: &mut Local) -> Option<TaskRef> {
        if !local.queue.is_empty() || !self.places_fibers() {
            return None;
        }
        let peer = self.random_peer(local);
        let shared = &self.shared;
        let victim = &shared.workers[peer];
        if victim.stealer.is_empty() {
            return None;
        }
        let mine = shared.workers[self.index].homed.get();
        let theirs = victim.homed.get();
        if theirs <= mine + 1 + theirs / 8 {
            return None;
        }
        self.steal_batch_from(peer, local).success()
    }

    /// The worker the unstarted fiber this worker is about to run should live on instead, if
    /// any (module docs). A returned worker has already counted the fiber in its `homed`.
    pub(super) fn hand_over_target(&self, task: &TaskRef) -> Option<usize> {
        if !self.places_fibers() || !is_detached(task) {
            return None;
        }
        let shared = &self.shared;
        let mut local = self.local.borrow_mut();
        let mine = shared.workers[self.index].homed.get();
        let (target, level) = match local.handing_over_to {
            Some(target) => (target, 0),
            None => (self.random_peer(&mut local), 1 + mine / 8),
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
