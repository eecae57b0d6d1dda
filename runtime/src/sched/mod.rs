//! The M:N scheduler: fibers on a work-stealing pool of worker threads.
//!
//! # Queues
//!
//! Each worker owns (see [`worker`]):
//! * a LIFO slot: the fiber it just spawned or woke runs next (cache-hot, like Go's `runnext`),
//!   taken at most [`worker::LIFO_STREAK`] times in a row so two fibers waking each other cannot
//!   starve the rest of the queue;
//! * a bounded-by-practice FIFO *stealable* deque (crossbeam-deque): fibers that have not started
//!   yet, and — in a runtime built with `migrate_fibers` — every runnable fiber;
//! * a private FIFO of *pinned* fibers: started fibers of a non-migrating runtime, which only this
//!   worker may run (DESIGN.md decision 7);
//! * an *inbox*: a queue other threads push a pinned fiber into when they wake it.
//!
//! Fibers created outside the pool go to the global injector. Every 61st scheduling decision a
//! worker looks at the injector first, so it cannot be starved by local work.
//!
//! A fiber of a non-migrating runtime makes its home where it first runs. A worker about to
//! start a detached one (its `JoinHandle` dropped) that has clearly more fibers homed on it than
//! another worker hands it over to that worker's inbox instead ([`placement`]), so the fibers an
//! accept loop spawns one at a time do not all end up on the acceptor's worker.
//!
//! # Searching and parking (why no wake-up is lost)
//!
//! A worker with nothing to run becomes *searching* if fewer than half of the workers already
//! are, and steals half of a random victim's stealable deque, up to 128 fibers (or a batch from
//! the injector). A worker that finds nothing parks:
//!
//! 1. it adds itself to the idle list ([`idle::Idle`]),
//! 2. stops searching (decrements the searching count),
//! 3. issues a SeqCst fence and **re-checks every queue** (injector, stealable deques, its own
//!    inbox, due timers); if anything is there it takes itself off the idle list and goes on,
//! 4. otherwise blocks: exactly one parked worker blocks in the reactor's `poll` with the next
//!    timer deadline as its timeout (the *poller*); the others wait on their own condvar.
//!
//! Whoever makes work runnable (spawn, wake, timer) pushes it, issues a SeqCst fence, and then
//! calls `notify_work`: if some worker is searching, it does nothing (that searcher will find the
//! work, and a searcher that finds work and stops searching notifies again if it was the last
//! one); otherwise it pops one parked worker from the idle list, counts it as searching on its
//! behalf, and wakes it (its condvar, or the reactor's `Waker` if it is the poller). By the two
//! fences, either the pusher sees the parking worker's decrement of the searching count and its
//! place in the idle list, or the parking worker's re-check sees the pushed fiber: a fiber can
//! never sit in a queue while every worker sleeps. A worker that wakes and finds itself no longer
//! on the idle list was popped by a notifier and counted as searching on its behalf, so it
//! searches (and later stops, keeping the count balanced) whether or not it ever blocked.
//! `idle::loom_tests` model-checks this protocol; `state::loom_tests` the fiber's state word.
//!
//! A worker pushing onto its *own* stealable deque notifies only when the deque was empty
//! before the push. That cannot lose a fiber: the pusher is awake and runs its own queue before
//! it ever parks, so the notify only serves parallelism. And parallelism is kept: the push that
//! made the deque non-empty notified, and from then on, while stealable work remains, the last
//! searcher to find work notifies again (above), so idle workers keep joining one by one (Go's
//! rule: while there is work and an idle worker, one worker spins). A spawn storm saves a SeqCst
//! fence and a read of the idle counters' shared line per spawn (spawn scratch, one worker:
//! 146 -> 139 ns per fiber).
//!
//! The poller publishes nothing the wakers could miss either: a waker sets the worker's token
//! (or adds an earlier timer) *before* it wakes the reactor, and the poller checks both while
//! holding the poll lock, just before it blocks (`Reactor::poll_unless`), so a non-blocking poll
//! by a busy worker or the monitor that consumed the reactor's wake event cannot leave it asleep.
//!
//! A pinned fiber woken elsewhere goes to its home worker's inbox and that worker is woken
//! directly ([`idle::WorkerParker`]: a token under a lock, so a wake before the park is kept; the
//! poller checks the token after announcing itself as poller, so a wake that finds it polling
//! uses the reactor's `Waker` instead). Before it parks, a worker that owns pinned fibers spins
//! for a while watching its inbox ([`worker_idle`]: an adaptive budget of at most 50 µs, and a
//! non-blocking reactor poll every 10 µs while nobody polls): a fiber woken by another worker
//! a microsecond later then costs a cache-line transfer instead of a futex wake. Spinning is
//! not part of the correctness argument: the spinner is neither on the idle list nor counted
//! as searching, and when its budget runs out it parks through steps 1–4 above.
//!
//! # Blocking and the monitor
//!
//! `blocking(f)` runs `f` on a thread of the [`blocking_pool`] while the calling fiber parks, so
//! the worker keeps serving its other fibers (see that module for why this beats handing the
//! queue off when fibers are bound to their thread). A monitor thread notices a worker stuck on
//! one fiber for more than 10 ms while stealable work waits and starts a spare worker to serve
//! it; it also fires overdue timers and polls the reactor when no worker does. Spare workers
//! exit after they have been idle for a while (and own no pinned fibers).
//!
//! # Shutdown
//!
//! Dropping the `Runtime` sets the shutdown flag, cancels every fiber in the registry (those that
//! have suspended at least once; each unwinds at its next blocking point; a fiber that has not
//! started ends, cancelled, when a worker takes it; one in its first run is cancelled once it
//! suspends and so registers), repeats until the spawned and finished counters say no fiber is live
//! (`Shared::live_fibers`), then stops and joins the workers and the monitor.

