//! Architecture tests: the context switch, fiber results and panics, unwinding on drop,
//! backtraces across the switch, native-stack calls, and the overflow report.
//!
//! `harness = false` and single-threaded on purpose: this target also runs on aarch64 under
//! qemu-user (`../shared/ci/aarch64.sh -p filament-runtime --test arch`), where a second thread
//! hangs the emulator.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::rc::Rc;

use filament_runtime::fiber::{self, RawFiber, Resumed};
use filament_runtime::native::native;
use filament_runtime::stack::{self, round_stack_size, MIN_STACK_SIZE};

fn stack_of(size: usize) -> stack::Stack {
    stack::acquire(round_stack_size(size).unwrap()).unwrap()
}

fn values_round_trip() {
    let mut f = RawFiber::new(stack_of(64 * 1024), || {
        let mut acc = 0u64;
        for i in 0..1000usize {
            fiber::suspend(i);
            acc += i as u64;
        }
        acc
    });
    for i in 0..1000usize {
        match f.resume() {
            Resumed::Suspended(v) => assert_eq!(v, i),
            Resumed::Finished(_) => panic!("finished early"),
        }
    }
    match f.resume() {
        Resumed::Finished(Ok(acc)) => assert_eq!(acc, 499_500),
        _ => panic!("expected the result"),
    }
    assert!(f.is_finished());
    stack::release(f.into_stack().ok().unwrap());
}

fn callee_saved_registers_survive() {
    // Floating point and integer state live across many switches in both directions.
    let mut f = RawFiber::new(stack_of(64 * 1024), || {
        let mut x = 1.5f64;
        let mut n = 7u64;
        for _ in 0..100 {
            fiber::suspend(0);
            x = black_box(x) * 1.000_001;
            n = black_box(n)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
        }
        (x, n)
    });
    let mut y = 2.5f64;
    let mut m = 3u64;
    let result = loop {
        y = black_box(y) + 1.0;
        m = black_box(m) ^ (m << 1);
        match f.resume() {
            Resumed::Suspended(_) => {}
            Resumed::Finished(r) => break r.unwrap(),
        }
    };
    let mut ex = 1.5f64;
    let mut en = 7u64;
    for _ in 0..100 {
        ex *= 1.000_001;
        en = en.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    assert_eq!(result, (ex, en));
    assert_eq!(y, 2.5 + 101.0);
    let _ = m;
}

fn panic_is_caught_at_the_root() {
    let mut f: RawFiber<()> = RawFiber::new(stack_of(64 * 1024), || {
        fiber::suspend(1);
        panic!("boom in a fiber");
    });
    assert!(matches!(f.resume(), Resumed::Suspended(1)));
    match f.resume() {
        Resumed::Finished(Err(payload)) => {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in a fiber"));
        }
        _ => panic!("expected the panic payload"),
    }
}

struct CountOnDrop(Rc<Cell<u32>>);
impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn drop_unwinds_a_suspended_fiber() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let mut f: RawFiber<()> = RawFiber::new(stack_of(64 * 1024), move || {
        let _outer = CountOnDrop(d.clone());
        let _inner = CountOnDrop(d);
        loop {
            fiber::suspend(0);
        }
    });
    assert!(matches!(f.resume(), Resumed::Suspended(0)));
    assert_eq!(drops.get(), 0);
    drop(f);
    assert_eq!(
        drops.get(),
        2,
        "both locals on the fiber stack were dropped"
    );
}

fn drop_of_unstarted_fiber_drops_the_closure() {
    let drops = Rc::new(Cell::new(0));
    let d = CountOnDrop(drops.clone());
    let f: RawFiber<()> = RawFiber::new(stack_of(64 * 1024), move || {
        let _d = d;
        unreachable!("never runs");
    });
    assert!(f.is_new());
    drop(f);
    assert_eq!(drops.get(), 1);
}

fn large_closure_is_boxed() {
    let big = [7u8; 64 * 1024];
    let mut f = RawFiber::new(stack_of(MIN_STACK_SIZE), move || {
        big.iter().map(|&b| b as u64).sum::<u64>()
    });
    match f.resume() {
        Resumed::Finished(Ok(sum)) => assert_eq!(sum, 7 * 64 * 1024),
        _ => panic!("expected the sum"),
    }
}

fn nested_fibers() {
    let mut outer = RawFiber::new(stack_of(64 * 1024), || {
        let mut inner = RawFiber::new(stack_of(64 * 1024), || {
            fiber::suspend(10);
            20
        });
        assert!(matches!(inner.resume(), Resumed::Suspended(10)));
        fiber::suspend(1);
        match inner.resume() {
            Resumed::Finished(Ok(v)) => v + 1,
            _ => panic!("inner did not finish"),
        }
    });
    assert!(matches!(outer.resume(), Resumed::Suspended(1)));
    assert!(matches!(outer.resume(), Resumed::Finished(Ok(21))));
}

/// Prefetch hints never fault, whatever the address, and leave a fiber resumable: new, suspended
/// and finished fibers alike. A smoke test: it fails only by a crash or by a fiber that no longer
/// resumes to the right place (a prefetch has no other observable effect).
fn prefetch_is_only_a_hint() {
    filament_runtime::arch::prefetch(std::ptr::null());
    filament_runtime::arch::prefetch(usize::MAX as *const u8);
    // A range running off the end of the address space wraps around to address 0.
    filament_runtime::arch::prefetch_range((usize::MAX - 64) as *const u8, 256);
    let mut f = RawFiber::new(stack_of(64 * 1024), || {
        fiber::suspend(1);
        2
    });
    f.prefetch_resume();
    assert!(matches!(f.resume(), Resumed::Suspended(1)));
    f.prefetch_resume();
    assert!(matches!(f.resume(), Resumed::Finished(Ok(2))));
    f.prefetch_resume();
}

