//! The blocking pool: OS threads that run `blocking(f)` closures while the calling fiber parks.
//!
//! Why not hand the worker's queue to a spare and block the worker in place (Go's syscall
//! hand-off)? Because in a runtime without `migrate_fibers` the fibers that started on a worker
//! are bound to its OS thread (DESIGN.md decision 7): blocking that thread would stall all of
//! them, whoever served the rest of its queue. Running `f` on a pool thread instead keeps every
//! worker serving its own fibers; the calling fiber parks like on any other blocking call, and
//! the cost (two thread wake-ups, ~10–30 µs) is small next to a call that blocks "for long".
//!
//! Protocol: the fiber pushes a job (a pointer to a `Job` on its own stack) and wakes an idle
//! pool thread or starts a new one (up to [`MAX_THREADS`]); the pool thread runs the closure,
//! stores the result in the job, sets `done` (Release) and unparks the fiber, which parks until
//! it sees `done` (Acquire). The fiber is shielded from cancellation while it waits, because the
//! job borrows its stack. Idle pool threads exit after [`KEEP_ALIVE`].

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Condvar;

use crate::loom::{AtomicBool, Mutex, Ordering::*};
use crate::park::Unparker;

/// Most pool threads alive at once; further jobs queue.
pub(crate) const MAX_THREADS: usize = 512;
/// How long an idle pool thread waits for work before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// One `blocking` call, living on the calling fiber's stack until `done`.
pub(crate) struct Job {
    pub(crate) run: *mut (dyn FnMut() + Send),
    pub(crate) done: AtomicBool,
    pub(crate) waiter: Unparker,
}

struct JobPtr(*const Job);
// SAFETY: a `Job` is only shared between its fiber and one pool thread; its closure is `Send`,
// and the fiber keeps it alive until `done` is set (see the module docs).
unsafe impl Send for JobPtr {}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<JobPtr>,
    threads: usize,
    idle: usize,
}

/// The pool (one per process: blocking threads are not tied to a runtime).
pub(crate) struct BlockingPool {
    queue: Mutex<Queue>,
    condvar: Condvar,
}

impl BlockingPool {
    const fn new() -> Self {
        BlockingPool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                threads: 0,
                idle: 0,
            }),
            condvar: Condvar::new(),
        }
    }

    /// Queues `job` and makes sure a thread will run it.
    ///
    /// # Safety
    /// `job` must stay valid (and not move) until its `done` flag is set.
    pub(crate) unsafe fn submit(&'static self, job: *const Job) {
        let mut q = self.queue.lock();
        q.jobs.push_back(JobPtr(job));
        if q.idle > 0 {
            drop(q);
            self.condvar.notify_one();
            return;
        }
        if q.threads < MAX_THREADS {
            q.threads += 1;
            drop(q);
            let spawned = std::thread::Builder::new()
                .name("filament-blocking".into())
                .spawn(move || self.serve());
            if spawned.is_err() {
                // No new thread: the job waits for a busy one (at least one exists or will,
                // unless none could ever be started, which the next submit retries).
                self.queue.lock().threads -= 1;
            }
        }
    }

    fn serve(&self) {
        let mut q = self.queue.lock();
        loop {
            if let Some(JobPtr(job)) = q.jobs.pop_front() {
                drop(q);
                // SAFETY: the submitter keeps the job alive until `done`; we are its only runner.
                let job = unsafe { &*job };
                // SAFETY: `run` points at the closure slot on the fiber's stack, valid until done.
                unsafe { (*job.run)() };
                let waiter = job.waiter.clone();
                job.done.store(true, Release);
                waiter.unpark();
                q = self.queue.lock();
                continue;
            }
            q.idle += 1;
            let timed_out = self.condvar.wait_for(&mut q, KEEP_ALIVE).timed_out();
            q.idle -= 1;
            if timed_out && q.jobs.is_empty() {
                q.threads -= 1;
                return;
            }
        }
    }
}

/// The process-wide blocking pool.
pub(crate) static POOL: BlockingPool = BlockingPool::new();
