//! Real-thread stress tests of Mutex, RwLock, Condvar, Semaphore, Barrier and WaitGroup.
//! Bodies take a `Spawn` so they can be rerun with fibers (see `common`).
// Real threads and std time: meaningless (and panicking) under loom.
#![cfg(not(loom))]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{tasks, Rng, Seed, Spawn, Threads};
use filament_sync::{Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};

pub fn mutex_counter(sp: &impl Spawn, threads: usize, iters: usize) {
    let m = Arc::new(Mutex::new(0u64));
    let inside = Arc::new(AtomicBool::new(false));
    sp.run_all(tasks(threads, |_| {
        let (m, inside) = (m.clone(), inside.clone());
        Box::new(move || {
            for _ in 0..iters {
                let mut g = m.lock();
                assert!(!inside.swap(true, Relaxed), "two owners");
                *g += 1;
                inside.store(false, Relaxed);
            }
        })
    }));
    assert_eq!(*m.lock(), (threads * iters) as u64);
}

#[test]
fn mutex_counter_threads() {
    mutex_counter(&Threads, 16, 20_000);
}

#[test]
fn mutex_basics() {
    let mut m = Mutex::new(vec![1]);
    m.get_mut().push(2);
    {
        let g = m.lock();
        assert!(m.try_lock().is_none());
        assert!(m.is_locked());
        drop(g);
    }
    m.try_lock().unwrap().push(3);
    assert_eq!(m.into_inner(), vec![1, 2, 3]);
}

#[test]
fn mutex_no_poison_after_panic() {
    let m = Arc::new(Mutex::new(1));
    let m2 = m.clone();
    let r = std::thread::spawn(move || {
        let _g = m2.lock();
        panic!("boom");
    })
    .join();
    assert!(r.is_err());
    *m.lock() += 1; // released by the unwind, not poisoned
    assert_eq!(*m.lock(), 2);
}

/// Bargers hammer the lock in a tight loop; a thread that needs it a few times must still get
/// it promptly (starvation mode hands it over).
#[test]
fn mutex_no_starvation() {
    let m = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let bargers: Vec<_> = (0..3)
        .map(|_| {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let mut g = m.lock();
                    *g += 1;
                    // hold it for a while so the victim must wait
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(50) {}
                }
            })
        })
        .collect();
    let t = Instant::now();
    for _ in 0..200 {
        drop(m.lock());
    }
    let took = t.elapsed();
    stop.store(true, Relaxed);
    bargers.into_iter().for_each(|h| h.join().unwrap());
    assert!(took < Duration::from_secs(5), "victim starved: {took:?}");
}

pub fn rwlock_readers_writers(sp: &impl Spawn, readers: usize, writers: usize, iters: usize) {
    let l = Arc::new(RwLock::new((0u64, 0u64)));
    let writing = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicUsize::new(0));
    let mut ts = tasks(readers, |_| {
        let (l, writing, reading) = (l.clone(), writing.clone(), reading.clone());
        Box::new(move || {
            for _ in 0..iters {
                let g = l.read();
                reading.fetch_add(1, Relaxed);
                assert!(!writing.load(Relaxed), "reader with writer");
                assert_eq!(g.0, g.1);
                reading.fetch_sub(1, Relaxed);
            }
        })
    });
    ts.extend(tasks(writers, |_| {
        let (l, writing, reading) = (l.clone(), writing.clone(), reading.clone());
        Box::new(move || {
            for _ in 0..iters {
                let mut g = l.write();
                assert!(!writing.swap(true, Relaxed), "two writers");
                assert_eq!(reading.load(Relaxed), 0, "writer with readers");
                g.0 += 1;
                g.1 += 1;
                writing.store(false, Relaxed);
            }
        })
    }));
    sp.run_all(ts);
    let g = l.read();
    assert_eq!(g.0, (writers * iters) as u64);
}

#[test]
fn rwlock_readers_writers_threads() {
    rwlock_readers_writers(&Threads, 8, 4, 10_000);
}

#[test]
fn rwlock_writer_preferred() {
    let l = Arc::new(RwLock::new(0));
    let r = l.read();
    let l2 = l.clone();
    let w = std::thread::spawn(move || *l2.write() += 1);
    // Wait until the writer is queued: then new readers must not get in.
    let t = Instant::now();
    while l.try_read().is_some() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::yield_now();
    }
    assert!(l.try_write().is_none());
    drop(r);
    w.join().unwrap();
    assert_eq!(*l.read(), 1);
    let mut l = Arc::try_unwrap(l).unwrap();
    *l.get_mut() += 1;
    assert_eq!(l.into_inner(), 2);
}

pub fn condvar_queue(sp: &impl Spawn, producers: usize, consumers: usize, per: usize) {
    let q = Arc::new((Mutex::new((VecDeque::new(), 0usize)), Condvar::new()));
    let seen = Arc::new(
        (0..producers * per)
            .map(|_| AtomicBool::new(false))
            .collect::<Vec<_>>(),
    );
    let mut ts = tasks(producers, |p| {
        let q = q.clone();
        Box::new(move || {
            for i in 0..per {
                q.0.lock().0.push_back(p * per + i);
                q.1.notify_one();
            }
            q.0.lock().1 += 1;
            q.1.notify_all();
        })
    });
    ts.extend(tasks(consumers, |_| {
        let (q, seen) = (q.clone(), seen.clone());
        Box::new(move || loop {
            let mut g =
                q.1.wait_while(q.0.lock(), |(v, done)| v.is_empty() && *done < producers);
            match g.0.pop_front() {
                Some(x) => {
                    drop(g);
                    assert!(!seen[x].swap(true, Relaxed), "duplicate {x}");
                }
                None => return,
            }
        })
    }));
    sp.run_all(ts);
    assert!(seen.iter().all(|s| s.load(Relaxed)), "lost item");
}

