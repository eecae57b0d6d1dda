//! Timers: deadlines of parked fibers (`sleep`, `park_until`, socket and lock timeouts).
//!
//! One min-heap per runtime under a short lock. An entry is `(deadline, sequence, task,
//! generation)`; when it fires, the task is woken only if it is still in the *same* park
//! (`TaskState::timer_fire` compares the generation), so an entry whose park already ended is
//! harmless: it is dropped when its deadline passes (lazy deletion — no search on every wake).
//! Pushing reuses the heap's storage, so a sleep allocates nothing in steady state.
//!
//! Who fires timers: the worker blocked in the reactor's poll uses the earliest deadline as its
//! timeout and fires what is due when it wakes; busy workers check the cached earliest deadline
//! (one atomic load) between fibers; the monitor fires overdue timers when no worker does. When a
//! new deadline is earlier than the one the poller sleeps towards, the adder wakes the reactor.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::loom::{AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::sched::TaskRef;

const NONE: u64 = u64::MAX;

struct Entry {
    deadline: Instant,
    seq: u64,
    task: TaskRef,
    generation: usize,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .deadline
            .cmp(&self.deadline)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The timer heap of one runtime.
pub(crate) struct Timers {
    epoch: Instant,
    heap: Mutex<(BinaryHeap<Entry>, u64)>,
    /// Earliest deadline in the heap, in ns since `epoch` (`NONE` when empty).
    earliest: AtomicU64,
    /// Deadline the poller currently sleeps towards, in ns since `epoch` (`NONE`: forever/none).
    poller_deadline: AtomicU64,
    pending: AtomicUsize,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            epoch: Instant::now(),
            heap: Mutex::new((BinaryHeap::new(), 0)),
            earliest: AtomicU64::new(NONE),
            poller_deadline: AtomicU64::new(NONE),
            pending: AtomicUsize::new(0),
        }
    }

    fn to_nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(NONE as u128 - 1) as u64
    }

    fn instant_at(&self, n: u64) -> Instant {
        self.epoch + Duration::from_nanos(n)
    }

    /// Adds a timer; returns true if the poller must be woken to honour it (it sleeps towards a
    /// later deadline).
    pub(crate) fn add(&self, deadline: Instant, task: TaskRef, generation: usize) -> bool {
        let nanos = self.to_nanos(deadline);
        {
            let mut guard = self.heap.lock();
            let (heap, seq) = &mut *guard;
            *seq += 1;
            heap.push(Entry {
                deadline,
                seq: *seq,
                task,
                generation,
            });
            if nanos < self.earliest.load(Relaxed) {
                self.earliest.store(nanos, Release);
            }
        }
        self.pending.fetch_add(1, Relaxed);
        nanos < self.poller_deadline.load(Acquire)
    }

    /// Pops one due timer whose park is still in progress (its task is now SCHEDULED), skipping
    /// stale ones.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<TaskRef> {
        let now_nanos = self.to_nanos(now);
        if self.earliest.load(Acquire) > now_nanos {
            return None;
        }
        let mut guard = self.heap.lock();
        let (heap, _) = &mut *guard;
        while let Some(top) = heap.peek() {
            if top.deadline > now {
                break;
            }
            let entry = heap.pop().expect("peeked");
            self.pending.fetch_sub(1, Relaxed);
            if entry.task.header.state.timer_fire(entry.generation) {
                self.update_earliest(heap);
                return Some(entry.task);
            }
        }
        self.update_earliest(heap);
        None
    }

    fn update_earliest(&self, heap: &BinaryHeap<Entry>) {
        let next = heap.peek().map_or(NONE, |e| self.to_nanos(e.deadline));
        self.earliest.store(next, Release);
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.earliest.load(Acquire) {
            NONE => None,
            n => Some(self.instant_at(n)),
        }
    }

    /// True if a timer is due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.earliest.load(Acquire) <= self.to_nanos(now)
    }

    pub(crate) fn set_poller_deadline(&self, deadline: Option<Instant>) {
        let n = deadline.map_or(NONE, |d| self.to_nanos(d));
        self.poller_deadline.store(n, Release);
    }

    /// Timers in the heap (including stale ones not yet expired).
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Drops every entry (shutdown: breaks task → runtime reference cycles).
    pub(crate) fn clear(&self) {
        let mut guard = self.heap.lock();
        guard.0.clear();
        self.earliest.store(NONE, Release);
        self.pending.store(0, Relaxed);
    }
}
