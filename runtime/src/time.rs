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
//!
//! ## Owners fire their own shard
//!
//! Firing a timer writes the fiber's header (the state word, the entry's reference), and the
//! fiber then runs on its home worker, which writes the header again. If another worker fires it,
//! every woken fiber's header crosses between the two cores twice, and its queue push crosses
//! too: with 10,000 sleepers per millisecond that was most of the sleep benchmark's time on a
//! machine whose two cores share no cache. So in a runtime whose fibers stay home
//! ([`Firing::Owner`]), a worker fires only its own shard (`index % shards`). When it finds
//! another shard due, it *hands the due buckets over*: it moves them, as they are, to the
//! shard's `handed` list (no header is touched), and the caller wakes the owner, which fires
//! them as its own. The owner sees them through `Shard::handed` (one load, checked wherever it
//! checks for due timers), and the wake cannot be lost: the hand-over is published under the
//! shard lock before the caller sets the owner's parker token (see `sched::idle`).
//! Handed-over buckets no longer count for [`Timers::next_deadline`], so the poller does not wake
//! again for them. An owner busy in one long fiber leaves them waiting, as it leaves its queue
//! waiting: its fibers cannot run elsewhere anyway. The monitor fires anything overdue by more
//! than a grace period itself ([`Firing::Overdue`]), as a backstop.
//!
//! In a runtime that migrates fibers, every worker fires every shard ([`Firing::All`]): the
//! firing worker queues the fibers locally and may run them itself.

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
    /// Due buckets another worker handed over to the shard's owner (module docs).
    handed: Vec<Vec<Entry>>,
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
    /// The earliest tick (ns since `epoch`) of the buckets in `handed`, `NONE` when there are
    /// none. Written under the lock.
    handed: AtomicU64,
}

/// Which timers a caller fires (module docs, "Owners fire their own shard").
#[derive(Clone, Copy, Debug)]
pub(crate) enum Firing {
    /// Worker `index` of a runtime whose fibers stay home: its own shard, and the buckets handed
    /// over to it; other shards' due buckets are handed over to their owners.
    Owner(usize),
    /// Every shard (a runtime that migrates fibers).
    All,
    /// Every shard, but only what was due `grace` ago or earlier (the monitor's backstop).
    Overdue(Duration),
}

