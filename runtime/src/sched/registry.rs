//! The registry of live fibers of a runtime: what shutdown cancels and `Runtime::dump` lists.
//!
//! Sharded by fiber id; each shard is a slab (a vector with a free list) under a short lock, so
//! insert and remove are O(1) without allocation in steady state. A fiber is inserted when it is
//! spawned and removed by the worker that sees it finish, so the registry's strong reference
//! also guarantees that a started fiber is never destroyed by whichever thread happens to drop
//! the last reference: by then its stack is already gone.

use crossbeam_utils::CachePadded;

use crate::loom::{Mutex, Ordering::*};

use super::TaskRef;

const SHARDS: usize = 16;

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

/// Live fibers, sharded.
pub(crate) struct Registry {
    shards: Box<[CachePadded<Mutex<Slab>>]>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(Slab::default())))
                .collect(),
        }
    }

    pub(crate) fn insert(&self, task: &TaskRef) {
        let shard = &self.shards[task.header.id as usize % SHARDS];
        let mut slab = shard.lock();
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
        task.header.registry_slot.store(slot, Relaxed);
    }

    /// Removes a finished fiber. (The reference it held is dropped after the lock.)
    pub(crate) fn remove(&self, task: &TaskRef) {
        let shard = &self.shards[task.header.id as usize % SHARDS];
        let slot = task.header.registry_slot.load(Relaxed);
        let removed = {
            let mut slab = shard.lock();
            let removed = slab.entries.get_mut(slot).and_then(Option::take);
            if removed.is_some() {
                slab.free.push(slot);
            }
            removed
        };
        drop(removed);
    }

    /// Live fibers: a sum over the shards (no shared counter on the spawn path).
    pub(crate) fn live(&self) -> usize {
        self.shards.iter().map(|s| s.lock().live()).sum()
    }

    /// A snapshot of every live fiber.
    pub(crate) fn snapshot(&self) -> Vec<TaskRef> {
        let mut all = Vec::with_capacity(self.live());
        for shard in self.shards.iter() {
            all.extend(shard.lock().entries.iter().flatten().cloned());
        }
        all
    }
}
