//! The low-level fiber: a closure running on its own stack, resumed by the thread that owns it
//! and suspending back to it.
//!
//! ```text
//!        resume()                     suspend(v) / closure returns
//!  New ──────────▶ Running ──────────────────────────────▶ Suspended ──resume()──▶ Running
//!                     │ closure returned or panicked
//!                     ▼
//!                  Finished  (result handed to the resumer by pointer)
//! ```
//!
//! * **Creation** copies the closure into the top of the fiber's stack (no heap allocation for
//!   closures up to a quarter of the stack; larger ones are boxed) and writes the link area
//!   (see [`crate::arch`]). Nothing runs until the first [`RawFiber::resume`].
//! * **Results.** The closure runs under `catch_unwind` at the fiber's root; its result or panic
//!   payload lives in the root frame and travels to the resumer by pointer in the final switch.
//! * **Dropping** a suspended fiber resumes it once more with a cancellation request: the
//!   pending [`suspend`] unwinds with a private payload, so every destructor on the fiber's stack
//!   runs, and the root swallows the payload. A fiber that has not started drops its closure
//!   without running it. (With `panic = "abort"` a suspended fiber's frames are leaked instead.)
//! * **Who is running.** While a fiber runs, the thread's *running record*
//!   ([`crate::stack::overflow`]) points at the fiber's `FiberRecord` (its link-area base,
//!   guard page, size and name): [`suspend`] finds its link area there, `native` finds the
//!   worker's stack there, and the SIGSEGV handler recognises an overflow with it. `resume`
//!   saves the previous record and restores it when the fiber suspends, so fibers may nest.
//!   Fiber-side readers of the record go through `#[inline(never)]` accessors, so no
//!   thread-local address computed before a switch is reused after it (DESIGN.md decision 7).
//!
//! A `RawFiber` is not `Send`: once started, its stack may hold references to the thread's locals.
//! The scheduler moves started fibers between threads only under the contract of
//! `RuntimeBuilder::migrate_fibers`.

use std::any::Any;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::thread;

mod builder;
mod current;
mod join;
mod scope;

pub(crate) use self::builder::spawn_scoped_on;
pub use self::builder::{spawn, Builder};
pub use self::current::{current, sleep, sleep_until, try_current, yield_now, Fiber, FiberId};
pub use self::join::JoinHandle;
pub use self::scope::{scope, Scope, ScopedJoinHandle};

use crate::arch::{self, Switched, LINK_AREA};
use crate::stack::overflow::{running_record, set_running_record, FiberRecord};
use crate::stack::Stack;

/// Resume argument that asks a suspended fiber to unwind (it is being dropped).
const CANCEL: usize = usize::MAX;

/// Closures bigger than this fraction of the stack are boxed instead of copied onto it.
const MAX_INLINE_PAYLOAD_DIVISOR: usize = 4;

/// Unwind payload used to tear down a fiber that is dropped while suspended.
struct ForcedUnwind;

/// What [`RawFiber::resume`] reports.
#[derive(Debug)]
pub enum Resumed<T> {
    /// The fiber called [`suspend`] with this value.
    Suspended(usize),
    /// The fiber's closure returned, or panicked (the payload, as from `catch_unwind`).
    Finished(thread::Result<T>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Suspended,
    Finished,
}

/// A closure running on its own stack. See the module docs.
///
/// `repr(C)`, with what a resume reads (the saved stack pointer, the state and the record's
/// `stack_top`) in its first 32 bytes, so that a task header holding one keeps them on its hot
/// second line (`sched::task::Header`).
#[repr(C)]
pub struct RawFiber<T> {
    /// Saved stack pointer while `New` or `Suspended`.
    sp: usize,
    state: State,
    record: FiberRecord,
    stack: Option<Stack>,
    name: Option<Arc<str>>,
    /// Drops the closure payload of a fiber that never started.
    drop_payload: unsafe fn(*mut u8),
    _not_send: PhantomData<NotSendReturning<T>>,
}

/// Bytes at the start of a [`RawFiber`] that hold everything a resume reads.
pub(crate) const RAW_FIBER_HOT_BYTES: usize = 32;

// The hot fields stay within the first `RAW_FIBER_HOT_BYTES` (the `repr(C)` order above).
const _: () = {
    use std::mem::{offset_of, size_of};
    type F = RawFiber<()>;
    assert!(offset_of!(F, sp) + size_of::<usize>() <= RAW_FIBER_HOT_BYTES);
    assert!(offset_of!(F, state) + size_of::<State>() <= RAW_FIBER_HOT_BYTES);
    assert!(offset_of!(F, record) + size_of::<usize>() <= RAW_FIBER_HOT_BYTES);
    assert!(offset_of!(FiberRecord, stack_top) == 0);
};

/// Bytes above a suspended fiber's stack pointer that [`RawFiber::prefetch_resume`] fetches.
const RESUME_PREFETCH_BYTES: usize = 512;
/// Bytes below a suspended fiber's saved stack pointer that [`RawFiber::prefetch_park_frames`]
/// loads.
const PARK_PREFETCH_BYTES: usize = 512;

/// Marker: not `Send` (a raw pointer), covariant in the result type.
type NotSendReturning<T> = (*mut (), fn() -> T);

impl<T> RawFiber<T> {
    /// A fiber that will run `f` on `stack`.
    pub fn new<F>(stack: Stack, f: F) -> RawFiber<T>
    where
        F: FnOnce() -> T,
    {
        Self::with_name(stack, None, f)
    }

