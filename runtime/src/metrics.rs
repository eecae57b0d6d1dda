//! `Runtime::metrics()`: a snapshot of a runtime's counters, cheap enough to take every second.
//!
//! Every figure is read with relaxed loads from counters the scheduler, the reactor and the timers
//! maintain anyway (one `fetch_add` on paths that already write shared memory), so the snapshot
//! is not atomic as a whole: counters taken a few nanoseconds apart may disagree slightly (for
//! example `fibers_spawned - fibers_finished` may differ from `fibers_alive` by the fibers
//! finishing at that moment). Stack figures are process-wide: stacks are pooled per thread and
//! shared by every runtime of the process. `stack_bytes_committed` asks the kernel (`mincore`
//! over the stack arenas), which is the one figure whose cost grows with the reserved space:
//! about a millisecond per 4 GiB of arenas.

use std::fmt;
use std::sync::Arc;

use crate::loom::Ordering::Relaxed;
use crate::sched::worker::SLOT_RUNNING;
use crate::sched::Shared;

/// A snapshot of a runtime's counters. See [`Runtime::metrics`](crate::Runtime::metrics).
///
/// ```
/// let rt = filament_runtime::Runtime::builder().workers(2).build().unwrap();
/// rt.block_on(|| filament_runtime::spawn(|| 1).join().unwrap());
/// let m = rt.metrics();
/// assert_eq!(m.workers, 2);
/// assert!(m.fibers_spawned >= 2);
/// println!("{m}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Worker threads the runtime was built with.
    pub workers: usize,
    /// Spare workers running now (started for stuck workers; they exit when idle).
    pub spare_workers: usize,
    /// Spare workers started since the runtime was built.
    pub spare_workers_started: u64,
    /// Fibers spawned and not yet finished.
    pub fibers_alive: usize,
    /// Fibers spawned since the runtime was built.
    pub fibers_spawned: u64,
    /// Fibers that have finished (returned, panicked or were cancelled).
    pub fibers_finished: u64,
    /// Successful steals from another worker's queue or from the global injector.
    pub steals: u64,
    /// Times a fiber parked (blocked in `join`, `sleep`, a lock, a channel, a socket, ...).
    pub fiber_parks: u64,
    /// Times a parked fiber was made runnable again.
    pub fiber_unparks: u64,
    /// Times a worker thread went to sleep for want of work.
    pub worker_parks: u64,
    /// Calls of the reactor's `mio::Poll::poll`.
    pub reactor_polls: u64,
    /// Readiness events the reactor handled.
    pub reactor_events: u64,
    /// Sockets registered with the reactor now.
    pub reactor_registrations: usize,
    /// Sleeps and deadlines waiting in the timer heap (entries of woken fibers linger until
    /// their deadline).
    pub timers_pending: usize,
    /// Fibers waiting in the global injector (spawned from outside the pool).
    pub injector_depth: usize,
    /// Per worker slot in use: fibers in its stealable queue plus its inbox (the private LIFO
    /// slot and pinned queue are not visible from outside the worker).
    pub queue_depths: Vec<usize>,
    /// Per running worker: live started fibers bound to it (in a runtime without
    /// `migrate_fibers`, only that worker can run them, so an uneven split shows here).
    pub homed_fibers: Vec<usize>,
    /// Fiber stacks handed out and not yet returned (process-wide).
    pub stacks_in_use: usize,
    /// Fiber stacks pooled for reuse (process-wide).
    pub stacks_pooled: usize,
    /// Bytes of stack memory resident in RAM (process-wide; see the module docs).
    pub stack_bytes_committed: usize,
    /// Address space reserved for stacks (process-wide).
    pub stack_bytes_reserved: usize,
}

pub(crate) fn snapshot(shared: &Arc<Shared>) -> Metrics {
    let counters = &shared.counters;
    let workers = shared.config.workers;
    let running_slots: Vec<usize> = (0..shared.workers.len())
        .filter(|&i| i < workers || shared.workers[i].status.load(Relaxed) == SLOT_RUNNING)
        .collect();
    let homed_fibers = running_slots
        .iter()
        .map(|&i| shared.workers[i].homed.get())
        .collect();
    let queue_depths = running_slots
        .iter()
        .map(|&i| shared.workers[i].stealer.len() + shared.workers[i].inbox.len())
        .collect();
    let reactor = shared.reactor.stats();
    let stacks = crate::stack::stats();
    Metrics {
        workers,
        spare_workers: running_slots.len().saturating_sub(workers),
        spare_workers_started: counters.spares_started.load(Relaxed),
        fibers_alive: shared.live_fibers() as usize,
        fibers_spawned: shared.count(|c| &c.spawned),
        fibers_finished: shared.count(|c| &c.finished),
        steals: shared.count(|c| &c.steals),
        fiber_parks: shared.count(|c| &c.parks),
        fiber_unparks: shared.count(|c| &c.unparks),
        worker_parks: shared.count(|c| &c.worker_parks),
        reactor_polls: reactor.polls,
        reactor_events: reactor.events,
        reactor_registrations: reactor.registrations,
        timers_pending: shared.timers.pending(),
        injector_depth: shared.injector.len(),
        queue_depths,
        homed_fibers,
        stacks_in_use: stacks.in_use,
        stacks_pooled: stacks.pooled,
        stack_bytes_committed: crate::stack::committed_bytes(),
        stack_bytes_reserved: stacks.reserved_bytes,
    }
}

/// Formats a byte count with a binary unit (`12.3 MiB`).
fn bytes(n: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String); 12] = [
            (
                "workers",
                format!(
                    "{} (+{} spare now, {} spares started)",
                    self.workers, self.spare_workers, self.spare_workers_started
                ),
            ),
            (
                "fibers",
                format!(
                    "{} alive, {} spawned, {} finished",
                    self.fibers_alive, self.fibers_spawned, self.fibers_finished
                ),
            ),
            ("steals", self.steals.to_string()),
            (
                "fiber parks",
                format!("{} parks, {} unparks", self.fiber_parks, self.fiber_unparks),
            ),
            ("worker parks", self.worker_parks.to_string()),
            (
                "reactor",
                format!(
                    "{} polls, {} events, {} registrations",
                    self.reactor_polls, self.reactor_events, self.reactor_registrations
                ),
            ),
            ("timers pending", self.timers_pending.to_string()),
            ("injector", self.injector_depth.to_string()),
            ("queue depths", format!("{:?}", self.queue_depths)),
            ("homed fibers", format!("{:?}", self.homed_fibers)),
            (
                "stacks",
                format!(
                    "{} in use, {} pooled",
                    self.stacks_in_use, self.stacks_pooled
                ),
            ),
            (
                "stack memory",
                format!(
                    "{} committed, {} reserved",
                    bytes(self.stack_bytes_committed),
                    bytes(self.stack_bytes_reserved)
                ),
            ),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<15} {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
    }
}
