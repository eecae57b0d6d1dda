//! The searching/parking protocol of idle workers (the argument for why no wake-up is lost is in
//! the module docs of [`super`]) and the per-worker parker.

#[cfg(not(loom))]
use std::sync::Arc;
#[cfg(not(loom))]
use std::time::{Duration, Instant};

use crate::loom::{fence, AtomicUsize, Mutex, Ordering::*};
#[cfg(not(loom))]
use parking_lot::Condvar;

#[cfg(not(loom))]
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

    /// Steps 1–3 of parking (module docs of `sched`): join the idle list, stop searching, fence.
    /// The caller must then re-check every queue before it blocks.
    pub(crate) fn begin_park(&self, index: usize, was_searching: bool) {
        self.push_parked(index);
        if was_searching {
            self.stop_searching();
        }
        fence(SeqCst);
    }

    /// The waker's side, after it pushed work: the parked worker to wake (now counted as
    /// searching on its behalf), or `None` when a searcher will find the work or nobody sleeps.
    pub(crate) fn notify(&self) -> Option<usize> {
        fence(SeqCst);
        if self.searching.load(SeqCst) != 0 || self.num_parked.load(SeqCst) == 0 {
            return None;
        }
        let index = self.pop_parked()?;
        // Counted as searching on its behalf, so that concurrent notifies wake no one else.
        self.searching.fetch_add(1, SeqCst);
        Some(index)
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
#[cfg(not(loom))]
pub(crate) struct WorkerParker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

#[cfg(not(loom))]
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

#[cfg(not(loom))]
thread_local! {
    /// The runtime whose wakes are being batched on this thread, and the workers to wake.
    static DEFERRED_WAKES: std::cell::RefCell<Option<(*const Shared, Vec<usize>)>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(not(loom))]
impl Shared {
    /// New stealable work exists: wake a parked worker unless someone is searching already.
    /// The caller has pushed the work before calling (see the module docs of `sched`).
    pub(crate) fn notify_work(&self) {
        if let Some(index) = self.idle.notify() {
            self.wake_worker(index);
        }
    }

    /// Wakes worker `index` whether it waits on its condvar or in the reactor. Inside
    /// [`Shared::with_deferred_wakes`] on this runtime, the wake is recorded and done once at
    /// the end of the batch (the work is already queued, so a later wake loses nothing).
    pub(crate) fn wake_worker(&self, index: usize) {
        let deferred = DEFERRED_WAKES.with(|d| {
            let mut d = d.borrow_mut();
            match d.as_mut() {
                Some((shared, list)) if std::ptr::eq(*shared, self) => {
                    if !list.contains(&index) {
                        list.push(index);
                    }
                    true
                }
                _ => false,
            }
        });
        if !deferred {
            self.wake_now(index);
        }
    }

    /// Runs `f` (a reactor poll that may unpark many fibers pinned to other workers) and then
    /// wakes each worker it queued work for once, instead of once per fiber.
    pub(crate) fn with_deferred_wakes<R>(&self, f: impl FnOnce() -> R) -> R {
        let outer =
            DEFERRED_WAKES.with(|d| d.borrow_mut().replace((self as *const Shared, Vec::new())));
        struct Flush<'a>(&'a Shared, Option<(*const Shared, Vec<usize>)>);
        impl Drop for Flush<'_> {
            fn drop(&mut self) {
                let batch =
                    DEFERRED_WAKES.with(|d| std::mem::replace(&mut *d.borrow_mut(), self.1.take()));
                if let Some((_, list)) = batch {
                    for index in list {
                        self.0.wake_now(index);
                    }
                }
            }
        }
        let _flush = Flush(self, outer);
        f()
    }

    /// Looks at the reactor without blocking (a busy or spinning worker, or the monitor, while no
    /// worker is blocked in it) and queues the fibers whose sockets are ready. Skipped while no
    /// source is registered: the `epoll_wait` would find nothing, and in a runtime without
    /// sockets it cost a tenth of a yield-heavy workload (a syscall every 61 scheduling
    /// decisions). The deregistered sources waiting for release are released by the next poll
    /// that runs (at the latest the blocking poll of the next worker to park).
    pub(crate) fn poll_reactor_now(&self) {
        if !self.reactor.has_registrations() {
            return;
        }
        // An error from epoll leaves the readiness to the next poll.
        let _ = self.with_deferred_wakes(|| self.reactor.poll(Some(Duration::ZERO)));
    }

    fn wake_now(&self, index: usize) {
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
                let _ = self.with_deferred_wakes(|| self.reactor.poll_unless(timeout, woken));
                self.timers.clear_poller_deadline();
            }
            self.idle.poller.store(0, SeqCst);
            parker.take_token();
            self.fire_timers(Instant::now());
        } else {
            parker.park(spare_idle);
        }
    }
}

