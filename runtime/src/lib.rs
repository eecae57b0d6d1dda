//! filament-runtime: everything in filament that owns a thread or a stack.
//!
//! * [`arch`] — the context switch (the only assembly in the project).
//! * [`stack`] — stack arenas, guard pages, per-thread stack pools, overflow reports.
//! * [`fiber`] — fibers: the low-level [`fiber::RawFiber`], and the scheduled fibers users
//!   spawn, join, cancel and scope.
//! * `sched` — the work-stealing M:N scheduler (private; its protocol is documented there).
//! * [`reactor`] — the mio reactor that parks fibers on socket readiness.
//! * [`native`](mod@native) — running a closure on the worker's own stack; blocking hand-off.
//! * [`park`] — the park/unpark API that `filament-sync` and `filament-net` build on.
//! * [`loom`] — the std/loom shim every atomic and cell comes through.
#![warn(missing_docs)]
// Under loom only the modelled state machines are compiled; their non-loom users are not.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(not(loom))]
pub mod arch;
#[cfg(not(loom))]
pub mod dump;
#[cfg(not(loom))]
pub mod fiber;
pub mod loom;
#[cfg(not(loom))]
mod metrics;
#[cfg(not(loom))]
pub mod native;
pub mod park;
pub mod reactor;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
pub(crate) mod sched;
#[cfg(loom)]
pub(crate) mod sched {
    //! Under loom only the scheduler's pure state machines are compiled and model-checked.
    pub(crate) mod first_run;
    pub(crate) mod idle;
    pub(crate) mod join_state;
    pub(crate) mod runtime_hold;
    pub(crate) mod state;
    pub(crate) mod wait_slot;
}
#[cfg(not(loom))]
mod spin_lock;
#[cfg(not(loom))]
pub mod stack;
#[cfg(not(loom))]
mod time;

#[cfg(not(loom))]
pub use crate::fiber::{
    current, scope, sleep, sleep_until, spawn, try_current, yield_now, Builder, Fiber, FiberId,
    JoinHandle, Scope, ScopedJoinHandle,
};
#[cfg(not(loom))]
pub use crate::metrics::Metrics;
#[cfg(not(loom))]
pub use crate::native::{blocking, native};
#[cfg(not(loom))]
pub use crate::runtime::{run, Runtime, RuntimeBuilder, MAX_WORKERS};
#[cfg(not(loom))]
pub use crate::sched::Cancelled;
