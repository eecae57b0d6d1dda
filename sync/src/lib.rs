//! Blocking synchronisation for filament: `Mutex`, `RwLock`, `Condvar`, `Semaphore`, `Barrier`,
//! `WaitGroup` and channels with `select!`.
//!
//! Every primitive works from fibers (a blocked caller parks its fiber; the worker runs others)
//! and from plain OS threads (a blocked caller blocks its thread), mixed freely: the crate is
//! written only against [`filament_runtime::park`].
//!
//! # Shared design
//!
//! * Each primitive has an atomic fast path where one makes sense (one CAS to lock a free
//!   mutex) and an internal short lock ([`filament_runtime::loom::Mutex`]) protecting its waiter
//!   list. The internal lock is never held across a park.
//! * Blocked callers wait in intrusive lists whose nodes live on the blocked frame
//!   (`waiter.rs` module docs): blocking allocates nothing. A waker *claims* a
//!   waiter with one CAS, so wake-ups are never doubled, and a timeout or cancellation racing a
//!   wake is decided by that same CAS.
//! * Handoff where fairness matters: semaphore permits, rwlock turns, channel values and a
//!   starving mutex are passed directly to the waiter a waker claims.
//! * Cancellation: when a fiber is cancelled, `park` unwinds. Every wait keeps a drop guard that
//!   unlinks its node and gives back whatever a concurrent waker handed it (a lock, a permit, a
//!   wake-up), so nothing is lost or left stale.
//! * Nothing poisons (see [`Mutex`]).
//!
//! Under `RUSTFLAGS="--cfg loom"` all atomics, cells and locks come from loom (through
//! `filament_runtime::loom`) and the `tests/loom_*.rs` models check the protocols.
#![warn(missing_docs)]

mod barrier;
pub mod channel;
mod condvar;
mod mutex;
mod rwlock;
mod semaphore;
mod wait_group;
mod waiter;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use wait_group::WaitGroup;

/// True when built with `--cfg loom`; lets the doc examples skip themselves there (loom types
/// only work inside a `loom::model`).
#[doc(hidden)]
pub const __LOOM: bool = cfg!(loom);
