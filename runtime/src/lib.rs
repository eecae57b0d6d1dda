//! filament-runtime: everything in filament that owns a thread or a stack.
//!
//! * [`arch`] — the context switch (the only assembly in the project).
//! * [`stack`] — stack arenas, guard pages, per-thread stack pools, overflow reports.
//! * [`fiber`] — the low-level fiber: a closure running on its own stack, resumed and suspended.
//! * [`native`] — running a closure on the worker's own OS-thread stack.
//! * [`park`] — the park/unpark API that `filament-sync` and `filament-net` build on.
//! * [`loom`] — the std/loom shim every atomic and cell comes through.
#![warn(missing_docs)]

#[cfg(not(loom))]
pub mod arch;
#[cfg(not(loom))]
pub mod fiber;
pub mod loom;
#[cfg(not(loom))]
pub mod native;
pub mod park;
pub mod reactor;
#[cfg(not(loom))]
pub(crate) mod sched;
#[cfg(not(loom))]
pub mod stack;