    /// A fiber with a name (shown in overflow reports).
    pub fn with_name<F>(stack: Stack, name: Option<Arc<str>>, f: F) -> RawFiber<T>
    where
        F: FnOnce() -> T,
    {
        let limit = stack.size() / MAX_INLINE_PAYLOAD_DIVISOR;
        if mem::size_of::<F>() + mem::align_of::<F>() > limit || mem::align_of::<F>() > 4096 {
            let boxed = Box::new(f);
            Self::build(stack, name, boxed)
        } else {
            Self::build(stack, name, f)
        }
    }

    fn build<F>(stack: Stack, name: Option<Arc<str>>, f: F) -> RawFiber<T>
    where
        F: FnOnce() -> T,
    {
        let align = mem::align_of::<F>().max(16);
        let base = (stack.top() - mem::size_of::<F>()) & !(align - 1);
        debug_assert!(base - LINK_AREA > stack.bottom());
        // SAFETY: [base, base + size_of F) lies inside the stack (the payload is at most a
        // quarter of it) and is suitably aligned; nothing else uses the fresh stack.
        unsafe { ptr::write(base as *mut F, f) };
        // SAFETY: `base` is 16-byte aligned with the link area below it inside our stack, which
        // the fiber owns until it is dropped.
        let sp = unsafe { arch::init_stack(base, entry::<F, T>, base as *mut u8) };
        let (guard_lo, guard_hi) = stack.guard();
        let (name_ptr, name_len) = match &name {
            Some(n) => (n.as_ptr(), n.len()),
            None => (ptr::null(), 0),
        };
        RawFiber {
            record: FiberRecord {
                stack_top: base,
                guard_lo,
                guard_hi,
                stack_size: stack.size(),
                name_ptr,
                name_len,
            },
            stack: Some(stack),
            sp,
            state: State::New,
            name,
            drop_payload: drop_payload::<F>,
            _not_send: PhantomData,
        }
    }

    /// Runs the fiber until it suspends or finishes.
    ///
    /// # Panics
    /// If the fiber has already finished.
    #[inline]
    pub fn resume(&mut self) -> Resumed<T> {
        assert!(self.state != State::Finished, "resumed a finished fiber");
        match self.switch_in(0) {
            Switched::Suspended { sp, value } => {
                self.sp = sp;
                self.state = State::Suspended;
                Resumed::Suspended(value)
            }
            Switched::Exited { value } => Resumed::Finished(self.take_result(value)),
        }
    }

    #[inline(always)]
    fn switch_in(&mut self, arg: usize) -> Switched {
        let previous = running_record();
        set_running_record(&self.record);
        // SAFETY: the fiber is New or Suspended (checked by the callers), so `record.stack_top`
        // and `sp` describe a resumable fiber whose stack we own; `&mut self` guarantees it is
        // not running elsewhere.
        let switched = unsafe { arch::resume(self.record.stack_top, self.sp, arg) };
        set_running_record(previous);
        switched
    }

