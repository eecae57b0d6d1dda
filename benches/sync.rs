//! Synchronisation benchmarks (BENCHMARKS.md: mutex, pingpong, chain), filament against tokio.
//!
//! Run with `cargo bench --bench sync` (one group: `cargo bench --bench sync -- chain`).
//!
//! Every group has a `filament` and a `tokio` function measured side by side. Each runtime is
//! built once per process (workers = number of cores for both), outside the measured closures;
//! every iteration runs the whole workload and checks its result. Each group declares its
//! throughput in elements, so criterion's `thrpt` is locks / round trips / hops per second and
//! the time per element is `time per iteration / elements`.
//!
//! * `mutex`: 100 fibers x 10,000 lock/increment/unlock of one `filament::sync::Mutex` (tokio:
//!   `tokio::sync::Mutex`); the final count is checked. Throughput 1,000,000 locks: time per
//!   iteration in ms = ns per lock.
//! * `pingpong`: two fibers bounce an integer over two capacity-1 channels
//!   (`filament::sync::channel::bounded(1)`; tokio: `tokio::sync::mpsc::channel(1)`), 1,000,000
//!   round trips per iteration, every echo checked. Time per iteration in ms = ns per round trip.
//! * `chain`: 10,000 fibers in a ring of capacity-1 channels; fiber 0 sends a counter that every
//!   fiber increments and forwards; it goes round 11 times. The first round (which also starts
//!   every fiber) is not timed: the timed part is the 10 following rounds = 100,000 hops,
//!   measured by fiber 0 itself (`iter_custom`), and the final count is checked. Time per
//!   iteration in ms / 100 = ns per hop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use filament::sync::channel::bounded;
use filament::sync::Mutex;

const MUTEX_FIBERS: u64 = 100;
const LOCKS_PER_FIBER: u64 = 10_000;
const ROUND_TRIPS: u64 = 1_000_000;
const RING: usize = 10_000;
const TIMED_ROUNDS: u64 = 10;

mod common;
use common::runtimes;

fn mutex(c: &mut Criterion) {
    let rts = runtimes();
    let total = MUTEX_FIBERS * LOCKS_PER_FIBER;
    let mut group = c.benchmark_group("mutex");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(total));
    group.bench_function("filament", |b| {
        b.iter(|| {
            let count = rts.filament.block_on(|| {
                let m = Arc::new(Mutex::new(0u64));
                let handles: Vec<_> = (0..MUTEX_FIBERS)
                    .map(|_| {
                        let m = m.clone();
                        filament::spawn(move || {
                            for _ in 0..LOCKS_PER_FIBER {
                                *m.lock() += 1;
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                let count = *m.lock();
                count
            });
            assert_eq!(count, total);
        });
    });
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let count = rts.tokio.block_on(async {
                let m = Arc::new(tokio::sync::Mutex::new(0u64));
                let handles: Vec<_> = (0..MUTEX_FIBERS)
                    .map(|_| {
                        let m = m.clone();
                        tokio::spawn(async move {
                            for _ in 0..LOCKS_PER_FIBER {
                                *m.lock().await += 1;
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
                let count = *m.lock().await;
                count
            });
            assert_eq!(count, total);
        });
    });
    group.finish();
}

fn pingpong(c: &mut Criterion) {
    let rts = runtimes();
    let mut group = c.benchmark_group("pingpong");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(ROUND_TRIPS));
    group.bench_function("filament", |b| {
        b.iter(|| {
            let echoed = rts.filament.block_on(|| {
                let (ping_tx, ping_rx) = bounded::<u64>(1);
                let (pong_tx, pong_rx) = bounded::<u64>(1);
                let ponger = filament::spawn(move || {
                    let mut n = 0u64;
                    for v in ping_rx.iter() {
                        pong_tx.send(v).unwrap();
                        n += 1;
                    }
                    n
                });
                let pinger = filament::spawn(move || {
                    for i in 0..ROUND_TRIPS {
                        ping_tx.send(i).unwrap();
                        assert_eq!(pong_rx.recv().unwrap(), i);
                    }
                    // Dropping `ping_tx` ends the ponger's loop.
                });
                pinger.join().unwrap();
                ponger.join().unwrap()
            });
            assert_eq!(echoed, ROUND_TRIPS);
        });
    });
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let echoed = rts.tokio.block_on(async {
                let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let ponger = tokio::spawn(async move {
                    let mut n = 0u64;
                    while let Some(v) = ping_rx.recv().await {
                        pong_tx.send(v).await.unwrap();
                        n += 1;
                    }
                    n
                });
                let pinger = tokio::spawn(async move {
                    for i in 0..ROUND_TRIPS {
                        ping_tx.send(i).await.unwrap();
                        assert_eq!(pong_rx.recv().await.unwrap(), i);
                    }
                });
                pinger.await.unwrap();
                ponger.await.unwrap()
            });
            assert_eq!(echoed, ROUND_TRIPS);
        });
    });
    group.finish();
}

