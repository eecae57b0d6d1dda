//! loom models of the lock-like primitives' state machines.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test -p filament-sync --release`
//! Under loom a timed park may return at any point (modelled as a spurious, timed-out return).
#![cfg(loom)]

use std::time::Duration;

use filament_sync::{Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// Three lockers: mutual exclusion (the data cell is a loom cell, so overlap is detected), no
/// lost wake-up (loom reports a deadlock), and — because under loom a waiter starves after one
/// lost race — the starvation handoff path.
#[test]
fn mutex_three_lockers() {
    loom::model(|| {
        let m = Arc::new(Mutex::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || *m.lock() += 1)
            })
            .collect();
        *m.lock() += 1;
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*m.lock(), 3);
        assert!(!m.is_locked());
    });
}

#[test]
fn mutex_try_lock_and_lock() {
    loom::model(|| {
        let m = Arc::new(Mutex::new(0));
        let m2 = m.clone();
        let h = thread::spawn(move || {
            if let Some(mut g) = m2.try_lock() {
                *g += 1;
            }
        });
        *m.lock() += 1;
        h.join().unwrap();
        let v = *m.lock();
        assert!(v == 1 || v == 2);
    });
}

#[test]
fn condvar_notify_one() {
    loom::model(|| {
        let p = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = p.clone();
        let h = thread::spawn(move || {
            *p2.0.lock() = true;
            p2.1.notify_one();
        });
        let g = p.1.wait_while(p.0.lock(), |v| !*v);
        assert!(*g);
        drop(g);
        h.join().unwrap();
    });
}

/// A timed wait racing a notify: the waiter either is notified or times out, never both, and
/// leaves no stale node (a later notify_all must not touch freed memory).
#[test]
fn condvar_timeout_races_notify() {
    loom::model(|| {
        let p = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = p.clone();
        let h = thread::spawn(move || {
            *p2.0.lock() = true;
            p2.1.notify_one();
        });
        let g = p.0.lock();
        let (g, _r) = p.1.wait_timeout_while(g, Duration::from_millis(1), |v| !*v);
        drop(g);
        h.join().unwrap();
        p.1.notify_all();
        assert!(*p.0.lock());
    });
}

#[test]
fn rwlock_writer_and_readers() {
    loom::model(|| {
        let l = Arc::new(RwLock::new(0));
        let l1 = l.clone();
        let w = thread::spawn(move || *l1.write() += 1);
        let l2 = l.clone();
        let r = thread::spawn(move || {
            let v = *l2.read();
            assert!(v == 0 || v == 1);
        });
        let v = *l.read();
        assert!(v == 0 || v == 1);
        w.join().unwrap();
        r.join().unwrap();
        assert_eq!(*l.read(), 1);
        assert!(l.try_write().is_some());
    });
}

#[test]
fn rwlock_two_writers() {
    loom::model(|| {
        let l = Arc::new(RwLock::new(0));
        let l1 = l.clone();
        let w = thread::spawn(move || *l1.write() += 1);
        *l.write() += 1;
        w.join().unwrap();
        assert_eq!(*l.read(), 2);
    });
}

#[test]
fn semaphore_one_permit() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(1));
        let inside = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                thread::spawn(move || {
                    let _p = s.acquire();
                    assert_eq!(inside.fetch_add(1, SeqCst), 0);
                    inside.fetch_sub(1, SeqCst);
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.available_permits(), 1);
    });
}

/// acquire_timeout racing a release: the permit is either taken or left, never lost.
#[test]
fn semaphore_timeout_races_release() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(0));
        let s2 = s.clone();
        let h = thread::spawn(move || s2.add_permits(1));
        let got = s.acquire_timeout(Duration::from_millis(1));
        let held = got.is_some();
        if let Some(p) = got {
            p.forget();
        }
        h.join().unwrap();
        assert_eq!(s.available_permits(), if held { 0 } else { 1 });
    });
}

#[test]
fn barrier_two() {
    loom::model(|| {
        let b = Arc::new(Barrier::new(2));
        let b2 = b.clone();
        let h = thread::spawn(move || b2.wait().is_leader());
        let a = b.wait().is_leader();
        assert!(a ^ h.join().unwrap());
    });
}

#[test]
fn wait_group_two_workers() {
    loom::model(|| {
        let wg = WaitGroup::new();
        let n = Arc::new(AtomicUsize::new(0));
        wg.add(2);
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (wg, n) = (wg.clone(), n.clone());
                thread::spawn(move || {
                    n.fetch_add(1, SeqCst);
                    wg.done();
                })
            })
            .collect();
        wg.wait();
        assert_eq!(n.load(SeqCst), 2);
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
}