/// The timers of one runtime.
///
/// `epoch` and `shards` are read by every add and never written; `poller_deadline` is written
/// each time a worker starts or stops polling. Padding the latter (which aligns the struct)
/// keeps the two on different cache lines, and keeps the runtime's other written fields off the
/// read-mostly line. (A profile of the sleep workload showed `Timers::add` stalling on the
/// shared line; the A/B difference was within this machine's noise.)
pub(crate) struct Timers {
    epoch: Instant,
    shards: Box<[CachePadded<Shard>]>,
    /// Deadline the worker blocked in the reactor's poll sleeps towards, in ns since `epoch`:
    /// `NONE` while it sleeps with no timeout, `NO_POLLER` (0: every deadline is later) while no
    /// worker polls — then no adder needs to wake anyone, because the next worker to poll reads
    /// the earliest deadline after announcing itself.
    poller_deadline: CachePadded<AtomicU64>,
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
                        handed: AtomicU64::new(NONE),
                    })
                })
                .collect(),
            poller_deadline: CachePadded::new(AtomicU64::new(NO_POLLER)),
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
            let TickBuckets { by_tick, spare, .. } = &mut *guard;
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

    /// The shard worker `index` fires (module docs).
    fn own_shard(&self, index: usize) -> usize {
        index % self.shards.len()
    }

    /// Fires the due timers `firing` covers: every entry whose park is still in progress goes
    /// into `out` (its task is now SCHEDULED and must be queued); stale ones are dropped. Other
    /// shards whose buckets were handed over to their owner are listed in `owners_to_wake` (the
    /// caller must wake those workers). Returns how many entries it removed.
    pub(crate) fn take_due(
        &self,
        now: Instant,
        firing: Firing,
        out: &mut Vec<TaskRef>,
        owners_to_wake: &mut Vec<usize>,
    ) -> usize {
        let cutoff = match firing {
            Firing::Overdue(grace) => now.checked_sub(grace).unwrap_or(self.epoch),
            _ => now,
        };
        let cutoff = self.to_nanos(cutoff);
        let mut removed = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            let due = shard.earliest.load(Acquire) <= cutoff;
            match firing {
                Firing::Owner(me) if self.own_shard(me) != i => {
                    if due && shard.hand_over(cutoff) {
                        owners_to_wake.push(i);
                    }
                }
                Firing::Owner(_) => {
                    if due || shard.handed.load(Acquire) != NONE {
                        removed += shard.fire(cutoff, true, out);
                    }
                }
                Firing::All | Firing::Overdue(_) => {
                    let handed = shard.handed.load(Acquire) <= cutoff;
                    if due || handed {
                        removed += shard.fire(cutoff, handed, out);
                    }
                }
            }
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

    /// True if worker `index` has timers to fire or hand over at `now`.
    pub(crate) fn is_due(&self, now: Instant, index: usize) -> bool {
        let now = self.to_nanos(now);
        // Stops at the first due shard (this runs in idle workers' spin loops).
        self.shards.iter().any(|s| s.earliest.load(Acquire) <= now)
            || self.shards[self.own_shard(index)].handed.load(Acquire) != NONE
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
            guard.handed.clear();
            shard.earliest.store(NONE, Release);
            shard.handed.store(NONE, Release);
            shard.pending.store(0, Relaxed);
        }
    }
}

impl Shard {
    /// Moves the buckets due at `cutoff` (ns since `epoch`) to `handed`; false if none were.
    fn hand_over(&self, cutoff: u64) -> bool {
        let mut guard = self.buckets.lock();
        let buckets = &mut *guard;
        let mut moved = false;
        while let Some((at, bucket)) = buckets.pop_due(cutoff) {
            if at < self.handed.load(Relaxed) {
                self.handed.store(at, Release);
            }
            buckets.handed.push(bucket);
            moved = true;
        }
        self.earliest.store(buckets.next_tick_nanos(), Release);
        moved
    }

    /// Fires this shard's buckets due at `cutoff` (ns since `epoch`), and the handed-over ones
    /// too if `with_handed`, into `out`; returns how many entries it removed.
    fn fire(&self, cutoff: u64, with_handed: bool, out: &mut Vec<TaskRef>) -> usize {
        let mut guard = self.buckets.lock();
        let buckets = &mut *guard;
        let mut taken = 0;
        let mut fire_bucket = |mut bucket: Vec<Entry>, spare: &mut Vec<Vec<Entry>>| {
            taken += bucket.len();
            // A fired entry's park ended: the queue gets the reference the parked state owned,
            // and the entry's own is dropped with the entry.
            out.extend(bucket.drain(..).filter_map(|e| {
                e.task
                    .header
                    .state
                    .timer_fire(e.generation)
                    // SAFETY: our `timer_fire` moved the task out of PARKED; the entry holds a
                    // reference.
                    .then(|| unsafe { crate::sched::take_parked_ref(&e.task) })
            }));
            if spare.len() < 64 {
                spare.push(bucket);
            }
        };
        if with_handed {
            while let Some(bucket) = buckets.handed.pop() {
                fire_bucket(bucket, &mut buckets.spare);
            }
            self.handed.store(NONE, Release);
        }
        while let Some((_, bucket)) = buckets.pop_due(cutoff) {
            fire_bucket(bucket, &mut buckets.spare);
        }
        self.earliest.store(buckets.next_tick_nanos(), Release);
        self.pending
            .store(self.pending.load(Relaxed) - taken, Relaxed);
        taken
    }
}