pub(crate) mod blocking_pool;
pub(crate) mod first_run;
pub(crate) mod idle;
pub(crate) mod join_state;
pub(crate) mod monitor;
mod placement;
pub(crate) mod registry;
pub(crate) mod runtime_hold;
pub(crate) mod state;
pub(crate) mod task;
mod task_memory;
mod task_ref;
pub(crate) mod wait_slot;
pub(crate) mod worker;
pub(crate) mod worker_idle;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::Injector;

use crate::loom::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use crate::reactor::Reactor;
use crate::time::{Firing, Timers};

pub use self::task::Cancelled;
pub(crate) use self::task_ref::TaskRef;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_spares: usize,
    pub(crate) stack_size: usize,
    pub(crate) migrate: bool,
    pub(crate) name: Arc<str>,
}

/// Counters behind `Runtime::metrics`. Each worker has its own set on its own cache line, so
/// counting a spawn, a park or a finish never makes two workers fight over one line; threads
/// outside the pool use the runtime's set. `Runtime::metrics` sums them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spawned: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) unparks: AtomicU64,
    pub(crate) worker_parks: AtomicU64,
    pub(crate) spares_started: AtomicU64,
    /// Not a metric: the task objects this worker made minus those it freed (wrapping), its
    /// share of the runtime's [`runtime_hold::RuntimeHolds`]. Unused in the runtime's own set.
    pub(crate) task_holds: AtomicU64,
}

/// Fiber ids a worker takes from `Shared::next_id` at a time.
pub(crate) const ID_BLOCK: u64 = 1024;

/// State shared by the workers of one runtime and by every task of it.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) workers: Box<[worker::WorkerShared]>,
    pub(crate) injector: Injector<TaskRef>,
    pub(crate) idle: idle::Idle,
    pub(crate) reactor: Arc<Reactor>,
    pub(crate) timers: Timers,
    pub(crate) registry: registry::Registry,
    pub(crate) counters: Counters,
    pub(crate) next_id: AtomicU64,
    /// One past the highest worker slot that has ever run (spare slots above it were never
    /// used: searching workers do not look at them).
    pub(crate) slots_used: AtomicUsize,
    /// Set by `Runtime::drop` once no fiber is live: the workers and the monitor exit.
    pub(crate) stop: AtomicBool,
    /// Set when the runtime starts shutting down: new fibers are cancelled before they run.
    pub(crate) shutdown: AtomicBool,
    /// The monitor thread's parker (woken on shutdown).
    pub(crate) monitor_parker: idle::WorkerParker,
    pub(crate) threads: crate::loom::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// What keeps this `Shared` alive for task objects (see [`runtime_hold`]).
    pub(crate) task_holds: runtime_hold::RuntimeHolds,
    /// Task objects of this runtime not yet freed (unit tests check reference counting with it).
    #[cfg(test)]
    pub(crate) live_tasks: AtomicUsize,
}

impl Shared {
    /// Queues a fiber that just became runnable (woken, timed out, cancelled or spawned) from
    /// any thread. See the module docs for where it goes.
    pub(crate) fn schedule(&self, task: TaskRef) {
        self.schedule_at(self.here(), task);
    }

    /// [`Shared::schedule`] for a caller that already looked up [`Shared::here`].
    #[inline]
    pub(crate) fn schedule_at(&self, here: Option<&worker::WorkerContext>, task: TaskRef) {
        match here {
            Some(ctx) => ctx.schedule_local(task),
            None => self.schedule_remote(task),
        }
    }

