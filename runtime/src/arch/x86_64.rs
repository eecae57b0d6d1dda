//! x86_64 (System V) context switch.
//!
//! Saved by hand: `rsp` (in the parent link / returned to the resumer), `rbp` and `rbx` (LLVM
//! does not let inline assembly name them as clobbers: `rbp` may be the frame pointer, `rbx` is
//! reserved by LLVM), and the return address (pushed by `call` / `lea`+`push`). `r12`–`r15` are
//! declared clobbered, as is everything `clobber_abi("sysv64")` covers (all vector registers are
//! caller-saved in this ABI), so the compiler spills only what is live.
//!
//! Initial link area written by [`init_stack`]:
//!
//! ```text
//!   base -  8    entry function
//!   base - 16    parent link (written by resume)
//!   base - 24    obj (entry argument)
//!   base - 32    0 (padding: keeps the call in fiber_start 16-byte aligned)
//!   base - 40    &fiber_start                  <- initial sp; `pop` leaves sp = base - 32
//! ```
//!
//! A resumer's stack while its fiber runs (the parent link points at the return address):
//!
//! ```text
//!   link + 16    saved rbp
//!   link +  8    saved rbx
//!   link         return address (the `jmp 3f` right after `call 2f` in `resume`)
//! ```

use core::arch::{asm, global_asm};

use super::{EntryFn, Switched, PARENT_LINK};

// The bottom frame of every fiber. The CFI makes the caller's frame the resumer's:
//   CFA = *(rsp + 16) + 24      rsp + 16 is the parent-link slot (base - 16): while
//                               fiber_start's call is outstanding rsp == base - 32;
//                               the link points at the resumer's return address, and
//                               the resumer's own rsp (before its two pushes and the
//                               call) is link + 24.
//   return address = *(CFA - 24), rbx = *(CFA - 16), rbp = *(CFA - 8)
global_asm!(
    ".text",
    ".p2align 4",
    ".globl filament_fiber_start",
    ".hidden filament_fiber_start",
    ".type filament_fiber_start,@function",
    "filament_fiber_start:",
    ".cfi_startproc",
    // DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg7 (rsp) 16; DW_OP_deref; DW_OP_plus_uconst 24
    ".cfi_escape 0x0f, 0x05, 0x77, 0x10, 0x06, 0x23, 0x18",
    ".cfi_offset 16, -24", // return address column
    ".cfi_offset 3, -16",  // rbx
    ".cfi_offset 6, -8",   // rbp
    // rdx holds the value passed to the first resume: the entry's first argument.
    "mov rdi, rdx",
    // obj, written by init_stack at base - 24 == rsp + 8.
    "mov rsi, [rsp + 8]",
    // End frame-pointer chains here (rbp-walking profilers stop at the fiber's root).
    "xor ebp, ebp",
    // Call the entry function stored at base - 8 == rsp + 24; rsp is 16-byte aligned here.
    "call [rsp + 24]",
    // The entry function never returns (it leaves through `exit`).
    "ud2",
    ".cfi_endproc",
    ".size filament_fiber_start, . - filament_fiber_start",
);

extern "C" {
    fn filament_fiber_start();
}

pub(super) fn fiber_start_address() -> usize {
    filament_fiber_start as *const () as usize
}

/// Writes the initial link area of a fresh fiber stack and returns the stack pointer to give the
/// first [`resume`].
///
/// # Safety
/// `base` must be 16-byte aligned, with at least [`super::LINK_AREA`] writable bytes below it
/// that no one else uses, inside a stack that stays mapped until the fiber has exited or been
/// abandoned.
pub unsafe fn init_stack(base: usize, entry: EntryFn, obj: *mut u8) -> usize {
    debug_assert_eq!(base % 16, 0);
    let slot = |off: usize| (base - off) as *mut usize;
    // SAFETY: the caller guarantees the link-area bytes below `base` are ours and writable;
    // every offset is inside them and 8-byte aligned because `base` is 16-byte aligned.
    unsafe {
        slot(8).write(entry as usize);
        slot(PARENT_LINK).write(0);
        slot(24).write(obj as usize);
        slot(32).write(0);
        slot(40).write(fiber_start_address());
    }
    base - 40
}