/// Counter value fiber 0 gets back at the end: every fiber adds 1 per hop, one untimed round
/// plus the timed ones.
const CHAIN_FINAL: u64 = (TIMED_ROUNDS + 1) * RING as u64;

/// One filament ring: returns the timed part (rounds 2..=11) as measured by fiber 0.
fn chain_filament(rt: &filament::Runtime) -> Duration {
    rt.block_on(|| {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING).map(|_| bounded::<u64>(1)).unzip();
        let mut rxs = rxs.into_iter();
        let mut txs = txs.into_iter();
        // Fiber i receives on channel i and sends on channel i + 1 (mod RING).
        let first_tx = txs.next().unwrap();
        let first_rx = rxs.next().unwrap();
        let leader_tx = txs.next().unwrap();
        let mut forwarders = Vec::with_capacity(RING - 1);
        for rx in rxs {
            let tx = txs.next().unwrap_or_else(|| first_tx.clone());
            forwarders.push(filament::spawn(move || {
                for _ in 0..=TIMED_ROUNDS {
                    let v = rx.recv().unwrap();
                    tx.send(v + 1).unwrap();
                }
            }));
        }
        drop(first_tx);
        // Fiber 0 (the leader).
        let leader = filament::spawn(move || {
            let mut v = 0;
            leader_tx.send(v + 1).unwrap();
            v = first_rx.recv().unwrap();
            assert_eq!(v, RING as u64, "untimed round");
            let start = Instant::now();
            for _ in 0..TIMED_ROUNDS {
                leader_tx.send(v + 1).unwrap();
                v = first_rx.recv().unwrap();
            }
            (start.elapsed(), v)
        });
        let (elapsed, v) = leader.join().unwrap();
        assert_eq!(v, CHAIN_FINAL);
        for f in forwarders {
            f.join().unwrap();
        }
        elapsed
    })
}

/// The same ring of tokio tasks over `tokio::sync::mpsc::channel(1)`.
fn chain_tokio(rt: &tokio::runtime::Runtime) -> Duration {
    rt.block_on(async {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING)
            .map(|_| tokio::sync::mpsc::channel::<u64>(1))
            .unzip();
        let mut rxs = rxs.into_iter();
        let mut txs = txs.into_iter();
        let first_tx = txs.next().unwrap();
        let mut first_rx = rxs.next().unwrap();
        let leader_tx = txs.next().unwrap();
        let mut forwarders = Vec::with_capacity(RING - 1);
        for mut rx in rxs {
            let tx = txs.next().unwrap_or_else(|| first_tx.clone());
            forwarders.push(tokio::spawn(async move {
                for _ in 0..=TIMED_ROUNDS {
                    let v = rx.recv().await.unwrap();
                    tx.send(v + 1).await.unwrap();
                }
            }));
        }
        drop(first_tx);
        let leader = tokio::spawn(async move {
            let mut v = 0;
            leader_tx.send(v + 1).await.unwrap();
            v = first_rx.recv().await.unwrap();
            assert_eq!(v, RING as u64, "untimed round");
            let start = Instant::now();
            for _ in 0..TIMED_ROUNDS {
                leader_tx.send(v + 1).await.unwrap();
                v = first_rx.recv().await.unwrap();
            }
            (start.elapsed(), v)
        });
        let (elapsed, v) = leader.await.unwrap();
        assert_eq!(v, CHAIN_FINAL);
        for f in forwarders {
            f.await.unwrap();
        }
        elapsed
    })
}

fn chain(c: &mut Criterion) {
    let rts = runtimes();
    let mut group = c.benchmark_group("chain");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(TIMED_ROUNDS * RING as u64));
    group.bench_function("filament", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| chain_filament(&rts.filament)).sum());
    });
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| chain_tokio(&rts.tokio)).sum());
    });
    group.finish();
}

criterion_group!(benches, mutex, pingpong, chain);
criterion_main!(benches);