/// The idle/searching protocol with loom threads standing in for workers: a counter stands in
/// for the run queues and a token parker (as `WorkerParker`) for blocking. A lost wake-up shows
/// as a deadlock (every thread blocked) or as work left behind.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{thread, Arc};

    /// `WorkerParker` as it is (a token under a mutex plus a condvar), on loom's primitives.
    struct TokenParker {
        token: loom::sync::Mutex<bool>,
        condvar: loom::sync::Condvar,
    }

    impl TokenParker {
        fn new() -> Self {
            TokenParker {
                token: loom::sync::Mutex::new(false),
                condvar: loom::sync::Condvar::new(),
            }
        }
        fn park(&self) {
            let mut token = self.token.lock().unwrap();
            while !*token {
                token = self.condvar.wait(token).unwrap();
            }
            *token = false;
        }
        fn unpark(&self) {
            *self.token.lock().unwrap() = true;
            self.condvar.notify_one();
        }
    }

    /// A worker with nothing to run, as in `WorkerContext::main_loop`/`park`: take work if
    /// there is some, else park with the re-check; returns once it took one unit of work.
    fn worker(idle: &Idle, work: &AtomicUsize, parker: &TokenParker) {
        let take = || {
            work.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let mut searching = idle.try_start_searching(2);
        loop {
            if take() {
                if searching {
                    idle.stop_searching();
                }
                return;
            }
            idle.begin_park(0, searching);
            if work.load(SeqCst) == 0 {
                parker.park();
            }
            // A worker popped by `notify` was counted as searching on its behalf.
            searching = !idle.remove_parked(0);
        }
    }

    fn producer(idle: &Idle, work: &AtomicUsize, parker: &TokenParker) {
        work.fetch_add(1, SeqCst);
        if idle.notify().is_some() {
            parker.unpark();
        }
    }

    fn run(start_searching: bool) {
        loom::model(move || {
            let idle = Arc::new(Idle::new(1));
            if start_searching {
                // Another (modelled as absent) searcher is active: the producer skips the
                // wake-up, so the worker's own re-check must find the work.
                idle.searching.fetch_add(1, SeqCst);
            }
            let work = Arc::new(AtomicUsize::new(0));
            let parker = Arc::new(TokenParker::new());
            let (i2, w2, p2) = (idle.clone(), work.clone(), parker.clone());
            let t = thread::spawn(move || producer(&i2, &w2, &p2));
            if start_searching {
                // The other searcher gives up and parks elsewhere while the producer runs.
                idle.stop_searching();
            }
            worker(&idle, &work, &parker);
            t.join().unwrap();
            assert_eq!(work.load(SeqCst), 0, "the work was taken");
            assert_eq!(idle.num_parked.load(SeqCst), 0);
            assert_eq!(idle.searching.load(SeqCst), 0, "searching count balanced");
        });
    }

    /// A worker goes idle while a producer pushes one unit of work and notifies: the worker
    /// always ends up with the work (it never sleeps next to a full queue).
    #[test]
    fn park_races_notify() {
        run(false);
    }

    /// Same, while another worker is counted as searching when the producer looks.
    #[test]
    fn park_races_notify_with_a_searcher() {
        run(true);
    }
}
