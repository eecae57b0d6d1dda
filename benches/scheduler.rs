//! Scheduler benchmarks (BENCHMARKS.md: spawn, skynet, yield, sleep), filament against tokio.
//!
//! Run with `cargo bench --bench scheduler` (one group: `cargo bench --bench scheduler -- yield`).
//!
//! Every group has a `filament` and a `tokio` function measured side by side. Each runtime is
//! built once per process (workers = number of cores for both: filament fibers on a
//! `filament::Runtime`, tokio tasks on a multi-thread `tokio::runtime::Runtime`), outside the
//! measured closures; every iteration runs the whole workload and checks its result.
//!
//! * `spawn`: spawn 1,000,000 fibers/tasks, each adds 1 to a shared atomic; wait for all
//!   (filament: a `WaitGroup`; tokio: a completion counter and a `Notify`). Throughput is
//!   1,000,000 elements, so criterion's time per iteration in ms is the cost in ns per fiber;
//!   each function also prints its median ns per fiber (over every timed run) to stderr.
//!   Right after filament's function, the process's peak RSS (`VmHWM` from `/proc/self/status`)
//!   is printed to stderr: it is a process-wide peak, which is why this group runs first.
//! * `skynet`: the root spawns 10 children, recursively, 6 levels; the 1,000,000 leaves return
//!   their number and inner fibers sum their children's results (join handles); the sum is
//!   checked against 499999500000. The figure is wall time per iteration.
//! * `yield`: 1,000 fibers x 1,000 `yield_now`. Throughput 1,000,000 elements: time per
//!   iteration in ms = ns per yield.
//! * `sleep`: 10,000 fibers x 10 sleeps of 1 ms. The figure is wall time (ideal ~10 ms); each
//!   function also prints the median and 90th percentile of its runs to stderr.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use filament::sync::WaitGroup;

const SPAWN_FIBERS: u64 = 1_000_000;
const SKYNET_SIZE: u64 = 1_000_000;
const SKYNET_SUM: u64 = 499_999_500_000;
const YIELD_FIBERS: u64 = 1_000;
const YIELDS_PER_FIBER: u64 = 1_000;
const SLEEP_FIBERS: u64 = 10_000;
const SLEEPS_PER_FIBER: u64 = 10;
const SLEEP_FOR: Duration = Duration::from_millis(1);

mod common;
#[path = "common/proc_status.rs"]
mod proc_status;
use common::runtimes;
use proc_status::proc_status_kib;

/// One `spawn` run on filament: 1,000,000 fibers, a shared counter, a `WaitGroup`.
fn spawn_filament(rt: &filament::Runtime) {
    rt.block_on(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let wg = WaitGroup::new();
        wg.add(SPAWN_FIBERS as usize);
        for _ in 0..SPAWN_FIBERS {
            let counter = counter.clone();
            let wg = wg.clone();
            filament::spawn(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                wg.done();
            });
        }
        wg.wait();
        assert_eq!(counter.load(Ordering::Relaxed), SPAWN_FIBERS);
    })
}

/// One `spawn` run on tokio: 1,000,000 tasks, a shared counter, a completion count + `Notify`.
fn spawn_tokio(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let counter = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let all_done = Arc::new(tokio::sync::Notify::new());
        for _ in 0..SPAWN_FIBERS {
            let counter = counter.clone();
            let finished = finished.clone();
            let all_done = all_done.clone();
            tokio::spawn(async move {
                counter.fetch_add(1, Ordering::Relaxed);
                if finished.fetch_add(1, Ordering::AcqRel) + 1 == SPAWN_FIBERS {
                    // Stores a permit if the waiter is not waiting yet.
                    all_done.notify_one();
                }
            });
        }
        all_done.notified().await;
        assert_eq!(counter.load(Ordering::Relaxed), SPAWN_FIBERS);
    })
}

/// Times every run of `f` (into `runs`) for criterion's `iter_custom`.
fn timed_runs(iters: u64, runs: &mut Vec<Duration>, mut f: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        f();
        let elapsed = start.elapsed();
        runs.push(elapsed);
        total += elapsed;
    }
    total
}

/// Prints the median per-fiber cost of the runs (warm-up included) to stderr.
fn report_per_fiber(name: &str, runs: &mut [Duration]) {
    runs.sort_unstable();
    if let Some(median) = runs.get(runs.len() / 2) {
        eprintln!(
            "spawn {name}: median {:.0} ns per fiber over {} runs of {SPAWN_FIBERS} fibers",
            median.as_nanos() as f64 / SPAWN_FIBERS as f64,
            runs.len()
        );
    }
}

