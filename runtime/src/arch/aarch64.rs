//! aarch64 (AAPCS64) context switch.
//!
//! Saved by hand: `sp` (in the parent link / returned to the resumer), `x29` (the frame
//! pointer) and `x19` (reserved by LLVM), neither of which inline assembly may name, and the
//! return address in `lr` (`x30`), stored on the stack because `ret` needs it back in `lr`.
//! `x20`–`x28` and `v8`–`v15` (whose low halves are callee-saved) are declared clobbered, as is
//! everything `clobber_abi("C")` covers, so the compiler spills only what is live. `x18` (the
//! platform register) is never touched.
//!
//! Initial link area written by [`init_stack`] (16-byte slots keep `sp` aligned):
//!
//! ```text
//!   base -  8    0
//!   base - 16    parent link (written by resume)
//!   base - 24    entry function
//!   base - 32    obj (entry argument)
//!   base - 40    0
//!   base - 48    &fiber_start                  <- initial sp; the pop leaves sp = base - 32
//! ```
//!
//! A resumer's stack while its fiber runs (the parent link points at the saved `lr`):
//!
//! ```text
//!   link + 24    saved x19
//!   link + 16    saved x29
//!   link         saved lr (the `b 3f` right after `bl 2f` in `resume`)
//! ```
//!
//! Pointer authentication and BTI are not enabled for Rust code on aarch64 Linux by default;
//! a build that enables BTI would need landing pads at the indirect-branch targets.

use core::arch::{asm, global_asm};

use super::{EntryFn, Switched, PARENT_LINK};

// The bottom frame of every fiber. CFI: CFA = *(sp + 16) + 32 (sp + 16 is the parent-link slot
// while fiber_start's call is outstanding, sp == base - 32); lr = *(CFA - 32),
// x29 = *(CFA - 16), x19 = *(CFA - 8): the resumer's frame exactly as `resume` left it.
global_asm!(
    ".text",
    ".p2align 4",
    ".globl filament_fiber_start",
    ".hidden filament_fiber_start",
    ".type filament_fiber_start,%function",
    "filament_fiber_start:",
    ".cfi_startproc",
    // DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg31 (sp) 16; DW_OP_deref; DW_OP_plus_uconst 32
    ".cfi_escape 0x0f, 0x05, 0x8f, 0x10, 0x06, 0x23, 0x20",
    ".cfi_offset 30, -32", // return address (lr)
    ".cfi_offset 29, -16", // frame pointer
    ".cfi_offset 19, -8",  // x19
    // x2 holds the value passed to the first resume: the entry's first argument.
    "mov x0, x2",
    // obj (base - 32 == sp) and the entry function (base - 24 == sp + 8).
    "ldp x1, x4, [sp]",
    // End frame-pointer chains here.
    "mov x29, xzr",
    // Call the entry; it never returns (it leaves through `exit`).
    "blr x4",
    "brk #1",
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
        slot(8).write(0);
        slot(PARENT_LINK).write(0);
        slot(24).write(entry as usize);
        slot(32).write(obj as usize);
        slot(40).write(0);
        slot(48).write(fiber_start_address());
    }
    base - 48
}

