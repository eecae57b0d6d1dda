//! The searching/parking protocol of idle workers (the argument for why no wake-up is lost is in
//! the module docs of [`super`]) and the per-worker parker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loom::{fence, AtomicUsize, Mutex, Ordering::*};
use parking_lot::Condvar;

use super::Shared;

/// Who is idle, who is searching, who polls the reactor.
pub(crate) struct Idle {
    /// Workers currently searching for work (stealing).
    pub(crate) searching: AtomicUsize,
    /// Number of entries in `parked`, readable without the lock.
    pub(crate) num_parked: AtomicUsize,
    /// Indices of parked workers.
    parked: Mutex<Vec<usize>>,
    /// 1 + index of the worker blocked in the reactor's poll, or 0.
    pub(crate) poller: AtomicUsize,
}

impl Idle {
    pub(crate) fn new(capacity: usize) -> Self {
        Idle {
            searching: AtomicUsize::new(0),
            num_parked: AtomicUsize::new(0),
            parked: Mutex::new(Vec::with_capacity(capacity)),
            poller: AtomicUsize::new(0),
        }
    }

    /// Starts searching if fewer than half of the `active` workers search already.
    pub(crate) fn try_start_searching(&self, active: usize) -> bool {
        let n = self.searching.load(SeqCst);
        if 2 * n >= active.max(2) {
            return false;
        }
        self.searching.fetch_add(1, SeqCst);
        true
    }

    /// Stops searching; true if the caller was the last searcher.
    pub(crate) fn stop_searching(&self) -> bool {
        self.searching.fetch_sub(1, SeqCst) == 1
    }

    pub(crate) fn push_parked(&self, index: usize) {
        let mut parked = self.parked.lock();
        if !parked.contains(&index) {
            parked.push(index);
            self.num_parked.store(parked.len(), SeqCst);
        }
    }

    /// Removes `index` from the idle list; false if someone else removed it (to wake it).
    pub(crate) fn remove_parked(&self, index: usize) -> bool {
        let mut parked = self.parked.lock();
        match parked.iter().position(|&i| i == index) {
            Some(pos) => {
                parked.swap_remove(pos);
                self.num_parked.store(parked.len(), SeqCst);
                true
            }
            None => false,
        }
    }

    fn pop_parked(&self) -> Option<usize> {
        let mut parked = self.parked.lock();
        let index = parked.pop();
        self.num_parked.store(parked.len(), SeqCst);
        index
    }
}

/// A token plus condvar for one worker thread (parking_lot: blocking an OS thread).
pub(crate) struct WorkerParker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

impl WorkerParker {
    pub(crate) fn new() -> Self {
        WorkerParker {
            notified: Mutex::new(false),
            condvar: Condvar::new(),
        }
    }

    /// Sets the token and wakes the worker if it waits on the condvar.
    pub(crate) fn unpark(&self) {
        *self.notified.lock() = true;
        self.condvar.notify_one();
    }

    /// True if the token is set (without consuming it).
    pub(crate) fn has_token(&self) -> bool {
        *self.notified.lock()
    }

    /// Consumes the token if set.
    pub(crate) fn take_token(&self) -> bool {
        std::mem::take(&mut *self.notified.lock())
    }

    /// Waits for the token (at most `timeout`), consuming it. Returns true if it was set.
    pub(crate) fn park(&self, timeout: Option<Duration>) -> bool {
        let mut notified = self.notified.lock();
        if !*notified {
            match timeout {
                Some(t) => {
                    let deadline = Instant::now() + t;
                    while !*notified {
                        if self.condvar.wait_until(&mut notified, deadline).timed_out() {
                            break;
                        }
                    }
                }
                None => {
                    while !*notified {
                        self.condvar.wait(&mut notified);
                    }
                }
            }
        }
        std::mem::take(&mut *notified)
    }
}

impl Shared {
    /// New stealable work exists: wake a parked worker unless someone is searching already.
    /// The caller has pushed the work before calling (see the module docs of `sched`).
    pub(crate) fn notify_work(&self) {
        fence(SeqCst);
        if self.idle.searching.load(SeqCst) != 0 || self.idle.num_parked.load(SeqCst) == 0 {
            return;
        }
        if let Some(index) = self.idle.pop_parked() {
            // Counted as searching on its behalf, so that concurrent notifies wake no one else.
            self.idle.searching.fetch_add(1, SeqCst);
            self.workers[index].woken_to_search.store(true, SeqCst);
            self.wake_worker(index);
        }
    }

    /// Wakes worker `index` whether it waits on its condvar or in the reactor.
    pub(crate) fn wake_worker(&self, index: usize) {
        self.workers[index].parker.unpark();
        fence(SeqCst);
        if self.idle.poller.load(SeqCst) == index + 1 {
            self.reactor.wake();
        }
    }

    /// Blocks parked worker `index`: as the poller (reactor poll until the next timer) if no one
    /// polls, else on its condvar. `spare_idle` bounds the wait of spare workers.
    pub(crate) fn block_worker(self: &Arc<Self>, index: usize, spare_idle: Option<Duration>) {
        let parker = &self.workers[index].parker;
        if self
            .idle
            .poller
            .compare_exchange(0, index + 1, SeqCst, SeqCst)
            .is_ok()
        {
            // Announced as poller; a wake from now on also wakes the reactor. A wake that came
            // before is seen here through the token.
            if !parker.take_token() {
                let timeout = self
                    .timers
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()));
                let timeout = match (timeout, spare_idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let deadline = timeout.map(|t| Instant::now() + t);
                self.timers.set_poller_deadline(deadline);
                // A wake-up whose reactor event another thread's non-blocking poll consumed is
                // seen here instead (`poll_unless`): the token, or a timer added earlier than the
                // deadline we computed.
                let woken = || {
                    parker.has_token()
                        || self
                            .timers
                            .next_deadline()
                            .is_some_and(|d| deadline.is_none_or(|ours| d < ours))
                };
                // An error from epoll (EINTR is retried by mio) leaves the worker to re-check.
                let _ = self.reactor.poll_unless(timeout, woken);
                self.timers.set_poller_deadline(None);
            }
            self.idle.poller.store(0, SeqCst);
            parker.take_token();
            self.fire_timers(Instant::now());
        } else {
            parker.park(spare_idle);
        }
    }
}
