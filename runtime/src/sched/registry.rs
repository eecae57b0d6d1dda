//! The registry of suspended-at-least-once fibers of a runtime: what shutdown cancels and
//! `Runtime::dump` lists.
//!
//! A fiber is inserted by the worker that runs it when it first *suspends* (parks or yields),
//! into that worker's shard, and removed by the worker that sees it finish: the same worker,
//! unless the runtime migrates started fibers. So the shard's lock is almost never contended and
//! its lines stay in one core's cache. Each shard is a slab (a vector with a free list), so insert
//! and remove are O(1) without allocation in steady state.
//!
//! Why at the first suspension and not at the first run: most fibers of a spawn storm finish in
//! their first run, and for them the registry would cost two lock round trips and a reference
//! count increment and decrement (six locked instructions, ~18 ns of a ~165 ns spawn measured
//! with the spawn scratch) for nothing. Registering is still done before anyone else can reach
//! the fiber: the worker inserts it right after the switch back and before it publishes the park
//! (`TaskState::finish_park`) or queues the yielded fiber, while the fiber is still its own.
//!
//! Fibers that never suspended are not here:
//! * not started: counted by the spawned and finished counters (`Shared::live_fibers`); at
//!   shutdown a fiber is cancelled before it starts;
//! * running their first slice: the worker running one announces it in its
//!   [`FirstRunSlot`](super::first_run::FirstRunSlot) (its id and spawn site: plain stores, no
//!   reference taken), which `Runtime::dump` reads; at shutdown such a fiber is cancelled once it
//!   suspends (and so registers), since the shutdown loop repeats until no fiber is live.
//!
//! The registry's strong reference also guarantees that a suspended fiber is never destroyed by
//! whichever thread happens to drop the last reference: the reference is dropped by the worker
//! that removes it, once its stack is already gone. While a fiber runs, the worker running it
//! holds a reference, and releases the stack of a finished fiber before dropping it.

use crossbeam_utils::CachePadded;

use crate::loom::{Mutex, Ordering::*};

use super::task::NOT_REGISTERED;
use super::TaskRef;

#[derive(Default)]
struct Slab {
    entries: Vec<Option<TaskRef>>,
    free: Vec<usize>,
}

impl Slab {
    fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// Fibers that have suspended at least once, one shard per worker slot.
pub(crate) struct Registry {
    shards: Box<[CachePadded<Mutex<Slab>>]>,
}

impl Registry {
    /// A registry for `slots` worker slots.
    pub(crate) fn new(slots: usize) -> Self {
        Registry {
            shards: (0..slots.max(1))
                .map(|_| CachePadded::new(Mutex::new(Slab::default())))
                .collect(),
        }
    }

    /// Registers a fiber that worker slot `worker` runs and that has just suspended for the
    /// first time.
    pub(crate) fn insert(&self, worker: usize, task: &TaskRef) {
        let shards = self.shards.len();
        let shard = worker % shards;
        let mut slab = self.shards[shard].lock();
        let slot = match slab.free.pop() {
            Some(slot) => {
                slab.entries[slot] = Some(task.clone());
                slot
            }
            None => {
                slab.entries.push(Some(task.clone()));
                slab.entries.len() - 1
            }
        };
        task.header
            .registry_slot
            .store(slot * shards + shard, Relaxed);
    }

    /// Removes a finished fiber, if it was registered. (The reference it held is dropped after
    /// the lock.)
    pub(crate) fn remove(&self, task: &TaskRef) {
        let key = task.header.registry_slot.load(Relaxed);
        if key == NOT_REGISTERED {
            return;
        }
        let shards = self.shards.len();
        let (slot, shard) = (key / shards, key % shards);
        let removed = {
            let mut slab = self.shards[shard].lock();
            let removed = slab.entries.get_mut(slot).and_then(Option::take);
            if removed.is_some() {
                slab.free.push(slot);
            }
            removed
        };
        drop(removed);
    }

    /// Registered fibers: a sum over the shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().live()).sum()
    }

    /// A snapshot of every registered fiber.
    pub(crate) fn snapshot(&self) -> Vec<TaskRef> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            all.extend(shard.lock().entries.iter().flatten().cloned());
        }
        all
    }
}
