//! Timers: deadlines of parked fibers (`sleep`, `park_until`, socket and lock timeouts).
//!
//! Deadlines are grouped by 20 µs tick ([`TICK_NS`]): one bucket holds the entries whose
//! deadline falls in one tick, in an ordered map from tick to bucket, in one of a few shards per
//! runtime, each under a short lock. Thousands of fibers sleeping "1 ms" at about the same time
//! share a few dozen buckets, so adding is a map lookup plus a vector push and firing takes a
//! whole bucket at once, instead of a heap sift (with a cache miss per level) per timer. Emptied
//! bucket vectors are kept for reuse, so a sleep allocates nothing in steady state.
//!
//! A bucket is due when the *latest* deadline in it has passed (its `due`, kept as entries are
//! added), not at the end of its tick: a sleep never ends early, and it ends at most one tick
//! plus the wake-up latency late (the poller waits on a timerfd, not on epoll's millisecond
//! timeout — see `reactor/deadline_timer.rs`). Fibers woken together that sleep again at once
//! land in one bucket whose `due` is the last of their deadlines, so a loop of 1 ms sleeps takes
//! 1 ms plus the time it takes to run that burst per round, instead of a whole tick more (the
//! sleep benchmark's rounds took 1 ms and a whole 100 µs tick when buckets were due at their
//! tick's end). A bucket's `due` only grows, and only up to its tick's end, so buckets stay
//! ordered by it; a poller that wakes for an earlier `due` finds nothing due and waits again.
//!
//! Shards: a fiber adds its timer to the shard of the worker it runs on, so workers adding
//! timers at the same time neither wait for one lock nor pass its cache line back and forth;
//! whoever fires timers looks at every shard's cached earliest `due` and locks only the due ones.
//!
//! An entry is `(task, generation)`; when it fires, the task is woken only if it is still in the
//! *same* park (`TaskState::timer_fire` compares the generation), so an entry whose park already
//! ended is harmless: it is dropped when its bucket fires (lazy deletion — no search on wake).
//!
//! Who fires timers: the worker blocked in the reactor's poll uses the earliest `due` as its
//! timeout and fires what is due when it wakes; busy workers check the cached earliest `due` (one
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
/// Nanoseconds per tick (20 µs).
///
/// Finer ticks mean more buckets and more timer wake-ups; coarser ones make a burst of sleeps
/// wait longer for the last of their bucket. In-process A/B of the sleep benchmark (two runtimes
/// alternating, 30 pairs, after skynet): 20 µs beat 100 µs in 28 of 30 pairs (12.9 -> 12.2 ms)
/// and 50 µs in 22 of 30; 10 µs lost to 20 µs in 24 of 30; 30 µs tied with 20 µs.
const TICK_NS: u64 = 20_000;
/// Most shards a runtime uses (one per worker up to this).
const MAX_SHARDS: usize = 16;

struct Entry {
    task: TaskRef,
    generation: usize,
}

/// The entries whose deadlines fall in one tick.
struct Bucket {
    /// The latest of their deadlines (ns since `epoch`): when the bucket is due.
    due: u64,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct TickBuckets {
    /// Tick → the bucket of deadlines in it (the tick's last nanosecond included, its first
    /// excluded).
    by_tick: BTreeMap<u64, Bucket>,
    /// Due buckets another worker handed over to the shard's owner (module docs).
    handed: Vec<Vec<Entry>>,
    /// Empty vectors kept for reuse.
    spare: Vec<Vec<Entry>>,
}

/// One shard: its buckets, and what readers need without the lock.
struct Shard {
    buckets: Mutex<TickBuckets>,
    /// When this shard's first bucket is due (its `due`), as ns since `epoch` (`NONE` when
    /// empty). Written under the lock.
    earliest: AtomicU64,
    /// Entries in this shard (stale ones included). Written under the lock.
    pending: AtomicUsize,
    /// The earliest `due` (ns since `epoch`) of the buckets in `handed`, `NONE` when there are
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
        let nanos = self.to_nanos(deadline);
        let tick = nanos.div_ceil(TICK_NS);
        let shard = &self.shards[worker % self.shards.len()];
        let due = {
            let mut guard = shard.buckets.lock();
            let TickBuckets { by_tick, spare, .. } = &mut *guard;
            let bucket = by_tick.entry(tick).or_insert_with(|| Bucket {
                due: 0,
                entries: spare.pop().unwrap_or_default(),
            });
            bucket.entries.push(Entry { task, generation });
            bucket.due = bucket.due.max(nanos);
            let due = bucket.due;
            // `earliest` is the first bucket's `due`: this bucket is the first if its tick is not
            // later than that bucket's (`NONE`'s tick is later than any).
            let earliest = shard.earliest.load(Relaxed);
            if tick <= earliest.div_ceil(TICK_NS) && due != earliest {
                shard.earliest.store(due, Release);
            }
            shard
                .pending
                .store(shard.pending.load(Relaxed) + 1, Relaxed);
            due
        };
        // Store-load against `set_poller_deadline`: either the poller's re-check before it blocks
        // sees our `earliest`, or we see its deadline and wake it.
        fence(SeqCst);
        due < self.poller_deadline.load(SeqCst)
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

