//! `Runtime::dump()`: every live fiber, its state, where it was spawned and what it waits on.
//!
//! What Go prints on SIGQUIT, as a value. The registry (`sched::registry`) already holds every
//! fiber that has suspended at least once, for shutdown; a dump takes a snapshot of it and reads,
//! per fiber:
//!
//! * the lifecycle bits of its state word (running / runnable / parked; one atomic load),
//! * `spawned_at`, the `#[track_caller]` location of the `spawn` call (immutable),
//! * the wait record: the blocking calls (`join`, `sleep`, `Mutex::lock`, channel `send`/`recv`,
//!   socket `read`/`write`/`accept`, ...) are `#[track_caller]` and, just before the fiber parks,
//!   store what they wait on and their caller's location under the fiber's small `wait` lock
//!   ([`crate::fiber::waiting`]); the record is cleared when the call returns. Only the slow
//!   path (the one that parks) writes it, so an uncontended lock or a ready socket pays nothing.
//!
//! A fiber still in its first run slice (it has not parked or yielded yet) is not registered: the
//! worker running it announces its id and spawn site (`sched::first_run`), and the dump
//! lists it as running, without its name (reading the name would need a reference to the fiber,
//! which the announcement does not take, to keep the spawn path free of locked instructions).
//!
//! The snapshot is not atomic across fibers: a fiber may change state while the dump reads the
//! next one. Reading never blocks a fiber for longer than one copy of its wait record.
//!
//! # On a signal
//!
//! [`RuntimeBuilder::dump_on_signal`](crate::RuntimeBuilder::dump_on_signal) installs a handler
//! for the given signal (once per signal per process). The handler only `write`s the signal
//! number to a pipe (async-signal-safe); a `filament-dump` thread reads the pipe and prints the
//! dump of every runtime that opted in to stderr. The process keeps running.

use std::fmt;
use std::io::{self, Write};
use std::panic::Location;
use std::sync::{Arc, OnceLock, Weak};

use crate::fiber::FiberId;
use crate::loom::{AtomicI32, Mutex, Ordering::SeqCst};
use crate::sched::state::Lifecycle;
use crate::sched::Shared;

/// What a fiber is doing at the moment of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiberState {
    /// On a worker thread right now.
    Running,
    /// In a run queue, waiting for a worker.
    Runnable,
    /// Blocked: waiting for a wake-up or a timer.
    Parked,
}

impl fmt::Display for FiberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FiberState::Running => "running",
            FiberState::Runnable => "runnable",
            FiberState::Parked => "parked",
        })
    }
}

/// One fiber in a [`Dump`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FiberInfo {
    /// The fiber's id.
    pub id: FiberId,
    /// Its name (`Builder::name`), if any. `None` also for a fiber in its first run slice (it
    /// has not parked or yielded yet; see the module docs).
    pub name: Option<String>,
    /// Running, runnable or parked.
    pub state: FiberState,
    /// Where it was spawned.
    pub spawned_at: &'static Location<'static>,
    /// For a fiber blocked in one of filament's calls: what it waits on (`"join"`,
    /// `"Mutex::lock"`, `"TcpStream::read"`, ...) and where that call is.
    pub waiting_on: Option<(&'static str, &'static Location<'static>)>,
}

/// Every started, live fiber of a runtime, sorted by id, and how many have not started yet.
/// `Display` prints one paragraph per started fiber.
///
/// ```
/// use filament_runtime::{dump::FiberState, Runtime};
///
/// let rt = Runtime::builder().workers(1).build().unwrap();
/// rt.block_on(|| {
///     let sleeper = filament_runtime::Builder::new()
///         .name("sleeper")
///         .spawn(|| filament_runtime::sleep(std::time::Duration::from_millis(200)))
///         .unwrap();
///     filament_runtime::sleep(std::time::Duration::from_millis(20));
///     let dump = rt.dump();
///     let info = dump.fibers.iter().find(|f| f.name.as_deref() == Some("sleeper")).unwrap();
///     assert_eq!(info.state, FiberState::Parked);
///     assert_eq!(info.waiting_on.unwrap().0, "sleep");
///     sleeper.join().unwrap();
/// });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Dump {
    /// The runtime's name.
    pub runtime: String,
    /// The live fibers that have started (a fiber is listed from its first run on).
    pub fibers: Vec<FiberInfo>,
    /// Live fibers that have not started yet (queued since their spawn). Counted, not listed:
    /// a spawn storm can queue millions, and listing them would need a lock on the spawn path.
    pub not_started: usize,
}