#[inline(never)]
fn distinctive_resumer_for_backtrace(f: &mut RawFiber<String>) -> String {
    match black_box(f).resume() {
        Resumed::Finished(Ok(s)) => s,
        _ => panic!("expected a backtrace"),
    }
}

fn backtrace_crosses_the_switch() {
    let mut f = RawFiber::new(stack_of(256 * 1024), || {
        Backtrace::force_capture().to_string()
    });
    let trace = distinctive_resumer_for_backtrace(&mut f);
    assert!(
        trace.contains("distinctive_resumer_for_backtrace"),
        "the backtrace taken in the fiber does not reach its resumer:\n{trace}"
    );
    assert!(
        trace.contains("backtrace_crosses_the_switch"),
        "the backtrace stops at the resumer:\n{trace}"
    );
}

#[inline(never)]
fn needs_two_mib_of_stack() -> u64 {
    let mut buf = [0u8; 2 * 1024 * 1024];
    for (i, b) in buf.iter_mut().enumerate().step_by(4096) {
        *b = (i / 4096) as u8;
    }
    black_box(&mut buf).iter().map(|&b| b as u64).sum()
}

fn native_runs_on_the_thread_stack() {
    let mut f = RawFiber::new(stack_of(32 * 1024), || {
        assert!(fiber::in_fiber_stack());
        let inside = native(|| {
            assert!(!fiber::in_fiber_stack());
            // A nested native call is a plain call.
            native(needs_two_mib_of_stack)
        });
        assert!(fiber::in_fiber_stack());
        inside
    });
    let expected: u64 = (0..512u64).map(|i| i % 256).sum();
    match f.resume() {
        Resumed::Finished(Ok(v)) => assert_eq!(v, expected),
        _ => panic!("native call failed"),
    }
    // Outside a fiber it is a plain call.
    assert_eq!(native(|| 5), 5);
}

fn native_panic_reaches_the_fiber() {
    let mut f = RawFiber::new(stack_of(64 * 1024), || {
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            native(|| panic!("native boom"));
        }));
        let payload = caught.expect_err("the panic came back");
        payload.downcast_ref::<&str>().copied() == Some("native boom")
    });
    assert!(matches!(f.resume(), Resumed::Finished(Ok(true))));
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse_forever(depth: u64) -> u64 {
    let pad = [depth; 64];
    black_box(&pad);
    recurse_forever(depth + 1) + black_box(pad[3])
}

fn overflow_child() -> ! {
    stack::overflow::install_handler();
    stack::overflow::ensure_altstack();
    let mut f: RawFiber<u64> = RawFiber::with_name(
        stack_of(MIN_STACK_SIZE),
        Some("deep-recursion".into()),
        || recurse_forever(0),
    );
    let _ = f.resume();
    unreachable!("the overflow must abort the process");
}

fn overflow_is_reported() {
    let exe = std::env::current_exe().unwrap();
    // Under qemu-user (../shared/ci/aarch64.sh) a guest cannot exec a guest binary directly (no
    // binfmt_misc here): run the child through the same runner cargo used for us.
    let runner = std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").ok();
    let mut command = match runner.as_deref().filter(|_| cfg!(target_arch = "aarch64")) {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().expect("a runner command"));
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = match command.env("FILAMENT_ARCH_CHILD", "overflow").output() {
        Ok(out) => out,
        Err(e) => {
            // Under qemu-user without binfmt the child cannot be exec'd.
            println!("  (skipped: cannot re-run the test binary: {e})");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "fiber 'deep-recursion' has overflowed its stack ({} bytes)",
        round_stack_size(MIN_STACK_SIZE).unwrap()
    );
    assert!(
        stderr.contains(&expected),
        "status: {:?}, stderr was: {stderr}",
        out.status
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "status: {:?}",
        out.status
    );
}

fn main() {
    if let Ok(which) = std::env::var("FILAMENT_ARCH_CHILD") {
        match which.as_str() {
            "overflow" => overflow_child(),
            other => panic!("unknown child {other}"),
        }
    }
    let tests: &[(&str, fn())] = &[
        ("values_round_trip", values_round_trip),
        (
            "callee_saved_registers_survive",
            callee_saved_registers_survive,
        ),
        ("panic_is_caught_at_the_root", panic_is_caught_at_the_root),
        (
            "drop_unwinds_a_suspended_fiber",
            drop_unwinds_a_suspended_fiber,
        ),
        (
            "drop_of_unstarted_fiber_drops_the_closure",
            drop_of_unstarted_fiber_drops_the_closure,
        ),
        ("large_closure_is_boxed", large_closure_is_boxed),
        ("nested_fibers", nested_fibers),
        ("prefetch_is_only_a_hint", prefetch_is_only_a_hint),
        ("backtrace_crosses_the_switch", backtrace_crosses_the_switch),
        (
            "native_runs_on_the_thread_stack",
            native_runs_on_the_thread_stack,
        ),
        (
            "native_panic_reaches_the_fiber",
            native_panic_reaches_the_fiber,
        ),
        ("overflow_is_reported", overflow_is_reported),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match panic::catch_unwind(*test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("test {name} ... FAILED: {msg}");
                failed += 1;
            }
        }
    }
    panic::set_hook(default_hook);
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