/// Resumes the fiber whose link area is at `base` and whose saved stack pointer is `sp`, passing
/// it `arg`. Returns when the fiber suspends or exits.
///
/// # Safety
/// `base`/`sp` must describe a fiber that was initialised with [`init_stack`] or last suspended
/// with [`suspend`] and has not exited; the fiber must not be running anywhere else; its stack
/// must stay mapped.
#[inline(always)]
pub unsafe fn resume(base: usize, sp: usize, arg: usize) -> Switched {
    let new_sp: usize;
    let value: usize;
    // SAFETY: the caller guarantees `base`/`sp` describe a resumable fiber. x29/x19 and lr are
    // saved on our stack; everything else is declared clobbered. We come back only through the
    // fiber's `ret` in suspend/exit, with sp restored from the parent link.
    unsafe {
        asm!(
            "stp x29, x19, [sp, #-16]!", // save the frame pointer and x19 (not nameable)
            "bl 2f",                     // lr := address of the next instruction; go switch
            "b 3f",                      // the fiber's `ret` lands here: skip the switch code
            "2:",
            "str x30, [sp, #-16]!",      // save lr for the fiber's `ret`
            "mov x3, sp",
            "str x3, [x0, #-16]",        // parent link := our sp (points at the saved lr)
            "mov sp, x1",                // switch to the fiber's stack
            "ldr x3, [sp], #16",         // pop its resume address (or &fiber_start)
            "br x3",                     // continue the fiber; x2 carries `arg`
            "3:",
            "ldp x29, x19, [sp], #16",   // back on our stack: restore x29 and x19
            inout("x0") base => _,
            inout("x1") sp => new_sp,
            inout("x2") arg => value,
            out("x3") _,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
            out("x25") _, out("x26") _, out("x27") _, out("x28") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            clobber_abi("C"),
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
/// Must be called on the stack of the fiber whose link area is at `base`, while it runs.
#[inline(always)]
pub unsafe fn suspend(base: usize, value: usize) -> usize {
    let arg: usize;
    // SAFETY: the caller guarantees we run on the fiber whose parent link is current. We save
    // x29/x19 and a resume address on the fiber stack, hand sp to the resumer in x1, reload the
    // resumer's lr and sp from the parent link and `ret` (pairing with its `bl`).
    unsafe {
        asm!(
            "stp x29, x19, [sp, #-16]!", // save the frame pointer and x19
            "adr x3, 2f",                // our resume address...
            "str x3, [sp, #-16]!",       // ...on top, where resume's pop finds it
            "mov x1, sp",                // hand our stack pointer to the resumer
            "ldr x3, [x0, #-16]",        // the parent link (resumer's sp)
            "ldr x30, [x3], #16",        // its saved lr, popped
            "mov sp, x3",                // switch to the resumer's stack
            "ret",                       // pairs with its `bl`
            "2:",
            "ldp x29, x19, [sp], #16",   // resumed: restore x29/x19; x2 holds `arg`
            inout("x0") base => _,
            out("x1") _,
            inout("x2") value => arg,
            out("x3") _,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
            out("x25") _, out("x26") _, out("x27") _, out("x28") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            clobber_abi("C"),
        );
    }
    arg
}

/// Leaves the running fiber for good, handing `value` to its resumer.
///
/// # Safety
/// As for [`suspend`]; the fiber must never be resumed again, and nothing left on its stack is
/// dropped.
#[inline(always)]
pub unsafe fn exit(base: usize, value: usize) -> ! {
    // SAFETY: as in `suspend`, without saving anything: the fiber's frames are abandoned.
    unsafe {
        asm!(
            "ldr x3, [x0, #-16]",        // the parent link
            "ldr x30, [x3], #16",        // the resumer's lr, popped
            "mov sp, x3",                // switch to its stack
            "mov x1, xzr",               // stack pointer 0 means "exited"
            "ret",
            in("x0") base,
            in("x2") value,
            options(noreturn),
        );
    }
}

/// Calls `f(data)` with the stack pointer set to `stack_pointer`, then switches back.
///
/// # Safety
/// `stack_pointer` must be 16-byte aligned and point just above enough free, mapped stack for
/// `f`, on memory nobody else uses while `f` runs. `f` must not unwind.
#[inline(always)]
pub unsafe fn call_on_stack(stack_pointer: usize, f: unsafe extern "C" fn(*mut u8), data: *mut u8) {
    // SAFETY: the caller guarantees the target stack is free and aligned; the old sp is kept on
    // it across the call and restored after; caller-saved registers are declared clobbered.
    unsafe {
        asm!(
            "mov x9, sp",                // remember the fiber stack pointer
            "mov sp, x1",                // switch to the other stack
            "str x9, [sp, #-16]!",       // keep the old sp there (16-byte slot)
            "blr x2",                    // f(data): x0 already holds `data`
            "ldr x9, [sp]",              // the old sp
            "mov sp, x9",                // back to the fiber stack
            in("x0") data,
            in("x1") stack_pointer,
            in("x2") f,
            clobber_abi("C"),
        );
    }
}