/// Prints the median and 90th percentile of the runs' wall times (warm-up included) to stderr:
/// criterion's figure is a mean, which a few slow runs (a machine that pauses the process) pull
/// up.
fn report_wall_times(name: &str, runs: &mut [Duration]) {
    runs.sort_unstable();
    let at = |q: f64| runs[((runs.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    if !runs.is_empty() {
        eprintln!(
            "{name}: median {:.2} ms, p90 {:.2} ms over {} runs",
            at(0.5),
            at(0.9),
            runs.len()
        );
    }
}

fn spawn(c: &mut Criterion) {
    let rts = runtimes();
    let mut group = c.benchmark_group("spawn");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(SPAWN_FIBERS));

    let hwm_before = proc_status_kib("VmHWM");
    let mut runs = Vec::new();
    group.bench_function("filament", |b| {
        b.iter_custom(|iters| timed_runs(iters, &mut runs, || spawn_filament(&rts.filament)));
    });
    report_per_fiber("filament", &mut runs);
    let kib = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |k| format!("{k} KiB"));
    eprintln!(
        "spawn filament: peak RSS (VmHWM, process-wide) after the filament spawn group: {} \
         (before the group: {}; VmRSS now: {})",
        kib(proc_status_kib("VmHWM")),
        kib(hwm_before),
        kib(proc_status_kib("VmRSS")),
    );

    let mut runs = Vec::new();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| timed_runs(iters, &mut runs, || spawn_tokio(&rts.tokio)));
    });
    report_per_fiber("tokio", &mut runs);
    group.finish();
}

/// One skynet node as a fiber body: a leaf returns its number, an inner node joins its 10
/// children and returns their sum.
fn skynet_filament(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let child = size / 10;
    let handles: [filament::JoinHandle<u64>; 10] = std::array::from_fn(|i| {
        let first = num + i as u64 * child;
        filament::spawn(move || skynet_filament(first, child))
    });
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// The same node as a tokio task (boxed: an `async fn` cannot spawn itself).
fn skynet_tokio(num: u64, size: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let child = size / 10;
        let handles: [tokio::task::JoinHandle<u64>; 10] = std::array::from_fn(|i| {
            let first = num + i as u64 * child;
            tokio::spawn(skynet_tokio(first, child))
        });
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    })
}

fn skynet(c: &mut Criterion) {
    let rts = runtimes();
    let mut group = c.benchmark_group("skynet");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("filament", |b| {
        b.iter(|| {
            let sum = rts.filament.block_on(|| skynet_filament(0, SKYNET_SIZE));
            assert_eq!(sum, SKYNET_SUM);
        });
    });
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let sum = rts
                .tokio
                .block_on(async { tokio::spawn(skynet_tokio(0, SKYNET_SIZE)).await.unwrap() });
            assert_eq!(sum, SKYNET_SUM);
        });
    });
    group.finish();
}

fn yield_now(c: &mut Criterion) {
    let rts = runtimes();
    let total = YIELD_FIBERS * YIELDS_PER_FIBER;
    let mut group = c.benchmark_group("yield");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(total));
    group.bench_function("filament", |b| {
        b.iter(|| {
            let yields: u64 = rts.filament.block_on(|| {
                let handles: Vec<_> = (0..YIELD_FIBERS)
                    .map(|_| {
                        filament::spawn(|| {
                            let mut n = 0;
                            for _ in 0..YIELDS_PER_FIBER {
                                filament::yield_now();
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(yields, total);
        });
    });
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let yields: u64 = rts.tokio.block_on(async {
                let handles: Vec<_> = (0..YIELD_FIBERS)
                    .map(|_| {
                        tokio::spawn(async {
                            let mut n = 0;
                            for _ in 0..YIELDS_PER_FIBER {
                                tokio::task::yield_now().await;
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                sum
            });
            assert_eq!(yields, total);
        });
    });
    group.finish();
}

fn sleep(c: &mut Criterion) {
    let rts = runtimes();
    let total = SLEEP_FIBERS * SLEEPS_PER_FIBER;
    let min_per_fiber = SLEEP_FOR * SLEEPS_PER_FIBER as u32;
    let mut group = c.benchmark_group("sleep");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut runs = Vec::new();
    group.bench_function("filament", |b| {
        b.iter_custom(|iters| {
            timed_runs(iters, &mut runs, || {
                let sleeps: u64 = rts.filament.block_on(|| {
                    let handles: Vec<_> = (0..SLEEP_FIBERS)
                        .map(|_| {
                            filament::spawn(move || {
                                let start = Instant::now();
                                let mut n = 0;
                                for _ in 0..SLEEPS_PER_FIBER {
                                    filament::sleep(SLEEP_FOR);
                                    n += 1;
                                }
                                assert!(start.elapsed() >= min_per_fiber, "a sleep returned early");
                                n
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).sum()
                });
                assert_eq!(sleeps, total);
            })
        });
    });
    report_wall_times("sleep filament", &mut runs);
    let mut runs = Vec::new();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            timed_runs(iters, &mut runs, || {
                let sleeps: u64 = rts.tokio.block_on(async {
                    let handles: Vec<_> = (0..SLEEP_FIBERS)
                        .map(|_| {
                            tokio::spawn(async move {
                                let start = Instant::now();
                                let mut n = 0;
                                for _ in 0..SLEEPS_PER_FIBER {
                                    tokio::time::sleep(SLEEP_FOR).await;
                                    n += 1;
                                }
                                assert!(start.elapsed() >= min_per_fiber, "a sleep returned early");
                                n
                            })
                        })
                        .collect();
                    let mut sum = 0;
                    for h in handles {
                        sum += h.await.unwrap();
                    }
                    sum
                });
                assert_eq!(sleeps, total);
            })
        });
    });
    report_wall_times("sleep tokio", &mut runs);
    group.finish();
}

// `spawn` first: its peak-RSS report is a process-wide high-water mark.
criterion_group!(benches, spawn, skynet, yield_now, sleep);
criterion_main!(benches);
