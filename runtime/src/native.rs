//! Running a closure on the worker's own OS-thread stack (DESIGN.md decision 5).
//!
//! While a fiber runs, the thread that resumed it is stopped inside `arch::resume`, and its stack
//! below the parent link (the resumer's saved stack pointer) is unused. [`native`] switches the
//! stack pointer there, a little below the link, calls the closure, and switches back: no
//! scheduling, no thread hop, a few nanoseconds. Use it for C code that needs a big stack, for
//! code that must not run on a fiber stack, or for signal-safe code.
//!
//! Invariants:
//! * During the call the thread's running record is cleared, so the closure is "not in a fiber":
//!   a nested `native` is a plain call, blocking calls block the OS thread (the closure must not
//!   yield — the fiber's stack pointer lives on the native stack), and a stack overflow in the
//!   closure is reported by std's thread-stack handler, not as a fiber overflow.
//! * A panic in the closure is caught on the native stack, carried back, and resumed on the
//!   fiber's stack, so it unwinds the fiber's frames as if the closure had run there.

use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crate::arch;
use crate::fiber::current_record;
use crate::stack::overflow::set_running_record;

/// Bytes left untouched below the resumer's saved stack pointer.
const NATIVE_STACK_GAP: usize = 256;

/// Runs `f` on the current worker's native (OS thread) stack and returns its result. Outside a
/// fiber it simply calls `f`. `f` must not yield or park the fiber (it runs with no fiber).
///
/// ```
/// let n = filament_runtime::native::native(|| 40 + 2);
/// assert_eq!(n, 42);
/// ```
pub fn native<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    let record = current_record();
    if record.is_null() {
        return f();
    }
    struct Call<F, R> {
        f: Option<F>,
        result: Option<thread::Result<R>>,
    }
    /// # Safety
    /// `data` must point at a live `Call<F, R>` owned by the caller for the duration.
    unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut u8) {
        // SAFETY: `native` passes a pointer to its own `Call`, alive until we return.
        let call = unsafe { &mut *(data as *mut Call<F, R>) };
        if let Some(f) = call.f.take() {
            call.result = Some(panic::catch_unwind(AssertUnwindSafe(f)));
        }
    }
    let mut call = Call {
        f: Some(f),
        result: None,
    };
    // SAFETY: a non-null running record belongs to the fiber on this stack; its base holds the
    // parent link written by the resume that is in progress on this thread.
    let parent_sp = unsafe { arch::parent_stack_pointer((*record).stack_top) };
    let native_sp = (parent_sp - NATIVE_STACK_GAP) & !15;
    set_running_record(std::ptr::null());
    // SAFETY: the resumer is suspended inside `arch::resume` and uses nothing below its saved
    // stack pointer, so the native stack below `native_sp` is free and mapped (it is the OS
    // thread's own stack); the trampoline catches every unwind.
    unsafe {
        arch::call_on_stack(
            native_sp,
            trampoline::<F, R>,
            &mut call as *mut Call<F, R> as *mut u8,
        )
    };
    set_running_record(record);
    match call.result {
        Some(Ok(value)) => value,
        Some(Err(payload)) => panic::resume_unwind(payload),
        None => unreachable!("the native trampoline always stores a result"),
    }
}

/// Runs `f`, which may block its OS thread for a long time (a slow syscall, a blocking C
/// library), without stalling the other fibers: from a fiber, `f` runs on a thread of the
/// blocking pool while the calling fiber parks, so its worker keeps serving every other fiber
/// (including those bound to its thread). Outside a fiber it just calls `f`.
///
/// The calling fiber cannot be cancelled while `f` runs (`f` borrows its stack); a pending
/// cancellation takes effect at its next blocking point after `blocking` returns. A panic in
/// `f` is resumed in the calling fiber.
///
/// ```
/// let rt = filament_runtime::Runtime::builder().workers(1).build().unwrap();
/// let n = rt.block_on(|| filament_runtime::blocking(|| std::fs::read_dir(".").unwrap().count()));
/// assert!(n > 0);
/// ```
#[track_caller]
pub fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    use crate::loom::{AtomicBool, Ordering::Acquire};
    use crate::sched::blocking_pool::{Job, POOL};

    if !crate::sched::in_fiber() {
        return f();
    }
    let mut f = Some(f);
    let mut result: Option<thread::Result<R>> = None;
    let mut run = || {
        if let Some(f) = f.take() {
            result = Some(panic::catch_unwind(AssertUnwindSafe(f)));
        }
    };
    let run: &mut (dyn FnMut() + Send) = &mut run;
    // SAFETY: only the lifetime bound is erased; the job (and so the closure, which borrows this
    // frame) is used by the pool thread only until `done`, and this frame waits for `done` below
    // without unwinding (cancellation is shielded).
    let run: *mut (dyn FnMut() + Send + 'static) = unsafe { std::mem::transmute(run) };
    let job = Job {
        run,
        done: AtomicBool::new(false),
        waiter: crate::park::unparker(),
    };
    let _wait = crate::fiber::waiting("blocking", std::panic::Location::caller());
    let _shield = crate::sched::worker::CancelShield::new();
    // SAFETY: `job` lives in this frame, which does not return or unwind before `done`.
    unsafe { POOL.submit(&job) };
    while !job.done.load(Acquire) {
        crate::park::park();
    }
    match result {
        Some(Ok(value)) => value,
        Some(Err(payload)) => panic::resume_unwind(payload),
        None => unreachable!("the blocking pool ran the closure"),
    }
}
