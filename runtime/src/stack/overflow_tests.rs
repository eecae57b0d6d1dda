//! Tests of the overflow report. Faults run in child processes (see `stack::tests::run_child`).
//! The real thing (a fiber recursing into its guard page) is tested in `tests/arch.rs`.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;

use super::*;
use crate::stack::tests::{child_mode, describe, run_child};
use crate::stack::{acquire, round_stack_size, Stack, MIN_STACK_SIZE};

const CHILD: &str = "stack::overflow::tests::child";

fn record_for(stack: &Stack, name: &str) -> FiberRecord {
    let (guard_lo, guard_hi) = stack.guard();
    FiberRecord {
        stack_top: stack.top(),
        guard_lo,
        guard_hi,
        stack_size: stack.size(),
        name_ptr: if name.is_empty() {
            ptr::null()
        } else {
            name.as_ptr()
        },
        name_len: name.len(),
    }
}

fn stderr_of(mode: &str, signal: libc::c_int) -> String {
    let out = run_child(CHILD, mode);
    assert_eq!(out.status.signal(), Some(signal), "{}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn min_size() -> usize {
    round_stack_size(MIN_STACK_SIZE).unwrap()
}

#[test]
fn guard_hit_of_the_running_fiber_is_reported() {
    let stderr = stderr_of("named", libc::SIGABRT);
    let expected = format!(
        "fiber 'deep-recursion' has overflowed its stack ({} bytes)\n",
        min_size()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn unnamed_fibers_are_reported_as_unnamed() {
    let stderr = stderr_of("unnamed", libc::SIGABRT);
    let expected = format!(
        "fiber '<unnamed>' has overflowed its stack ({} bytes)\n",
        min_size()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn long_names_are_reported_whole() {
    let stderr = stderr_of("long_name", libc::SIGABRT);
    let name = "n".repeat(2000);
    let expected = format!(
        "fiber '{name}' has overflowed its stack ({} bytes)\n",
        min_size()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn other_faults_are_forwarded() {
    for mode in ["other_guard", "no_fiber"] {
        let stderr = stderr_of(mode, libc::SIGSEGV);
        assert!(!stderr.contains("overflowed"), "{mode}: {stderr}");
    }
}

#[test]
fn std_still_reports_thread_overflows() {
    let stderr = stderr_of("thread_overflow", libc::SIGABRT);
    // std's wording: "thread 'tiny' has overflowed its stack" (recent versions add the id).
    let line = stderr.lines().find(|l| l.starts_with("thread 'tiny'"));
    assert!(
        line.is_some_and(|l| l.ends_with("has overflowed its stack")),
        "{stderr}"
    );
}

#[test]
fn altstack_is_installed_once_and_freed() {
    let out = run_child(CHILD, "altstack");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn running_record_round_trips() {
    assert!(running_record().is_null());
    let stack = acquire(min_size()).unwrap();
    let record = record_for(&stack, "x");
    set_running_record(&record);
    assert_eq!(running_record(), &record as *const FiberRecord);
    std::thread::spawn(|| assert!(running_record().is_null()))
        .join()
        .unwrap();
    set_running_record(ptr::null());
    assert!(running_record().is_null());
}

#[test]
fn decimal_formatting() {
    let mut buf = [0u8; 20];
    assert_eq!(format_decimal(0, &mut buf), b"0");
    assert_eq!(format_decimal(16384, &mut buf), b"16384");
    assert_eq!(
        format_decimal(usize::MAX, &mut buf),
        usize::MAX.to_string().as_bytes()
    );
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = [depth; 64];
    black_box(&pad);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + black_box(pad[3])
}

/// Touches the middle of `stack`'s guard page.
fn touch_guard(stack: &Stack) -> ! {
    let (lo, hi) = stack.guard();
    // SAFETY: none: this must fault.
    unsafe { ((lo + (hi - lo) / 2) as *mut u8).write_volatile(1) };
    unreachable!("the guard page did not fault");
}

/// Makes a record for `name` the running one and hits its guard page.
fn hit_guard_of_running(name: &str) -> ! {
    install_handler();
    install_handler();
    ensure_altstack();
    let stack = acquire(min_size()).unwrap();
    let record = record_for(&stack, name);
    set_running_record(&record);
    touch_guard(&stack)
}

/// Scenarios run in a child process; a no-op in the normal run.
#[test]
fn child() {
    match child_mode().as_deref() {
        None => {}
        Some("named") => hit_guard_of_running("deep-recursion"),
        Some("unnamed") => hit_guard_of_running(""),
        Some("long_name") => hit_guard_of_running(&"n".repeat(2000)),
        Some("other_guard") => {
            install_handler();
            let running = acquire(min_size()).unwrap();
            let other = acquire(min_size()).unwrap();
            let record = record_for(&running, "running");
            set_running_record(&record);
            touch_guard(&other)
        }
        Some("no_fiber") => {
            install_handler();
            touch_guard(&acquire(min_size()).unwrap())
        }
        Some("thread_overflow") => {
            install_handler();
            std::thread::Builder::new()
                .name("tiny".into())
                .stack_size(64 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .unwrap();
            unreachable!("the thread must overflow");
        }
        Some("altstack") => child_altstack(),
        Some(other) => panic!("unknown child scenario {other}"),
    }
}

fn current_altstack() -> libc::stack_t {
    // SAFETY: stack_t is plain data; the query writes only `current`.
    unsafe {
        let mut current: libc::stack_t = mem::zeroed();
        assert_eq!(libc::sigaltstack(ptr::null(), &mut current), 0);
        current
    }
}

fn child_altstack() {
    let ours = std::thread::spawn(|| {
        // Take away the alternate stack std gave this thread, as a foreign thread has none.
        let disable = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: we are not on the alternate stack.
        assert_eq!(unsafe { libc::sigaltstack(&disable, ptr::null_mut()) }, 0);
        assert_ne!(current_altstack().ss_flags & libc::SS_DISABLE, 0);
        ensure_altstack();
        let installed = current_altstack();
        assert_eq!(installed.ss_flags & libc::SS_DISABLE, 0);
        assert!(
            installed.ss_size >= crate::stack::altstack::ALTSTACK_SIZE,
            "{}",
            installed.ss_size
        );
        ensure_altstack();
        assert_eq!(current_altstack().ss_sp, installed.ss_sp, "idempotent");
        installed.ss_sp as usize
    })
    .join()
    .unwrap();
    // The thread is gone and so is its alternate stack's mapping.
    let page = crate::stack::guard::page_size();
    let mut resident = 0u8;
    // SAFETY: mincore only inspects the address range; it fails with ENOMEM when unmapped.
    let rc = unsafe { libc::mincore(ours as *mut libc::c_void, page, &mut resident) };
    assert_eq!(rc, -1, "the alternate stack is still mapped");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOMEM)
    );
    // A std thread keeps std's own alternate stack.
    std::thread::spawn(|| {
        let before = current_altstack();
        ensure_altstack();
        assert_eq!(current_altstack().ss_sp, before.ss_sp);
    })
    .join()
    .unwrap();
}
