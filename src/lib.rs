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
//! See the README and DESIGN.md for the model (M:N scheduling, the migration contract of
//! [`RuntimeBuilder::migrate_fibers`], native-stack calls, the blocking hand-off).
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