    /// The calling thread's worker, if it serves this runtime. The reference must not be kept
    /// across a blocking point of a fiber (see `worker::current`).
    #[inline]
    pub(crate) fn here(&self) -> Option<&'static worker::WorkerContext> {
        worker::current().filter(|ctx| std::ptr::eq(Arc::as_ptr(&ctx.shared), self))
    }

    /// Queues a fiber from a thread that is not one of this runtime's workers.
    pub(crate) fn schedule_remote(&self, task: TaskRef) {
        let home = task.header.home.load(Acquire);
        if home != task::NO_HOME && !self.config.migrate {
            self.workers[home].inbox.push(task);
            self.wake_worker(home);
        } else {
            self.injector.push(task);
            self.notify_work();
        }
    }

    /// A fresh fiber id (`here`: see [`Shared::here`]). A worker takes ids from a block of its
    /// own (refilled [`ID_BLOCK`] at a time), so workers spawning at once do not fight over one
    /// counter; other threads take them one at a time. Ids are unique per runtime, not in spawn order.
    #[inline]
    pub(crate) fn next_fiber_id_at(&self, here: Option<&worker::WorkerContext>) -> u64 {
        match here {
            Some(ctx) => ctx.next_fiber_id(),
            None => self.next_id.fetch_add(1, Relaxed),
        }
    }

    /// Adds one to a counter of the calling thread's set (`here`, from [`Shared::here`]): its
    /// worker's own (only that worker's thread writes it, so a load and a store do, with no locked
    /// read-modify-write), or the runtime's shared set from any other thread. The store is
    /// Release (a plain store on x86_64) so that [`Shared::count`]'s Acquire loads order it:
    /// [`Shared::live_fibers`] relies on it.
    #[inline]
    pub(crate) fn bump_at(
        &self,
        here: Option<&worker::WorkerContext>,
        which: impl Fn(&Counters) -> &AtomicU64,
    ) {
        match here {
            Some(ctx) => {
                let c = which(&self.workers[ctx.index].counters);
                c.store(c.load(Relaxed).wrapping_add(1), Release);
            }
            _ => {
                which(&self.counters).fetch_add(1, Release);
            }
        }
    }

    /// Fibers spawned and not finished yet (started or not).
    ///
    /// Read from the counters, finished first: every fiber counted as finished was counted as
    /// spawned before it was queued, and the worker that finished it took it from that queue
    /// and then stored its `finished` count with Release. So once our Acquire loads see that
    /// count, the spawned sum read after them includes the fiber, and the difference never
    /// misses a live fiber (it may count one spawned meanwhile). [`Shared::count`] sums every
    /// slot, not only `slots_used`, so a spare that just started cannot be missed.
    pub(crate) fn live_fibers(&self) -> u64 {
        let finished = self.count(|c| &c.finished);
        let spawned = self.count(|c| &c.spawned);
        spawned.saturating_sub(finished)
    }

    /// A counter summed over the shared set and every worker slot (Acquire loads: see
    /// [`Shared::live_fibers`]; off the hot paths).
    pub(crate) fn count(&self, which: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        let workers: u64 = self
            .workers
            .iter()
            .map(|w| which(&w.counters).load(Acquire))
            .sum();
        workers + which(&self.counters).load(Acquire)
    }

    /// True when some queue other than the pinned ones holds work.
    pub(crate) fn has_stealable_work(&self) -> bool {
        let used = self.slots_used.load(SeqCst);
        !self.injector.is_empty() || self.workers[..used].iter().any(|w| !w.stealer.is_empty())
    }

    /// Fires the timers that are due, queueing their fibers. Returns how many fired.
    ///
    /// Thousands of timers often expire together (every fiber slept 1 ms): the batch wakes each
    /// worker it queued pinned fibers for once, not once per fiber (`with_deferred_wakes`).
    ///
    /// A worker of a runtime whose fibers stay home fires only its own timer shard and hands
    /// other due shards over to their owners, which it wakes (`crate::time`, "Owners fire their
    /// own shard"); a runtime that migrates fibers fires every shard from any worker.
    pub(crate) fn fire_timers(&self, now: Instant) -> usize {
        let here = self.here();
        let firing = match here {
            Some(ctx) if !self.config.migrate => Firing::Owner(ctx.index),
            _ => Firing::All,
        };
        self.fire_timers_at(here, now, firing)
    }

    /// [`Shared::fire_timers`] with the caller's worker (`here`) and the choice of timers given.
    pub(crate) fn fire_timers_at(
        &self,
        here: Option<&worker::WorkerContext>,
        now: Instant,
        firing: Firing,
    ) -> usize {
        let mut due = Vec::new();
        let mut owners = Vec::new();
        self.timers.take_due(now, firing, &mut due, &mut owners);
        let fired = due.len();
        if fired > 0 || !owners.is_empty() {
            self.with_deferred_wakes(|| {
                due.into_iter()
                    .for_each(|task| self.schedule_at(here, task));
                owners.into_iter().for_each(|i| self.wake_worker(i));
            });
        }
        fired
    }
}

/// Is the caller a fiber of some runtime? (Its own `#[inline(never)]` accessor: see worker.)
#[inline]
pub(crate) fn in_fiber() -> bool {
    worker::current_task_ptr().is_some()
}

pub(crate) use self::task::take_parked_ref;
pub(crate) use self::worker::{
    current_fiber_ref, current_task_ptr, park_fiber, park_fiber_until_future, park_running_task,
    unpark_fiber, unpark_task, FiberRef, TaskPtr,
};