impl TickBuckets {
    /// Removes the earliest bucket if it is due at `cutoff` (ns since `epoch`); returns it with
    /// its tick in ns.
    fn pop_due(&mut self, cutoff: u64) -> Option<(u64, Vec<Entry>)> {
        let entry = self.by_tick.first_entry()?;
        let at = entry.key().saturating_mul(TICK_NS);
        (at <= cutoff).then(|| (at, entry.remove()))
    }

    /// The earliest tick still waiting in `by_tick`, as ns since `epoch` (`NONE`: empty).
    fn next_tick_nanos(&self) -> u64 {
        self.by_tick
            .keys()
            .next()
            .map_or(NONE, |&t| t.saturating_mul(TICK_NS))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::Location;

    use super::*;
    use crate::sched::runtime_hold::RuntimeRef;
    use crate::sched::task::new_task;
    use crate::Runtime;

    /// A task that never parked: its timer entries are stale (they fire nothing), which is
    /// enough to follow who removes them.
    fn task(rt: &Runtime) -> TaskRef {
        let hold = RuntimeRef::new(rt.shared(), None);
        new_task(hold, 0, None, 0, Location::caller(), || ())
    }

    #[test]
    fn a_worker_hands_other_shards_due_timers_to_their_owner() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let timers = Timers::new(2);
        let now = Instant::now();
        let later = now + Duration::from_millis(1);
        timers.add(now, task(&rt), 0, 1);
        let (mut out, mut owners) = (Vec::new(), Vec::new());

        assert_eq!(
            timers.take_due(later, Firing::Owner(0), &mut out, &mut owners),
            0
        );
        assert_eq!(owners, [1], "worker 0 must wake the owner");
        assert_eq!(timers.pending(), 1);
        assert_eq!(
            timers.next_deadline(),
            None,
            "handed-over timers wake no poller"
        );
        assert!(!timers.is_due(later, 0));
        assert!(timers.is_due(later, 1));

        owners.clear();
        assert_eq!(
            timers.take_due(later, Firing::Owner(1), &mut out, &mut owners),
            1
        );
        assert!(owners.is_empty() && out.is_empty());
        assert_eq!(timers.pending(), 0);
        assert!(!timers.is_due(later, 1));
    }

    #[test]
    fn the_monitor_fires_only_what_waited_past_the_grace_period() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let timers = Timers::new(2);
        let now = Instant::now();
        let grace = Firing::Overdue(Duration::from_millis(1));
        // One timer in shard 1's buckets, handed over to its owner by worker 0 once due...
        timers.add(now, task(&rt), 0, 1);
        let (mut out, mut owners) = (Vec::new(), Vec::new());
        let due = now + Duration::from_micros(200);
        assert_eq!(
            timers.take_due(due, Firing::Owner(0), &mut out, &mut owners),
            0
        );
        assert_eq!(owners, [1], "handed over");
        // ...and one still in shard 0's buckets, due a little later.
        timers.add(due, task(&rt), 0, 0);
        assert_eq!(timers.pending(), 2);
        // Neither has waited a grace period yet; both have 2 ms on.
        let half = due + Duration::from_micros(500);
        let two = due + Duration::from_millis(2);
        assert_eq!(timers.take_due(half, grace, &mut out, &mut owners), 0);
        assert_eq!(timers.take_due(two, grace, &mut out, &mut owners), 2);
        assert_eq!(timers.pending(), 0);
    }

    #[test]
    fn a_migrating_runtime_fires_every_shard_from_any_worker() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let timers = Timers::new(2);
        let now = Instant::now();
        timers.add(now, task(&rt), 0, 1);
        let (mut out, mut owners) = (Vec::new(), Vec::new());
        let later = now + Duration::from_millis(1);
        assert_eq!(
            timers.take_due(later, Firing::All, &mut out, &mut owners),
            1
        );
        assert!(owners.is_empty());
    }
}
