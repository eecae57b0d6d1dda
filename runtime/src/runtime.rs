//! `Runtime` and `RuntimeBuilder`: a pool of worker threads, its reactor, timers and monitor.
//!
//! Lifecycle: `build()` starts the worker threads and the monitor. `block_on(f)` runs `f` as a
//! fiber and blocks the calling thread until it returns. Dropping the runtime shuts it down: new
//! fibers are refused (cancelled before they run), every live fiber is cancelled (it unwinds at
//! its next blocking point, so its destructors run), the drop waits until no fiber is live, then
//! stops and joins every thread it started. A fiber that never reaches a blocking point keeps the
//! drop waiting, as a thread that never returns keeps `join` waiting.
//!
//! The default runtime (used by `spawn` outside any runtime) starts on first use with
//! `num_cpus::get()` workers and lives until the process exits.

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use crossbeam_deque::Injector;

use crate::fiber::JoinHandle;
use crate::loom::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::reactor::Reactor;
use crate::sched::idle::{Idle, WorkerParker};
use crate::sched::monitor::{run_monitor, spawn_worker_thread};
use crate::sched::registry::Registry;
use crate::sched::runtime_hold::RuntimeHolds;
use crate::sched::worker::{WorkerShared, SLOT_RUNNING};
use crate::sched::{Config, Counters, Shared};
use crate::stack::{round_stack_size, DEFAULT_STACK_SIZE};
use crate::time::Timers;

/// The most worker threads a runtime may have.
pub const MAX_WORKERS: usize = 4096;
/// Spare threads a runtime may start for `blocking` calls and stuck workers.
const MAX_SPARES: usize = 256;

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = filament_runtime::Runtime::builder().workers(2).build().unwrap();
/// assert_eq!(rt.block_on(|| 6 * 7), 42);
/// ```
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    stack_size: usize,
    migrate: bool,
    name: String,
    dump_signals: Vec<i32>,
}

/// A filament runtime: worker threads running fibers. See the module docs.
pub struct Runtime {
    shared: Arc<Shared>,
    monitor: Option<thread::JoinHandle<()>>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            workers: None,
            stack_size: DEFAULT_STACK_SIZE,
            migrate: false,
            name: "filament".into(),
            dump_signals: Vec::new(),
        }
    }
}

impl RuntimeBuilder {
    /// A builder with the defaults: `num_cpus::get()` workers, 256 KiB stacks, no migration of
    /// started fibers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of worker threads (1 ..= [`MAX_WORKERS`]; `build` rejects anything else).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Default stack size of the fibers (rounded up to pages; `build` rejects sizes below
    /// [`crate::stack::MIN_STACK_SIZE`] or above [`crate::stack::MAX_STACK_SIZE`]). Stack
    /// memory is reserved, not committed: a fiber pays only for the pages it touches.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Prefix of the worker threads' names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Lets started fibers move between workers at blocking points (full M:N scheduling).
    ///
    /// # Safety
    ///
    /// With migration, the code that runs in this runtime's fibers may continue on another OS
    /// thread after any blocking point (`join`, `sleep`, `yield_now`, a lock, a channel, a
    /// socket call). The caller guarantees that no fiber of this runtime holds, across a
    /// blocking point:
    /// * a reference obtained from a `thread_local!` (or any pointer into thread-local storage),
    /// * a value bound to its OS thread, such as a `std::sync::MutexGuard`, a `RefCell` borrow of
    ///   a thread-local, or anything whose correctness depends on being used on one thread.
    ///
    /// Rust's type system cannot check this (thread-local addresses are also cached by the
    /// compiler within a function), which is why it is an `unsafe` opt-in. Without it, a fiber
    /// that has started always runs on the worker that started it; unstarted fibers are stolen
    /// freely either way.
    pub unsafe fn migrate_fibers(mut self) -> Self {
        self.migrate = true;
        self
    }

    /// Prints a [`Dump`](crate::dump::Dump) of this runtime's fibers to stderr whenever the
    /// process receives `signal` (e.g. `libc::SIGQUIT`, as Go does, or `libc::SIGUSR1`),
    /// without stopping the process. Opt-in: the handler replaces the signal's default action
    /// for the whole process. `build()` fails with `InvalidInput` for a signal that cannot be
    /// caught or that filament uses itself (SIGSEGV, SIGBUS).
    pub fn dump_on_signal(mut self, signal: i32) -> Self {
        self.dump_signals.push(signal);
        self
    }

