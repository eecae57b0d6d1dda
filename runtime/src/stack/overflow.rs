//! The stack-overflow report (DESIGN.md decision 4).
//!
//! A fiber that runs off the bottom of its stack touches the guard page below it and gets a
//! SIGSEGV (SIGBUS on some systems). [`install_handler`] installs, once per process, a handler
//! for both that checks whether the fault address lies in the guard page of the fiber running
//! on the faulting thread; if so it writes
//!
//! ```text
//! fiber '<name>' has overflowed its stack (<size> bytes)
//! ```
//!
//! to stderr and aborts, like std's report for thread stacks. Any other fault is forwarded to
//! the handler that was installed before ours (std installs one at startup for thread-stack
//! overflows, so "thread '...' has overflowed its stack" keeps working), or, if that was the
//! default action or "ignore", the default action is restored and the handler returns, so the
//! faulting instruction runs again and the process dies the ordinary way.
//!
//! # The running record
//!
//! The handler learns which fiber runs on the thread from a thread-local *running record*
//! slot owned by this module: the fiber module calls `set_running_record` with the fiber's
//! `FiberRecord` on every resume and restores the previous value on suspend (a single TLS
//! store, inlined). The slot is a `const`-initialised `Cell` of a raw pointer with no
//! destructor, so reading it is a plain TLS load: safe in a signal handler. The record must
//! stay valid (not moved, not freed) while it is the running record; the fiber keeps it inside
//! itself, and it is only replaced on the thread that owns it, so the handler (which runs on
//! the faulting thread) always sees a live record or null.
//!
//! # The alternate signal stack
//!
//! A fiber that overflowed has no stack left to run a handler on, so the kernel must switch to
//! the thread's `sigaltstack` (the handler is installed with `SA_ONSTACK`). std gives one to
//! the threads it spawns and to the main thread when it installs its own handler; other threads
//! may have none: every worker calls [`ensure_altstack`], which installs one if needed and frees
//! it when the thread exits. Without one, an overflow still kills the process with SIGSEGV, only
//! without the report.
//!
//! # Async-signal safety
//!
//! The handler allocates nothing and takes no lock: it reads the TLS slot and the record,
//! formats the report into a buffer on its own (alternate) stack, writes it with `write(2)` and
//! calls `abort(3)`. The previous actions are saved before our handler is installed, published
//! with a release store that the handler reads with an acquire load.
//!
//! The handler is installed without `SA_NODEFER`: a fault inside it (which would mean a corrupt
//! record) then kills the process with the default action instead of recursing on the
//! alternate stack. Forwarded handlers therefore run with the faulting signal blocked and without
//! their own `sa_mask`, as under any chaining handler.
//!
//! Limits: only one guard page lies below each stack, so a fiber whose frame jumps more than a
//! page past its stack without touching the guard page (C code built without stack-clash
//! protection; Rust probes every page of large frames) lands in the stack below and is not
//! caught.

use std::cell::Cell;
use std::mem::{self, MaybeUninit};
use std::ptr;
use std::sync::Once;

pub use super::altstack::ensure_altstack;
use crate::loom::{AtomicBool, Ordering, UnsafeCell};

/// What the overflow handler needs to know about the fiber running on a thread.
///
/// Owned by the fiber; the running-record slot only points at it (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct FiberRecord {
    /// The fiber's link-area base (the top of the part of its stack the fiber uses).
    pub stack_top: usize,
    /// Start of the guard page below the fiber's stack.
    pub guard_lo: usize,
    /// End of the guard page (the stack's bottom).
    pub guard_hi: usize,
    /// The stack's size in bytes, as reported.
    pub stack_size: usize,
    /// The fiber's name (UTF-8, not NUL-terminated), valid while the record is running; may be
    /// null when `name_len` is 0.
    pub name_ptr: *const u8,
    /// Length of the name in bytes; 0 for an unnamed fiber.
    pub name_len: usize,
}

thread_local! {
    /// The record of the fiber running on this thread, null when none.
    static RUNNING: Cell<*const FiberRecord> = const { Cell::new(ptr::null()) };
}

/// Makes `record` the calling thread's running record (null: no fiber runs).
///
/// `record` must stay valid until it is replaced; the fiber module calls this on every resume
/// and suspend.
#[inline(always)]
pub(crate) fn set_running_record(record: *const FiberRecord) {
    RUNNING.set(record);
}

/// The calling thread's running record (null when no fiber runs on it).
#[inline(always)]
pub(crate) fn running_record() -> *const FiberRecord {
    RUNNING.get()
}