/// Resumes the fiber whose link area is at `base` and whose saved stack pointer is `sp`, passing
/// it `arg` (the return value of its pending [`suspend`], or the entry's first argument). Returns
/// when the fiber suspends or exits.
///
/// # Safety
/// `base`/`sp` must describe a fiber that was initialised with [`init_stack`] or last suspended
/// with [`suspend`] and has not exited; the fiber must not be running anywhere else; its stack
/// must stay mapped.
#[inline(always)]
pub unsafe fn resume(base: usize, sp: usize, arg: usize) -> Switched {
    let new_sp: usize;
    let value: usize;
    // SAFETY: the caller guarantees `base`/`sp` describe a resumable fiber. The asm saves rbp and
    // rbx (which cannot be declared clobbered), and the return address via `call`; everything
    // else is declared clobbered. It returns here only through the fiber's `ret` in
    // suspend/exit, with rsp restored from the parent link.
    unsafe {
        asm!(
            "push rbp",              // save the frame pointer: not nameable as a clobber
            "push rbx",              // save rbx: reserved by LLVM, not nameable as a clobber
            "call 2f",               // push the return address (1 below), jump to the switch
            "jmp 3f",                // the fiber's `ret` lands here: skip the switch code
            "2:",
            "mov [rdi - 16], rsp",   // parent link := our rsp (points at the return address)
            "mov rsp, rsi",          // switch to the fiber's stack
            "pop rax",               // its resume address (or &fiber_start on the first run)
            "jmp rax",               // continue the fiber; rdx carries `arg`
            "3:",
            "pop rbx",               // back on our stack: restore rbx
            "pop rbp",               // and the frame pointer
            inout("rdi") base => _,
            inout("rsi") sp => new_sp,
            inout("rdx") arg => value,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    if new_sp == 0 {
        Switched::Exited { value }
    } else {
        Switched::Suspended { sp: new_sp, value }
    }
}

/// Suspends the running fiber (link area at `base`), handing `value` to its resumer. Returns the
/// `arg` of the [`resume`] that continues it.
///
/// # Safety
/// Must be called on the stack of the fiber whose link area is at `base`, while it runs (so the
/// parent link holds the live resumer's stack pointer).
#[inline(always)]
pub unsafe fn suspend(base: usize, value: usize) -> usize {
    let arg: usize;
    // SAFETY: the caller guarantees we run on the fiber whose parent link is current. The asm
    // saves rbp, rbx and a resume address on the fiber stack, hands the resulting rsp to the
    // resumer in rsi, and `ret`s to the resumer's return address (matching its `call`). It
    // continues at 2 only when a later `resume` jumps there with rsp at the saved resume
    // address popped.
    unsafe {
        asm!(
            "push rbp",              // save the frame pointer
            "push rbx",              // save rbx
            "lea rax, [rip + 2f]",   // our resume address...
            "push rax",              // ...on top, where resume's `pop rax; jmp rax` finds it
            "mov rsi, rsp",          // hand our stack pointer to the resumer
            "mov rsp, [rdi - 16]",   // switch to the resumer's stack (the parent link)
            "ret",                   // pop its return address: pairs with its `call`
            "2:",
            "pop rbx",               // resumed: restore rbx
            "pop rbp",               // and the frame pointer; rdx holds the resume's `arg`
            inout("rdi") base => _,
            out("rsi") _,
            inout("rdx") value => arg,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    arg
}

/// Leaves the running fiber for good, handing `value` to its resumer (whose `resume` reports
/// [`Switched::Exited`]). Nothing on the fiber stack is dropped: everything must have been
/// dropped or moved out before.
///
/// # Safety
/// As for [`suspend`]; the fiber must never be resumed again.
#[inline(always)]
pub unsafe fn exit(base: usize, value: usize) -> ! {
    // SAFETY: as in `suspend`, but without saving anything: the fiber's frames are abandoned.
    unsafe {
        asm!(
            "mov rsp, [rdi - 16]",   // switch to the resumer's stack
            "xor esi, esi",          // stack pointer 0 means "exited"
            "ret",                   // back into resume, after its `call`
            in("rdi") base,
            in("rdx") value,
            options(noreturn),
        );
    }
}

/// Calls `f(data)` with the stack pointer set to `stack_pointer` (another stack, e.g. the
/// worker's own), then switches back.
///
/// # Safety
/// `stack_pointer` must be 16-byte aligned and point just above enough free, mapped stack for
/// `f`, on memory nobody else uses while `f` runs. `f` must not unwind.
#[inline(always)]
pub unsafe fn call_on_stack(stack_pointer: usize, f: unsafe extern "C" fn(*mut u8), data: *mut u8) {
    // SAFETY: the caller guarantees the target stack is free and aligned; we save our rsp on it
    // and restore it after the call; all caller-saved registers are declared clobbered.
    unsafe {
        asm!(
            "mov rax, rsp",          // remember the current (fiber) stack pointer
            "mov rsp, rsi",          // switch to the other stack
            "push rax",              // keep the old rsp there
            "sub rsp, 8",            // re-align to 16 for the call
            "call rdx",              // f(data): rdi already holds `data`
            "add rsp, 8",            // undo the alignment padding
            "pop rsp",               // back to the fiber stack
            in("rsi") stack_pointer,
            in("rdx") f,
            in("rdi") data,
            clobber_abi("sysv64"),
        );
    }
}
