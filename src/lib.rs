//! filament: M:N green threads for Rust.
//!
//! Stackful fibers run on a work-stealing pool of worker threads; blocking calls (`join`,
//! `sleep`, `Mutex::lock`, channel `recv`, `TcpStream::read`) park the fiber, not the thread, so
//! plain blocking code gets the throughput of an event loop.
//!
//! ```
//! let total: u64 = filament::run(|| {
//!     let handles: Vec<_> = (0..100u64).map(|i| filament::spawn(move || i * i)).collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum()
//! });
//! assert_eq!(total, 328_350);
//! ```
//!
//! # The model
//!
//! **M:N.** A [`Runtime`] owns N worker threads (default: the number of CPUs). Each runs many
//! fibers: [`spawn`] creates a fiber (a small heap object until it first runs), a worker gives it
//! a stack and runs it until it blocks, yields or returns. Idle workers steal unstarted fibers
//! from busy ones; one idle worker waits in the I/O reactor (epoll through mio) with the next
//! timer as its timeout, so sockets and sleeps wake fibers without a thread per wait.
//!
//! **Migration and its contract.** A fiber that has started stays on its worker: a reference to
//! a `thread_local!`, a `std::sync::MutexGuard` or an `Rc` held across a blocking call stays
//! valid, as on a `std::thread`. A runtime built with the `unsafe` [`RuntimeBuilder::migrate_fibers`]
//! lets started fibers move between workers at blocking points too; its `# Safety` section is the
//! promise you make in exchange (no thread-bound value held across a blocking call).
//!
//! **A fiber's stack.** Stacks are carved from big arenas (one `mmap` for many stacks), committed
//! only as the fiber touches them, with a guard page under each:
//!
//! ```text
//!   high addresses
//!   +--------------------------------+ <- stack top
//!   | link area: entry, parent link  |    the parent link points into the resuming worker's
//!   |                                |    stack: backtraces and unwinding walk through it
//!   | the fiber's frames             |
//!   |   ... grows downwards ...      |    (only touched pages use memory: ~4 KiB for a
//!   |                                |     parked fiber)
//!   +--------------------------------+ <- stack bottom (size: Builder::stack_size, >= 16 KiB)
//!   | guard page (no access)         |    a hit prints "fiber '<name>' has overflowed its
//!   +--------------------------------+    stack (<size> bytes)" and aborts
//!   low addresses
//! ```
//!
//! **Native stack.** [`native()`] runs a closure on the worker thread's own (large) stack and comes
//! back in a few nanoseconds: for C code that needs a big stack or must not run on a fiber stack.
//!
//! **Blocking hand-off.** [`blocking`] runs a closure that may block for long (a file system call,
//! a C library) on a pool thread while the calling fiber parks, so the worker keeps running its
//! other fibers; a monitor thread also starts a spare worker when one fiber hogs a worker for more
//! than 10 ms while others wait.
//!
//! **Seeing inside.** [`Runtime::metrics`] gives counters; [`Runtime::dump`] lists every fiber
//! with its state, its spawn site and, for a parked fiber, what it waits on and where;
//! [`RuntimeBuilder::dump_on_signal`] prints that on a signal, like Go's SIGQUIT.
#![warn(missing_docs)]

pub use filament_runtime::{
    blocking, current, native, run, scope, sleep, sleep_until, spawn, try_current, yield_now,
    Builder, Cancelled, Fiber, FiberId, JoinHandle, Metrics, Runtime, RuntimeBuilder, Scope,
    ScopedJoinHandle,
};

/// The fiber dump: [`Runtime::dump`] and its types.
pub use filament_runtime::dump;

/// Synchronisation primitives and channels that park fibers (and block plain threads).
pub mod sync {
    pub use filament_sync::*;
}

/// Sockets whose blocking calls park the calling fiber.
pub mod net {
    pub use filament_net::*;
}

/// Low-level pieces: the raw fiber, stacks, the context switch and the park/unpark API.
pub mod rt {
    pub use filament_runtime::{arch, fiber, park, stack};
}

/// The README's example, compiled as a doctest so that it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