    /// When the first pending bucket is due.
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
        self.earliest.store(buckets.next_due(), Release);
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
        self.earliest.store(buckets.next_due(), Release);
        self.pending
            .store(self.pending.load(Relaxed) - taken, Relaxed);
        taken
    }
}

impl TickBuckets {
    /// Removes the first bucket if it is due at `cutoff` (ns since `epoch`); returns its `due`
    /// and its entries.
    fn pop_due(&mut self, cutoff: u64) -> Option<(u64, Vec<Entry>)> {
        let entry = self.by_tick.first_entry()?;
        let due = entry.get().due;
        (due <= cutoff).then(|| (due, entry.remove().entries))
    }

    /// When the first bucket still waiting in `by_tick` is due, as ns since `epoch` (`NONE`:
    /// empty).
    fn next_due(&self) -> u64 {
        self.by_tick
            .first_key_value()
            .map_or(NONE, |(_, bucket)| bucket.due)
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
    fn a_bucket_is_due_at_its_latest_deadline() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let timers = Timers::new(1);
        let at = |ns: u64| timers.epoch + Duration::from_nanos(ns);
        let tick = 10 * TICK_NS;
        let (mut out, mut owners) = (Vec::new(), Vec::new());
        // Two deadlines in the tick that ends at `tick`: the bucket waits for the later one.
        timers.add(at(tick - TICK_NS / 2), task(&rt), 0, 0);
        assert_eq!(timers.next_deadline(), Some(at(tick - TICK_NS / 2)));
        timers.add(at(tick - TICK_NS / 4), task(&rt), 0, 0);
        assert_eq!(timers.next_deadline(), Some(at(tick - TICK_NS / 4)));
        // A later tick's deadline does not move it; an earlier tick's comes first.
        timers.add(at(tick + TICK_NS / 2), task(&rt), 0, 0);
        assert_eq!(timers.next_deadline(), Some(at(tick - TICK_NS / 4)));
        timers.add(at(tick - 2 * TICK_NS), task(&rt), 0, 0);
        assert_eq!(timers.next_deadline(), Some(at(tick - 2 * TICK_NS)));

        let fire = |timers: &Timers, ns, out: &mut Vec<_>, owners: &mut Vec<_>| {
            timers.take_due(at(ns), Firing::Owner(0), out, owners)
        };
        assert_eq!(fire(&timers, tick - 2 * TICK_NS, &mut out, &mut owners), 1);
        assert!(!timers.is_due(at(tick - TICK_NS / 4 - 1), 0));
        assert_eq!(
            fire(&timers, tick - TICK_NS / 4 - 1, &mut out, &mut owners),
            0,
            "nothing fires before the latest deadline of its bucket"
        );
        assert_eq!(fire(&timers, tick - TICK_NS / 4, &mut out, &mut owners), 2);
        assert_eq!(timers.next_deadline(), Some(at(tick + TICK_NS / 2)));
        assert_eq!(timers.pending(), 1);
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
