//! Timers: deadlines of parked fibers (`sleep`, `park_until`, socket and lock timeouts).
//!
//! Deadlines are rounded **up** to the next 100 µs tick (a sleep never ends early; it ends at
//! most one tick plus the wake-up latency late: the poller waits on a timerfd, not on epoll's
//! millisecond timeout — see `reactor/deadline_timer.rs`) and kept in one bucket per tick: an
//! ordered map from tick to the entries due then, in one of a few shards per runtime, each
//! under a short lock. Thousands of
//! fibers sleeping "1 ms" at about the same time share a handful of buckets, so adding is a map lookup plus a
//! vector push and firing takes a whole bucket at once, instead of a heap sift (with a cache
//! miss per level) per timer. Emptied bucket vectors are kept for reuse, so a sleep allocates
//! nothing in steady state.
//!
//! Shards: a fiber adds its timer to the shard of the worker it runs on, so workers adding
//! timers at the same time neither wait for one lock nor pass its cache line back and forth;
//! whoever fires timers looks at every shard's cached earliest tick and locks only the due ones.
//!
//! An entry is `(task, generation)`; when it fires, the task is woken only if it is still in the
//! *same* park (`TaskState::timer_fire` compares the generation), so an entry whose park already
//! ended is harmless: it is dropped when its tick passes (lazy deletion — no search on wake).
//!
//! Who fires timers: the worker blocked in the reactor's poll uses the earliest tick as its
//! timeout and fires what is due when it wakes; busy workers check the cached earliest tick (one
//! atomic load) between fibers; the monitor fires overdue timers when no worker does. When a new
//! deadline is earlier than the one the poller sleeps towards, the adder wakes the reactor.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::loom::{fence, AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::sched::TaskRef;

const NONE: u64 = u64::MAX;
/// `poller_deadline` while no worker blocks in the reactor's poll.
const NO_POLLER: u64 = 0;
/// Nanoseconds per tick (100 µs).
const TICK_NS: u64 = 100_000;
/// Most shards a runtime uses (one per worker up to this).
const MAX_SHARDS: usize = 16;

struct Entry {
    task: TaskRef,
    generation: usize,
}

#[derive(Default)]
struct TickBuckets {
    /// Tick → entries due at that tick.
    by_tick: BTreeMap<u64, Vec<Entry>>,
    /// Empty vectors kept for reuse.
    spare: Vec<Vec<Entry>>,
}

/// One shard: its buckets, and what readers need without the lock.
struct Shard {
    buckets: Mutex<TickBuckets>,
    /// Earliest tick in this shard, as ns since `epoch` (`NONE` when empty). Written under the
    /// lock.
    earliest: AtomicU64,
    /// Entries in this shard (stale ones included). Written under the lock.
    pending: AtomicUsize,
}

/// The timers of one runtime.
pub(crate) struct Timers {
    epoch: Instant,
    shards: Box<[CachePadded<Shard>]>,
    /// Deadline the worker blocked in the reactor's poll sleeps towards, in ns since `epoch`:
    /// `NONE` while it sleeps with no timeout, `NO_POLLER` (0: every deadline is later) while no
    /// worker polls — then no adder needs to wake anyone, because the next worker to poll reads
    /// the earliest deadline after announcing itself.
    poller_deadline: AtomicU64,
}