    /// Starts the runtime.
    pub fn build(self) -> io::Result<Runtime> {
        let workers = self.workers.unwrap_or_else(num_cpus::get);
        if workers == 0 || workers > MAX_WORKERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a runtime needs between 1 and {MAX_WORKERS} workers, not {workers}"),
            ));
        }
        let stack_size = round_stack_size(self.stack_size)?;
        for &signal in &self.dump_signals {
            crate::dump::check_signal(signal)?;
        }
        crate::stack::overflow::install_handler();
        let config = Config {
            workers,
            max_spares: MAX_SPARES,
            stack_size,
            migrate: self.migrate,
            name: self.name.into(),
        };
        let slots = workers + config.max_spares;
        let shared = Arc::new(Shared {
            workers: (0..slots).map(|_| WorkerShared::new()).collect(),
            injector: Injector::new(),
            idle: Idle::new(slots),
            reactor: Arc::new(Reactor::new()?),
            timers: Timers::new(config.workers),
            registry: Registry::new(slots),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
            #[cfg(test)]
            live_tasks: Default::default(),
            slots_used: AtomicUsize::new(workers),
            shutdown: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            monitor_parker: WorkerParker::new(),
            task_holds: RuntimeHolds::new(),
            config,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            monitor: None,
        };
        for index in 0..workers {
            shared.workers[index].status.store(SLOT_RUNNING, SeqCst);
            spawn_worker_thread(&shared, index)?;
        }
        for &signal in &self.dump_signals {
            crate::dump::register_signal(&shared, signal)?;
        }
        let s = shared.clone();
        rt.monitor = Some(
            thread::Builder::new()
                .name(format!("{}-monitor", shared.config.name))
                .spawn(move || run_monitor(s))?,
        );
        Ok(rt)
    }
}

impl Runtime {
    /// A [`RuntimeBuilder`] with the defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// A runtime with the default settings.
    pub fn new() -> io::Result<Runtime> {
        RuntimeBuilder::new().build()
    }

    /// Runs `f` as a fiber of this runtime and blocks the calling thread until it returns. A
    /// panic in `f` is resumed on the caller. `f` may borrow from the caller's stack.
    #[track_caller]
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let handle = crate::fiber::spawn_scoped_on(&self.shared, f);
        match handle.join_now() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// Spawns a fiber on this runtime (from any thread).
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::fiber::Builder::new()
            .spawn_on(&self.shared, f)
            .expect("the default fiber settings are valid")
    }

    /// Number of worker threads (not counting spares).
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// A snapshot of the runtime's counters (see [`Metrics`](crate::Metrics)); cheap enough to
    /// call every second.
    pub fn metrics(&self) -> crate::Metrics {
        crate::metrics::snapshot(&self.shared)
    }

    /// Every live fiber with its state, where it was spawned and what it waits on (see
    /// [`Dump`](crate::dump::Dump)). `Display` gives Go's SIGQUIT-style text.
    pub fn dump(&self) -> crate::dump::Dump {
        crate::dump::snapshot(&self.shared)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("name", &self.shared.config.name)
            .field("workers", &self.shared.config.workers)
            .field("live_fibers", &self.shared.live_fibers())
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.shutdown.store(true, SeqCst);
        // Cancel until nothing is live (fibers may spawn more while they unwind).
        let mut pause = Duration::from_micros(50);
        while shared.live_fibers() > 0 {
            for task in shared.registry.snapshot() {
                if task.header.state.cancel() {
                    // SAFETY: our `cancel` moved the task out of PARKED; we hold a reference.
                    shared.schedule_remote(unsafe { crate::sched::take_parked_ref(&task) });
                }
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        shared.stop.store(true, SeqCst);
        for i in 0..shared.workers.len() {
            shared.wake_worker(i);
        }
        shared.reactor.wake();
        shared.monitor_parker.unpark();
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        loop {
            let handles: Vec<_> = std::mem::take(&mut *shared.threads.lock());
            if handles.is_empty() {
                break;
            }
            for h in handles {
                let _ = h.join();
            }
        }
        // Break the task -> runtime reference cycles held by queues and timers.
        shared.timers.clear();
        while !shared.injector.steal().is_empty() {}
        // No worker thread runs any more: the task objects still alive (held by the user's
        // handles) take over their hold on `Shared` from this `Runtime`.
        RuntimeHolds::merge(shared);
    }
}

impl Shared {
    /// True once the runtime is being dropped and every fiber has finished.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Worker slots in use (workers plus running spares).
    pub(crate) fn active_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.status.load(Relaxed) == SLOT_RUNNING)
            .count()
            .max(1)
    }
}

static DEFAULT: OnceLock<Runtime> = OnceLock::new();

/// The runtime `spawn` uses outside any runtime, started on first use.
pub(crate) fn default_runtime() -> &'static Runtime {
    DEFAULT.get_or_init(|| {
        Runtime::builder()
            .name("filament-default")
            .build()
            .unwrap_or_else(|e| panic!("filament: cannot start the default runtime: {e}"))
    })
}

/// Runs `f` on a new runtime with the default settings and returns its result; the runtime is
/// shut down before `run` returns.
///
/// # Panics
/// If the runtime cannot start (no threads, no epoll), or if `f` panics.
#[track_caller]
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let rt = Runtime::new().unwrap_or_else(|e| panic!("filament: cannot start a runtime: {e}"));
    rt.block_on(f)
}
