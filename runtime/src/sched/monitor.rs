//! The monitor thread (Go's sysmon, reduced): notices a worker stuck on one fiber while work
//! waits and starts a spare worker for it; fires overdue timers and polls the reactor when no
//! worker does.
//!
//! A worker is *stuck* when it is busy and its tick (incremented on every fiber resume) has not
//! moved for [`STUCK_AFTER`] while it has work queued (or the injector has). The spare then steals
//! the stuck worker's stealable fibers; pinned fibers of a non-migrating runtime must wait for
//! their own worker (DESIGN.md decision 7).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::loom::Ordering::*;

use super::worker::{run_worker, SLOT_RUNNING, SLOT_UNUSED};
use super::Shared;
use crate::time::Firing;

/// How long a worker may run one fiber while work waits before a spare is started.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(10);
/// Monitor period while the runtime has work.
const PERIOD_BUSY: Duration = Duration::from_millis(2);
/// How late a timer must be before the monitor fires it instead of its worker.
const TIMER_GRACE: Duration = Duration::from_millis(1);
/// Monitor period while every worker is parked.
const PERIOD_IDLE: Duration = Duration::from_millis(20);

/// Starts the thread for worker slot `index` (already marked SLOT_RUNNING).
pub(crate) fn spawn_worker_thread(shared: &Arc<Shared>, index: usize) -> std::io::Result<()> {
    let s = shared.clone();
    let name = format!("{}-worker-{index}", shared.config.name);
    let handle = thread::Builder::new()
        .name(name)
        .spawn(move || run_worker(s, index))?;
    shared.threads.lock().push(handle);
    Ok(())
}

/// Starts a spare worker in a free slot, if there is one. Returns true if one started.
pub(crate) fn start_spare(shared: &Arc<Shared>) -> bool {
    if shared.stopping() {
        return false;
    }
    for index in shared.config.workers..shared.workers.len() {
        let slot = &shared.workers[index];
        if slot
            .status
            .compare_exchange(SLOT_UNUSED, SLOT_RUNNING, SeqCst, SeqCst)
            .is_ok()
        {
            shared.slots_used.fetch_max(index + 1, SeqCst);
            if spawn_worker_thread(shared, index).is_err() {
                slot.status.store(SLOT_UNUSED, SeqCst);
                return false;
            }
            shared.counters.spares_started.fetch_add(1, Relaxed);
            return true;
        }
    }
    false
}

/// The monitor's thread body; returns when the runtime stops.
pub(crate) fn run_monitor(shared: Arc<Shared>) {
    let n = shared.workers.len();
    let mut last_tick = vec![0u64; n];
    let mut stuck_since: Vec<Option<Instant>> = vec![None; n];
    while !shared.stopping() {
        let all_parked = shared.idle.num_parked.load(Relaxed) >= shared.active_workers();
        let period = if all_parked && shared.timers.pending() == 0 {
            PERIOD_IDLE
        } else {
            PERIOD_BUSY
        };
        shared.monitor_parker.park(Some(period));
        if shared.stopping() {
            break;
        }
        let now = Instant::now();
        // Timers and I/O nobody attends to. Workers fire their own timer shards (see
        // `crate::time`); the monitor takes only what waited past a grace period.
        if shared.idle.poller.load(SeqCst) == 0 {
            shared.fire_timers_at(None, now, Firing::Overdue(TIMER_GRACE));
            shared.poll_reactor_now();
        }
        // Stuck workers.
        let work_waiting = shared.has_stealable_work();
        for (i, w) in shared.workers.iter().enumerate() {
            if w.status.load(Relaxed) != SLOT_RUNNING {
                stuck_since[i] = None;
                continue;
            }
            let tick = w.tick.load(Relaxed);
            let busy = w.busy.load(Relaxed);
            if !busy || tick != last_tick[i] {
                last_tick[i] = tick;
                stuck_since[i] = None;
                continue;
            }
            let since = *stuck_since[i].get_or_insert(now);
            // Once a spare started, give it time to take over before judging again.
            if now.duration_since(since) >= STUCK_AFTER
                && (work_waiting || !w.stealer.is_empty())
                && shared.idle.num_parked.load(SeqCst) == 0
                && start_spare(&shared)
            {
                stuck_since[i] = Some(now);
            }
        }
        if work_waiting && shared.idle.searching.load(SeqCst) == 0 {
            shared.notify_work();
        }
    }
}