    fn take_result(&mut self, value: usize) -> thread::Result<T> {
        self.state = State::Finished;
        self.sp = 0;
        // SAFETY: on exit the root frame passed the address of its `ManuallyDrop` result, which
        // stays valid (the stack is still ours) and is read exactly once, here.
        unsafe { ptr::read(value as *const thread::Result<T>) }
    }

    /// Starts loading into the cache what the next [`resume`](Self::resume) touches first: the
    /// saved registers and the top frames of a suspended fiber, and the stack's link area (the
    /// resume writes the parent link there). A hint only ([`arch::prefetch`]); it does nothing
    /// for a new or finished fiber.
    #[inline]
    pub fn prefetch_resume(&self) {
        if self.state != State::Suspended {
            return;
        }
        // The resume pops the return address at `sp`, then returns through the frames above
        // it: the park path of a fiber is a few hundred bytes deep.
        arch::prefetch_range(self.sp as *const u8, RESUME_PREFETCH_BYTES);
        arch::prefetch(self.record.stack_top.wrapping_sub(arch::PARENT_LINK) as *const u8);
    }

    /// Starts loading the stack just below a suspended fiber's saved stack pointer, where its
    /// next park writes its frames: a fiber woken from a park usually parks again soon (a sleep
    /// loop), and a store to a line not in the cache holds up the park's next locked instruction
    /// until the line arrives. Worth it only well ahead of the resume ([`arch::prefetch`]): right
    /// before it, the extra loads delay the ones [`prefetch_resume`](Self::prefetch_resume)
    /// started.
    #[inline]
    pub fn prefetch_park_frames(&self) {
        if self.state == State::Suspended {
            let sp = self.sp as *const u8;
            arch::prefetch_range(sp.wrapping_sub(PARK_PREFETCH_BYTES), PARK_PREFETCH_BYTES);
        }
    }

    /// True once the closure has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// True if the fiber has never been resumed.
    pub fn is_new(&self) -> bool {
        self.state == State::New
    }

    /// The name given at creation.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The stack the fiber runs on.
    pub fn stack(&self) -> &Stack {
        self.stack
            .as_ref()
            .expect("fiber has its stack until dropped")
    }

    /// Takes the stack back from a finished fiber (for reuse). Returns the fiber unchanged if it
    /// has not finished.
    pub fn into_stack(mut self) -> Result<Stack, Self> {
        if self.state != State::Finished {
            return Err(self);
        }
        Ok(self
            .stack
            .take()
            .expect("fiber has its stack until dropped"))
    }
}

impl<T> Drop for RawFiber<T> {
    fn drop(&mut self) {
        match self.state {
            State::Finished => {}
            State::New => {
                // SAFETY: the fiber never ran, so the closure payload written at `stack_top` in
                // `build` is still there and is dropped exactly once, here.
                unsafe { (self.drop_payload)(self.record.stack_top as *mut u8) };
                self.state = State::Finished;
            }
            State::Suspended => {
                if cfg!(panic = "abort") {
                    // Cannot unwind: the fiber's frames are abandoned (their destructors do not run).
                    self.state = State::Finished;
                    return;
                }
                // Unwind the fiber's stack; a fiber that catches the unwind and suspends again
                // gets the same request until it finishes.
                while self.state == State::Suspended {
                    match self.switch_in(CANCEL) {
                        Switched::Suspended { sp, .. } => self.sp = sp,
                        Switched::Exited { value } => drop(self.take_result(value)),
                    }
                }
            }
        }
    }
}

/// Drops the closure of a fiber that never started.
///
/// # Safety
/// `payload` must point at a valid `F` that is not used afterwards.
unsafe fn drop_payload<F>(payload: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::drop_in_place(payload as *mut F) }
}