impl Timers {
    /// Timers for a runtime with `workers` workers (one shard each, up to a limit).
    pub(crate) fn new(workers: usize) -> Self {
        Timers {
            epoch: Instant::now(),
            shards: (0..workers.clamp(1, MAX_SHARDS))
                .map(|_| {
                    CachePadded::new(Shard {
                        buckets: Mutex::new(TickBuckets::default()),
                        earliest: AtomicU64::new(NONE),
                        pending: AtomicUsize::new(0),
                    })
                })
                .collect(),
            poller_deadline: AtomicU64::new(NO_POLLER),
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

    /// Adds a timer to the shard of worker `worker` (the fiber's home, so usually the adding
    /// thread's own); returns true if the poller must be woken to honour it (it sleeps towards
    /// a later deadline).
    pub(crate) fn add(
        &self,
        deadline: Instant,
        task: TaskRef,
        generation: usize,
        worker: usize,
    ) -> bool {
        let tick = self.to_nanos(deadline).div_ceil(TICK_NS);
        let nanos = tick.saturating_mul(TICK_NS);
        let shard = &self.shards[worker % self.shards.len()];
        {
            let mut guard = shard.buckets.lock();
            let TickBuckets { by_tick, spare } = &mut *guard;
            by_tick
                .entry(tick)
                .or_insert_with(|| spare.pop().unwrap_or_default())
                .push(Entry { task, generation });
            if nanos < shard.earliest.load(Relaxed) {
                shard.earliest.store(nanos, Release);
            }
            shard
                .pending
                .store(shard.pending.load(Relaxed) + 1, Relaxed);
        }
        // Store-load against `set_poller_deadline`: either the poller's re-check before it blocks
        // sees our `earliest`, or we see its deadline and wake it.
        fence(SeqCst);
        nanos < self.poller_deadline.load(SeqCst)
    }

    /// Moves every due timer whose park is still in progress into `out` (their tasks are now
    /// SCHEDULED and must be queued), dropping stale ones. Returns how many entries it removed.
    pub(crate) fn take_due(&self, now: Instant, out: &mut Vec<TaskRef>) -> usize {
        let now_nanos = self.to_nanos(now);
        let now_tick = now_nanos / TICK_NS;
        let mut removed = 0;
        for shard in self.shards.iter() {
            if shard.earliest.load(Acquire) > now_nanos {
                continue;
            }
            let mut guard = shard.buckets.lock();
            let buckets = &mut *guard;
            let mut taken = 0;
            while let Some(entry) = buckets.by_tick.first_entry() {
                if *entry.key() > now_tick {
                    break;
                }
                let mut bucket = entry.remove();
                taken += bucket.len();
                // A fired entry's park ended: the queue gets the reference the parked state
                // owned, and the entry's own is dropped with the entry.
                out.extend(bucket.drain(..).filter_map(|e| {
                    e.task
                        .header
                        .state
                        .timer_fire(e.generation)
                        // SAFETY: our `timer_fire` moved the task out of PARKED; the entry
                        // holds a reference.
                        .then(|| unsafe { crate::sched::take_parked_ref(&e.task) })
                }));
                if buckets.spare.len() < 64 {
                    buckets.spare.push(bucket);
                }
            }
            let next = buckets
                .by_tick
                .keys()
                .next()
                .map_or(NONE, |&t| t.saturating_mul(TICK_NS));
            shard.earliest.store(next, Release);
            shard
                .pending
                .store(shard.pending.load(Relaxed) - taken, Relaxed);
            removed += taken;
        }
        removed
    }

    fn earliest(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.earliest.load(Acquire))
            .min()
            .unwrap_or(NONE)
    }

    /// The earliest pending deadline (a tick boundary).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.earliest() {
            NONE => None,
            n => Some(self.instant_at(n)),
        }
    }

    /// True if a timer is due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        let now = self.to_nanos(now);
        // Stops at the first due shard (this runs in idle workers' spin loops).
        self.shards.iter().any(|s| s.earliest.load(Acquire) <= now)
    }

    /// Announces that a worker is about to block in the reactor's poll until `deadline` (`None`:
    /// no timeout). It must re-check the earliest deadline after this, before it blocks.
    pub(crate) fn set_poller_deadline(&self, deadline: Option<Instant>) {
        let n = deadline.map_or(NONE, |d| self.to_nanos(d).max(NO_POLLER + 1));
        self.poller_deadline.store(n, SeqCst);
        fence(SeqCst);
    }

    /// The poller has stopped blocking: adders need not wake the reactor for their deadlines.
    pub(crate) fn clear_poller_deadline(&self) {
        self.poller_deadline.store(NO_POLLER, Release);
    }

    /// Timers pending (including stale ones not yet expired).
    pub(crate) fn pending(&self) -> usize {
        self.shards.iter().map(|s| s.pending.load(Relaxed)).sum()
    }

    /// Drops every entry (shutdown: breaks task → runtime reference cycles).
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut guard = shard.buckets.lock();
            guard.by_tick.clear();
            shard.earliest.store(NONE, Release);
            shard.pending.store(0, Relaxed);
        }
    }
}