#[test]
fn condvar_queue_threads() {
    condvar_queue(&Threads, 4, 4, 20_000);
}

#[test]
fn condvar_timeouts() {
    let m = Mutex::new(0);
    let cv = Condvar::new();
    let t = Instant::now();
    let (g, r) = cv.wait_timeout(m.lock(), Duration::from_millis(50));
    assert!(r.timed_out());
    assert!(t.elapsed() >= Duration::from_millis(50));
    drop(g);
    let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_millis(20), |v| *v == 0);
    assert!(r.timed_out());
    assert_eq!(*g, 0);
    drop(g);
    // A notify racing many timed waits never leaves a waiter behind.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let pair = pair.clone();
            std::thread::spawn(move || {
                let mut g = pair.0.lock();
                while !*g {
                    g = pair.1.wait_timeout(g, Duration::from_micros(200)).0;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    *pair.0.lock() = true;
    pair.1.notify_all();
    waiters.into_iter().for_each(|h| h.join().unwrap());
}

pub fn semaphore_bound(sp: &impl Spawn, threads: usize, permits: usize, iters: usize, seed: u64) {
    let sem = Arc::new(Semaphore::new(permits));
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    sp.run_all(tasks(threads, |t| {
        let (sem, inside, max) = (sem.clone(), inside.clone(), max.clone());
        let mut rng = Rng::new(seed ^ (t as u64 * 0x9e37_79b9));
        Box::new(move || {
            for _ in 0..iters {
                let p = match rng.below(3) {
                    0 => sem.try_acquire(),
                    1 => sem.acquire_timeout(Duration::from_micros(rng.below(100))),
                    _ => Some(sem.acquire()),
                };
                if let Some(p) = p {
                    let n = inside.fetch_add(1, SeqCst) + 1;
                    assert!(n <= permits, "{n} holders of {permits} permits");
                    max.fetch_max(n, Relaxed);
                    std::hint::spin_loop();
                    inside.fetch_sub(1, SeqCst);
                    drop(p);
                }
            }
        })
    }));
    assert_eq!(sem.available_permits(), permits);
    assert!(max.load(Relaxed) >= 1);
}

#[test]
fn semaphore_bound_threads() {
    let seed = Seed::new();
    semaphore_bound(&Threads, 16, 3, 5_000, seed.value);
}

#[test]
fn semaphore_timeout_and_add() {
    let sem = Arc::new(Semaphore::new(0));
    let t = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(30)).is_none());
    assert!(t.elapsed() >= Duration::from_millis(30));
    let s2 = sem.clone();
    let h = std::thread::spawn(move || s2.acquire().forget());
    std::thread::sleep(Duration::from_millis(10));
    sem.add_permits(2);
    h.join().unwrap();
    assert_eq!(sem.available_permits(), 1);
}

pub fn barrier_generations(sp: &impl Spawn, n: usize, gens: usize) {
    let b = Arc::new(Barrier::new(n));
    let leaders = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicUsize::new(0));
    sp.run_all(tasks(n, |_| {
        let (b, leaders, phase) = (b.clone(), leaders.clone(), phase.clone());
        Box::new(move || {
            for g in 0..gens {
                // Everyone sees the same generation before and after each wait.
                assert_eq!(phase.load(SeqCst) / n, g);
                phase.fetch_add(1, SeqCst);
                if b.wait().is_leader() {
                    leaders.fetch_add(1, SeqCst);
                }
                assert!(phase.load(SeqCst) >= (g + 1) * n);
                b.wait();
            }
        })
    }));
    assert_eq!(leaders.load(SeqCst), gens);
}

#[test]
fn barrier_generations_threads() {
    barrier_generations(&Threads, 8, 500);
}

pub fn wait_group(sp: &impl Spawn, workers: usize, waiters: usize) {
    let wg = WaitGroup::new();
    let done = Arc::new(AtomicUsize::new(0));
    wg.add(workers);
    let mut ts = tasks(workers, |i| {
        let (wg, done) = (wg.clone(), done.clone());
        Box::new(move || {
            std::thread::sleep(Duration::from_micros(100 * i as u64));
            done.fetch_add(1, SeqCst);
            wg.done();
        })
    });
    ts.extend(tasks(waiters, |_| {
        let (wg, done) = (wg.clone(), done.clone());
        Box::new(move || {
            wg.wait();
            assert_eq!(done.load(SeqCst), workers);
        })
    }));
    sp.run_all(ts);
    assert_eq!(wg.count(), 0);
    wg.wait(); // zero: returns at once
}

#[test]
fn wait_group_threads() {
    for _ in 0..20 {
        wait_group(&Threads, 8, 4);
    }
}

#[test]
#[should_panic(expected = "more often than add")]
fn wait_group_negative_panics() {
    WaitGroup::new().done();
}
