//! Tests of the stack allocator's public API. Tests that need a process of their own (exact
//! counters, a fault) re-run this test binary on one test with an environment variable, as
//! std's death tests do.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use super::*;

/// Set in a child process to the scenario it must run.
const CHILD_ENV: &str = "FILAMENT_STACK_TEST_CHILD";

/// The scenario this process must run, when it is a child.
pub(super) fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Re-runs this test binary on the single test `test` (its full path) with scenario `mode`.
pub(super) fn run_child(test: &str, mode: &str) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .expect("the test binary can be re-run")
}

/// Describes a child's exit for assertion messages.
pub(super) fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn page() -> usize {
    guard::page_size()
}

fn assert_invalid(requested: usize, words: &str) {
    let err = round_stack_size(requested).expect_err("out of range");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains(words), "{requested}: {msg}");
    assert!(msg.contains(&requested.to_string()), "{requested}: {msg}");
}

#[test]
fn rounding_and_its_errors() {
    assert_invalid(0, "below the minimum of 16384 bytes");
    assert_invalid(1, "below the minimum");
    assert_invalid(MIN_STACK_SIZE - 1, "below the minimum");
    assert_invalid(MAX_STACK_SIZE + 1, "above the maximum of 1073741824 bytes");
    assert_invalid(usize::MAX, "above the maximum");
    let min = round_stack_size(MIN_STACK_SIZE).unwrap();
    assert!(min >= MIN_STACK_SIZE && min & (page() - 1) == 0 && min - MIN_STACK_SIZE < page());
    assert_eq!(round_stack_size(min + 1).unwrap(), min + page());
    assert_eq!(
        round_stack_size(DEFAULT_STACK_SIZE).unwrap(),
        DEFAULT_STACK_SIZE
    );
    assert_eq!(round_stack_size(MAX_STACK_SIZE).unwrap(), MAX_STACK_SIZE);
    assert_eq!(
        round_stack_size(MAX_STACK_SIZE - 1).unwrap(),
        MAX_STACK_SIZE
    );
}

#[test]
fn stack_is_send() {
    fn send<T: Send>(_: &T) {}
    let stack = acquire(round_stack_size(MIN_STACK_SIZE).unwrap()).unwrap();
    send(&stack);
    release(stack);
}

#[test]
fn unrounded_sizes_are_refused() {
    for size in [0, 1, MIN_STACK_SIZE + 1, MAX_STACK_SIZE + page()] {
        let err = acquire(size).expect_err("not rounded");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{size}");
        assert!(err.to_string().contains("round_stack_size"), "{err}");
    }
}

#[test]
fn geometry() {
    let size = round_stack_size(40 * 1024).unwrap();
    let stack = acquire(size).unwrap();
    assert_eq!(stack.size(), size);
    assert_eq!(stack.top() - stack.bottom(), size);
    assert_eq!(stack.top() % 16, 0);
    assert_eq!(stack.guard(), (stack.bottom() - page(), stack.bottom()));
    // Both ends are writable.
    // SAFETY: we own the stack; both words lie inside it.
    unsafe {
        ((stack.top() - 8) as *mut u64).write(1);
        (stack.bottom() as *mut u64).write(2);
    }
    release(stack);
}

#[test]
fn stacks_do_not_overlap() {
    let size = round_stack_size(20 * 1024).unwrap();
    let mut stacks: Vec<Stack> = (0..300).map(|_| acquire(size).unwrap()).collect();
    stacks.sort_by_key(|s| s.bottom());
    for pair in stacks.windows(2) {
        assert!(pair[0].top() <= pair[1].guard().0, "{:?}", pair);
    }
    stacks.into_iter().for_each(release);
}

#[test]
fn release_then_acquire_reuses_from_the_thread_pool() {
    let size = round_stack_size(24 * 1024).unwrap();
    let first = acquire(size).unwrap();
    let bottom = first.bottom();
    let pooled = pool::pooled_here(size);
    release(first);
    assert_eq!(pool::pooled_here(size), pooled + 1);
    let again = acquire(size).unwrap();
    assert_eq!(again.bottom(), bottom, "LIFO reuse from this thread's pool");
    assert_eq!(pool::pooled_here(size), pooled);
    release(again);
}

#[test]
fn the_thread_pool_is_bounded() {
    let size = round_stack_size(28 * 1024).unwrap();
    let stacks: Vec<Stack> = (0..3 * pool::POOL_CAP)
        .map(|_| acquire(size).unwrap())
        .collect();
    stacks.into_iter().for_each(release);
    let here = pool::pooled_here(size);
    assert!(here <= pool::POOL_CAP, "{here}");
    assert!(here >= pool::POOL_CAP / 2, "{here}");
}

#[test]
fn stacks_move_between_threads() {
    let size = round_stack_size(32 * 1024).unwrap();
    // Acquired here, released on a thread that then exits: its pool goes to the global list.
    let stacks: Vec<Stack> = (0..10).map(|_| acquire(size).unwrap()).collect();
    let mut bottoms: Vec<usize> = stacks.iter().map(Stack::bottom).collect();
    std::thread::spawn(move || {
        stacks.into_iter().for_each(release);
        assert_eq!(pool::pooled_here(size), 10);
    })
    .join()
    .unwrap();
    let mut again: Vec<usize> = (0..10).map(|_| acquire(size).unwrap().bottom()).collect();
    // (Those stacks were dropped right away: back to the global list, not leaked.)
    bottoms.sort_unstable();
    again.sort_unstable();
    assert_eq!(again, bottoms, "the exited thread's pool came back");
}

