//! Fiber-core benchmarks (BENCHMARKS.md: switch, create, native).
//!
//! * `switch`: one resume + suspend round trip on one thread; corosensei, the fastest stackful
//!   coroutine library, runs in the same group as the reference.
//! * `create`: create a raw fiber on a pooled stack, run it to completion, give the stack back.
//! * `native`: an empty `filament::native` call from a fiber.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use filament::rt::fiber::{suspend, RawFiber, Resumed};
use filament::rt::stack::{self, round_stack_size};

fn switch(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch");
    group.bench_function("filament", |b| {
        let stack = stack::acquire(round_stack_size(64 * 1024).unwrap()).unwrap();
        let mut fiber = RawFiber::new(stack, || loop {
            suspend(0);
        });
        b.iter(|| match fiber.resume() {
            Resumed::Suspended(v) => black_box(v),
            Resumed::Finished(_) => unreachable!(),
        });
    });
    group.bench_function("corosensei", |b| {
        use corosensei::{Coroutine, CoroutineResult};
        let mut co: Coroutine<(), usize, ()> = Coroutine::new(|yielder, ()| loop {
            yielder.suspend(0);
        });
        b.iter(|| match co.resume(()) {
            CoroutineResult::Yield(v) => black_box(v),
            CoroutineResult::Return(()) => unreachable!(),
        });
    });
    group.finish();
}

fn create(c: &mut Criterion) {
    let mut group = c.benchmark_group("create");
    let size = round_stack_size(64 * 1024).unwrap();
    // Warm the thread's pool so the measured loop reuses a stack.
    stack::release(stack::acquire(size).unwrap());
    group.bench_function("filament", |b| {
        b.iter(|| {
            let stack = stack::acquire(size).unwrap();
            let mut fiber = RawFiber::new(stack, || black_box(7u64));
            let value = match fiber.resume() {
                Resumed::Finished(Ok(v)) => v,
                _ => unreachable!(),
            };
            if let Ok(stack) = fiber.into_stack() {
                stack::release(stack);
            }
            value
        });
    });
    group.finish();
}

fn native(c: &mut Criterion) {
    let mut group = c.benchmark_group("native");
    group.bench_function("filament", |b| {
        let stack = stack::acquire(round_stack_size(256 * 1024).unwrap()).unwrap();
        let mut fiber = RawFiber::new(stack, || {
            b.iter(|| filament::native(|| black_box(1u64)));
        });
        assert!(matches!(fiber.resume(), Resumed::Finished(Ok(()))));
    });
    group.finish();
}

criterion_group!(benches, switch, create, native);
criterion_main!(benches);