/// The root of every fiber: runs the closure under `catch_unwind` and leaves through the final
/// switch with a pointer to the result.
///
/// # Safety
/// Called only by `fiber_start` on a stack prepared by `RawFiber::build`, with `obj` the payload
/// address (which is also the link-area base).
unsafe extern "C" fn entry<F, T>(_arg: usize, obj: *mut u8) -> !
where
    F: FnOnce() -> T,
{
    // SAFETY: `build` wrote an `F` at `obj` and the fiber is now started, so `Drop` will not
    // drop the payload again: it is read exactly once.
    let f = unsafe { ptr::read(obj as *mut F) };
    let result = ManuallyDrop::new(panic::catch_unwind(AssertUnwindSafe(f)));
    // SAFETY: we run on the fiber whose base is `obj`; `result` lives in this never-returning
    // frame, so the resumer can read it through the pointer before the stack is reused.
    unsafe { arch::exit(obj as usize, &*result as *const thread::Result<T> as usize) }
}

/// The record of the fiber running on this thread, read afresh on every call (never inlined, so
/// no thread-local address is carried across a switch).
#[inline(never)]
pub(crate) fn current_record() -> *const FiberRecord {
    running_record()
}

/// True when the caller runs on a fiber's stack (and not on a native stack via `native`).
pub fn in_fiber_stack() -> bool {
    !current_record().is_null()
}

/// Suspends the running fiber, handing `value` to its resumer; returns when it is resumed.
///
/// # Panics
/// When called outside a fiber. If the fiber is being dropped while suspended here, this unwinds
/// (do not catch that unwind and suspend again, or the drop must cancel again).
///
/// Inlined on purpose: the resumer's `call` and the switching `ret` pair up in the CPU's
/// return-stack predictor only if no other return sits between the switch and the fiber's next
/// suspend. An out-of-line `suspend` adds a call/return pair around the switch and costs two
/// mispredicted returns (~20 ns) per round trip.
#[inline]
pub fn suspend(value: usize) {
    let record = current_record();
    if record.is_null() {
        suspend_outside_fiber();
    }
    // SAFETY: a non-null running record belongs to the fiber running on this stack; its
    // `stack_top` is the link-area base whose parent link the current resume wrote.
    let arg = unsafe { arch::suspend((*record).stack_top, value) };
    if arg == CANCEL {
        forced_unwind();
    }
}

#[cold]
#[inline(never)]
fn suspend_outside_fiber() -> ! {
    panic!("filament::fiber::suspend called outside a fiber")
}

#[cold]
#[inline(never)]
fn forced_unwind() -> ! {
    panic::resume_unwind(Box::new(ForcedUnwind))
}

/// True if `payload` (from a fiber's `Finished(Err(..))`) is the private unwind used to tear
/// down a dropped fiber.
pub fn is_forced_unwind(payload: &(dyn Any + Send)) -> bool {
    payload.is::<ForcedUnwind>()
}

/// Records, for `Runtime::dump`, what the calling fiber is about to wait on and where; the
/// record is cleared when the returned guard drops. Does nothing outside a fiber.
pub fn waiting(what: &'static str, at: &'static std::panic::Location<'static>) -> WaitingGuard {
    match crate::sched::current_task_ptr() {
        // SAFETY: `task` is the running fiber's own task.
        Some(task) => unsafe { waiting_in(task, what, at) },
        None => WaitingGuard(None),
    }
}

/// [`waiting`] for a caller that knows the running fiber's task.
///
/// # Safety
///
/// `task` is the task of the fiber running this call.
pub(crate) unsafe fn waiting_in(
    task: crate::sched::TaskPtr,
    what: &'static str,
    at: &'static std::panic::Location<'static>,
) -> WaitingGuard {
    // SAFETY: the running fiber's task is alive while it runs (the worker running it holds a
    // reference), and `task` is it (caller's contract).
    let wait = unsafe { &task.as_ref().header.wait };
    wait.set(what, at);
    WaitingGuard(Some(ptr::NonNull::from(wait)))
}

/// Clears the wait record set by [`waiting`]. Not `Send`: it belongs to the fiber that made it.
pub struct WaitingGuard(Option<ptr::NonNull<crate::sched::wait_slot::WaitSlot>>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            // The slot is re-read from the guard, not from a thread-local: the fiber may have
            // moved to another worker since `waiting` (DESIGN.md decision 7).
            // SAFETY: the slot is in the running fiber's task, which outlives the fiber's
            // execution (the worker running it holds a reference, and the registry does from
            // the fiber's first suspension until it is done), and the guard lives on that
            // fiber's stack, so the task is alive here.
            unsafe { slot.as_ref() }.clear();
        }
    }
}