#[test]
fn guard_page_faults() {
    let out = run_child("stack::tests::child", "touch_guard");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{}",
        describe(&out)
    );
}

#[test]
fn stats_move_as_expected() {
    let out = run_child("stack::tests::child", "stats");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn mprotect_fallback_reports_the_map_count() {
    let out = run_child("stack::tests::child", "fallback");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn mmap_failure_is_explained() {
    let out = run_child("stack::tests::child", "rlimit");
    assert!(out.status.success(), "{}", describe(&out));
}

/// Scenarios run in a child process (see [`run_child`]); a no-op in the normal run.
#[test]
fn child() {
    match child_mode().as_deref() {
        None => {}
        Some("touch_guard") => {
            let stack = acquire(round_stack_size(MIN_STACK_SIZE).unwrap()).unwrap();
            let (lo, hi) = stack.guard();
            // SAFETY: none: this must fault, killing the child with SIGSEGV.
            unsafe { ((lo + (hi - lo) / 2) as *mut u8).write_volatile(1) };
            unreachable!("the guard page did not fault");
        }
        Some("stats") => child_stats(),
        Some("fallback") => child_fallback(),
        Some("rlimit") => child_rlimit(),
        Some(other) => panic!("unknown child scenario {other}"),
    }
}

fn child_stats() {
    let s0 = stats();
    assert_eq!(s0, StackStats::default(), "a fresh process has no stacks");
    let size = round_stack_size(MIN_STACK_SIZE).unwrap();
    let a = acquire(size).unwrap();
    let b = acquire(size).unwrap();
    let c = acquire(size).unwrap();
    let s = stats();
    assert_eq!((s.in_use, s.pooled, s.arenas), (3, 0, 1), "{s:?}");
    assert!(s.reserved_bytes >= 3 * (size + page()), "{s:?}");
    release(a);
    let s = stats();
    assert_eq!((s.in_use, s.pooled), (2, 1), "{s:?}");
    drop(b); // not released: goes to the global free list
    let s = stats();
    assert_eq!((s.in_use, s.pooled), (1, 2), "{s:?}");
    // The pooled one is reused first; then the dropped one comes from the global list (with
    // up to REFILL - 1 more, none here), and only then a new slot is carved.
    let d = acquire(size).unwrap();
    let e = acquire(size).unwrap();
    let f = acquire(size).unwrap();
    let s = stats();
    assert_eq!((s.in_use, s.pooled, s.arenas), (4, 0, 1), "{s:?}");
    // Another size maps another arena.
    let big = acquire(DEFAULT_STACK_SIZE).unwrap();
    let s = stats();
    assert_eq!((s.in_use, s.arenas), (5, 2), "{s:?}");
    // Thread exit moves a pool to the global list: still pooled.
    std::thread::spawn(move || {
        release(big);
        release(c);
    })
    .join()
    .unwrap();
    let s = stats();
    assert_eq!((s.in_use, s.pooled), (3, 2), "{s:?}");
    [d, e, f].into_iter().for_each(release);
    let s = stats();
    assert_eq!((s.in_use, s.pooled, s.arenas), (0, 5, 2), "{s:?}");
}

fn child_rlimit() {
    // Leave 256 MiB of address space above what the process uses: a 1 GiB arena cannot fit.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let limit = (vm_kib * 1024 + (256 << 20)) as libc::rlim_t;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit only reads `rlimit`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
    let err = acquire(MAX_STACK_SIZE).expect_err("1 GiB cannot be mapped");
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot map a fiber stack arena: out of memory or vm.max_map_count ("),
        "{msg}"
    );
    // Smaller stacks still work under the limit.
    release(acquire(round_stack_size(MIN_STACK_SIZE).unwrap()).unwrap());
}

fn child_fallback() {
    guard::force_mprotect_fallback();
    let size = round_stack_size(MIN_STACK_SIZE).unwrap();
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut stacks = Vec::new();
    let err = loop {
        match acquire(size) {
            Ok(stack) => stacks.push(stack),
            Err(err) => break err,
        }
        assert!(
            stacks.len() <= limit,
            "mprotect guards should exhaust the map count"
        );
    };
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("vm.max_map_count ({limit}) reached")),
        "{msg}"
    );
    assert!(msg.contains("each guard page is an mprotect"), "{msg}");
    eprintln!("after {} stacks: {msg}", stacks.len());
    // The stacks made before the limit still work.
    let last = stacks.last().unwrap();
    // SAFETY: we own the stack.
    unsafe { ((last.top() - 8) as *mut u64).write(7) };
}

/// `cargo test --release -p filament-runtime -- --ignored --nocapture acquire_release_cost`
#[test]
#[ignore = "a measurement, not a test"]
fn acquire_release_cost() {
    for size in [MIN_STACK_SIZE, DEFAULT_STACK_SIZE] {
        let size = round_stack_size(size).unwrap();
        release(acquire(size).unwrap());
        let rounds = 20_000_000u32;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let stack = acquire(std::hint::black_box(size)).unwrap();
            release(std::hint::black_box(stack));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!("acquire + release of a {size}-byte stack: {ns:.2} ns");
    }
}