/// A signal's action before [`install_handler`], written once before our handler is installed.
struct PreviousAction {
    saved: AtomicBool,
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: `action` is written once, inside `install_handler`'s `Once`, before `saved` is set
// with release ordering; afterwards it is only read, after an acquire load of `saved`.
unsafe impl Sync for PreviousAction {}

impl PreviousAction {
    const fn new() -> Self {
        PreviousAction {
            saved: AtomicBool::new(false),
            action: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

static PREVIOUS_SEGV: PreviousAction = PreviousAction::new();
static PREVIOUS_BUS: PreviousAction = PreviousAction::new();

/// Process-wide, idempotent: installs the overflow handler for SIGSEGV and SIGBUS
/// (`SA_SIGINFO | SA_ONSTACK`), saving the previous actions to forward other faults to.
pub fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        for (signal, previous) in [
            (libc::SIGSEGV, &PREVIOUS_SEGV),
            (libc::SIGBUS, &PREVIOUS_BUS),
        ] {
            // SAFETY: we are inside the `Once`, the only writer of `previous`.
            unsafe { install(signal, previous) };
        }
    });
}

/// Saves `signal`'s current action in `previous` and installs [`on_fault`].
///
/// # Safety
/// Must run at most once per `previous`, before anything reads it (the `Once` guarantees it).
unsafe fn install(signal: libc::c_int, previous: &PreviousAction) {
    // SAFETY: sigaction is plain data; all-zero is a valid (default, empty-mask) value.
    let mut old: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: querying the action of a valid signal writes only `old`.
    if unsafe { libc::sigaction(signal, ptr::null(), &mut old) } != 0 {
        return;
    }
    // SAFETY: no reader exists before `saved` is set (the caller's contract).
    previous
        .action
        .with_mut(|slot| unsafe { (*slot).write(old) });
    previous.saved.store(true, Ordering::Release);

    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = on_fault as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `on_fault` has the SA_SIGINFO signature and is async-signal-safe; `action` is
    // fully initialised.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, ptr::null_mut());
    }
}

/// The SIGSEGV/SIGBUS handler (see the module docs).
///
/// # Safety
/// Only the kernel calls it, as an `SA_SIGINFO` handler of SIGSEGV or SIGBUS, with the
/// arguments it passes to such a handler.
unsafe extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let record = running_record();
    if !record.is_null() && !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo for SIGSEGV/SIGBUS, where si_addr is set.
        let addr = unsafe { (*info).si_addr() } as usize;
        // SAFETY: a non-null running record is valid while it is set on this thread (module
        // docs), and only this thread sets it.
        let record = unsafe { &*record };
        if record.guard_lo <= addr && addr < record.guard_hi {
            report_overflow(record);
            // SAFETY: abort is async-signal-safe.
            unsafe { libc::abort() };
        }
    }
    // SAFETY: we are in the handler for `signal`, with the kernel's `info` and `context`.
    unsafe { forward(signal, info, context) };
}

/// Hands a fault that is not a fiber overflow to the previous action.
///
/// # Safety
/// Only from [`on_fault`], with its arguments.
unsafe fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = match signal {
        libc::SIGSEGV => &PREVIOUS_SEGV,
        libc::SIGBUS => &PREVIOUS_BUS,
        _ => return restore_default(signal),
    };
    if !previous.saved.load(Ordering::Acquire) {
        return restore_default(signal);
    }
    // SAFETY: `saved` is set, so `action` was initialised and is never written again.
    let action = previous
        .action
        .with(|slot| unsafe { (*slot).assume_init_read() });
    let handler = action.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // An ignored fault would re-execute forever: treat it like the default (as the kernel
        // does for a synchronous fault whose signal is ignored).
        restore_default(signal);
    } else if action.sa_flags & libc::SA_SIGINFO != 0 {
        type Action = unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
        // SAFETY: an SA_SIGINFO action's sa_sigaction holds a function of this signature.
        let handler = unsafe { mem::transmute::<libc::sighandler_t, Action>(handler) };
        // SAFETY: we forward the kernel's own arguments, as the previous handler expects.
        unsafe { handler(signal, info, context) };
    } else {
        type Handler = unsafe extern "C" fn(libc::c_int);
        // SAFETY: a plain action's sa_handler (the same field) holds a function of this type.
        let handler = unsafe { mem::transmute::<libc::sighandler_t, Handler>(handler) };
        // SAFETY: as above.
        unsafe { handler(signal) };
    }
}

/// Restores the default action of `signal`; returning from the handler then re-executes the
/// fault, which kills the process the default way.
fn restore_default(signal: libc::c_int) {
    // SAFETY: all-zero is a valid sigaction; SIG_DFL with an empty mask is the default action,
    // and sigaction is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, ptr::null_mut());
    }
}

/// Writes `fiber '<name>' has overflowed its stack (<size> bytes)\n` to stderr, without
/// allocating or locking.
fn report_overflow(record: &FiberRecord) {
    let name: &[u8] = if record.name_len == 0 || record.name_ptr.is_null() {
        b"<unnamed>"
    } else {
        // SAFETY: the fiber keeps its name alive while its record is running (module docs).
        unsafe { std::slice::from_raw_parts(record.name_ptr, record.name_len) }
    };
    let mut digits = [0u8; 20];
    let mut out = SignalWriter {
        buf: [0; 512],
        len: 0,
    };
    out.push(b"fiber '");
    out.push(name);
    out.push(b"' has overflowed its stack (");
    out.push(format_decimal(record.stack_size, &mut digits));
    out.push(b" bytes)\n");
    out.flush();
}

/// `value` in decimal, written at the end of `buf`.
fn format_decimal(mut value: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

/// A buffer on the signal stack, written to fd 2 in as few `write`s as possible (one when the
/// whole report fits).
struct SignalWriter {
    buf: [u8; 512],
    len: usize,
}

impl SignalWriter {
    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.flush();
            if bytes.len() > self.buf.len() {
                write_stderr(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

/// `write(2, ..)` of all of `bytes`, retrying on EINTR and partial writes, giving up on errors.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer; write is async-signal-safe.
        let n = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

#[cfg(test)]
#[path = "overflow_tests.rs"]
mod tests;