pub(crate) fn snapshot(shared: &Shared) -> Dump {
    let mut fibers: Vec<FiberInfo> = shared
        .registry
        .snapshot()
        .into_iter()
        .filter_map(|task| {
            let header = &task.header;
            let state = match header.state.lifecycle() {
                Lifecycle::Running if header.yielded.load(crate::loom::Ordering::Relaxed) => {
                    FiberState::Runnable
                }
                Lifecycle::Running => FiberState::Running,
                Lifecycle::Scheduled => FiberState::Runnable,
                Lifecycle::Parked => FiberState::Parked,
                Lifecycle::Done => return None,
            };
            Some(FiberInfo {
                id: FiberId::from_raw(header.id),
                name: header.name.as_deref().map(str::to_owned),
                state,
                spawned_at: header.spawned_at,
                waiting_on: header.wait.get(),
            })
        })
        .collect();
    // Fibers in their first slice are not registered yet: their workers announce them. One that
    // registers while we look may be in both lists.
    fibers.extend(shared.workers.iter().filter_map(|w| {
        w.first_run.read().map(|(id, spawned_at)| FiberInfo {
            id: FiberId::from_raw(id),
            name: None,
            state: FiberState::Running,
            spawned_at,
            waiting_on: None,
        })
    }));
    fibers.sort_by_key(|f| f.id);
    fibers.dedup_by_key(|f| f.id);
    // Approximate: fibers start and end while we look.
    let not_started = (shared.live_fibers() as usize).saturating_sub(fibers.len());
    Dump {
        runtime: shared.config.name.to_string(),
        fibers,
        not_started,
    }
}

impl Dump {
    /// Number of fibers in each state: (running, runnable, parked).
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |s| self.fibers.iter().filter(|f| f.state == s).count();
        (
            count(FiberState::Running),
            count(FiberState::Runnable),
            count(FiberState::Parked),
        )
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (running, runnable, parked) = self.counts();
        writeln!(
            f,
            "runtime '{}': {} fibers ({running} running, {runnable} runnable, {parked} parked), \
             {} not started yet",
            self.runtime,
            self.fibers.len(),
            self.not_started
        )?;
        for fiber in &self.fibers {
            write!(f, "\nfiber {}", fiber.id)?;
            if let Some(name) = &fiber.name {
                write!(f, " '{name}'")?;
            }
            writeln!(f, " [{}]", fiber.state)?;
            if let Some((what, at)) = fiber.waiting_on {
                writeln!(f, "    waiting on {what} at {at}")?;
            }
            writeln!(f, "    spawned at {}", fiber.spawned_at)?;
        }
        Ok(())
    }
}

/// Runtimes that asked for a dump on a signal.
static TARGETS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
/// The pipe the signal handler writes to: (read end, write end).
static PIPE: OnceLock<(libc::c_int, libc::c_int)> = OnceLock::new();
/// Signals whose handler is installed.
static SIGNALS: Mutex<Vec<libc::c_int>> = Mutex::new(Vec::new());

/// Validates `signal` for `dump_on_signal`: a catchable signal number.
pub(crate) fn check_signal(signal: libc::c_int) -> io::Result<()> {
    let forbidden = [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS];
    if !(1..libc::SIGRTMAX()).contains(&signal) || forbidden.contains(&signal) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "dump_on_signal: {signal} is not a signal that can carry a dump \
                 (use e.g. SIGQUIT or SIGUSR1; SIGKILL, SIGSTOP, SIGSEGV and SIGBUS are not allowed)"
            ),
        ));
    }
    Ok(())
}

/// Registers `shared` to be dumped to stderr when `signal` arrives.
pub(crate) fn register_signal(shared: &Arc<Shared>, signal: libc::c_int) -> io::Result<()> {
    let &(_, write_end) = match PIPE.get() {
        Some(pipe) => pipe,
        None => {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // The read end must block in the dump thread; only writes (in the handler) must not.
            // SAFETY: fds[0] is the descriptor we just created.
            unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
            if PIPE.set((fds[0], fds[1])).is_err() {
                // Another thread won the race: close ours and use theirs.
                // SAFETY: both descriptors are ours and unused.
                unsafe {
                    libc::close(fds[0]);
                    libc::close(fds[1]);
                }
            } else {
                std::thread::Builder::new()
                    .name("filament-dump".into())
                    .spawn(move || dump_thread(fds[0]))?;
            }
            PIPE.get().expect("set above")
        }
    };
    HANDLER_FD.store(write_end, SeqCst);
    TARGETS.lock().push(Arc::downgrade(shared));
    let mut signals = SIGNALS.lock();
    if !signals.contains(&signal) {
        // SAFETY: a zeroed sigaction is a valid starting point; we set the handler, an empty
        // mask and SA_RESTART, and the handler only does async-signal-safe work (`write`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        signals.push(signal);
    }
    Ok(())
}

/// The pipe's write end, for the signal handler (which must not touch a lock or a `OnceLock`).
static HANDLER_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = HANDLER_FD.load(SeqCst);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: `write` is async-signal-safe; `byte` lives for the call. A full pipe (a
        // flood of signals) drops the byte: one dump per burst is enough. errno is preserved.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

fn dump_thread(read_end: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into `byte`, which lives across the call.
        let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return;
        }
        let live: Vec<Arc<Shared>> = {
            let mut targets = TARGETS.lock();
            targets.retain(|w| w.strong_count() > 0);
            targets.iter().filter_map(Weak::upgrade).collect()
        };
        let mut text = format!("filament: fiber dump on signal {byte}\n");
        for shared in &live {
            text.push_str(&snapshot(shared).to_string());
        }
        drop(live);
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}
