//! Scheduler behaviour on real threads: spawn/join, panics, cancellation, scope, timers,
//! migration rules, blocking hand-off, the monitor, and shutdown. Each test is bounded in time.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use filament_runtime::{self as fil, Cancelled, Runtime};

#[path = "support/bounded.rs"]
mod bounded;
use bounded::{rt, within};

#[test]
fn spawn_and_join_from_plain_main_uses_the_default_runtime() {
    let h = fil::spawn(|| 40 + 2);
    assert_eq!(h.join().unwrap(), 42);
}

#[test]
fn block_on_returns_and_borrows() {
    let rt = rt(2);
    let data = [1u64, 2, 3];
    let sum = within(&rt, Duration::from_secs(60), || data.iter().sum::<u64>());
    assert_eq!(sum, 6);
}

#[test]
fn invalid_settings_are_errors() {
    let e = Runtime::builder().workers(0).build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(Runtime::builder().stack_size(10).build().is_err());
    assert!(Runtime::builder()
        .stack_size(usize::MAX / 2)
        .build()
        .is_err());
    let rt = rt(1);
    let r = within(&rt, Duration::from_secs(60), || {
        fil::Builder::new().stack_size(1).spawn(|| ()).map(|_| ())
    });
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn panic_reaches_join_and_the_worker_survives() {
    let rt = rt(1);
    within(&rt, Duration::from_secs(60), || {
        let h = fil::spawn(|| -> u32 { panic!("fiber panic") });
        let err = h.join().unwrap_err();
        assert_eq!(err.downcast_ref::<&str>(), Some(&"fiber panic"));
        assert_eq!(fil::spawn(|| 5).join().unwrap(), 5);
    });
}

#[test]
fn names_ids_and_current() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        let h = fil::Builder::new()
            .name("named")
            .spawn(|| {
                let me = fil::current();
                (me.id(), me.name().map(String::from))
            })
            .unwrap();
        let expected = h.fiber().id();
        let (id, name) = h.join().unwrap();
        assert_eq!(id, expected);
        assert_eq!(name.as_deref(), Some("named"));
        assert_ne!(fil::current().id(), id);
    });
    assert!(fil::try_current().is_none());
}

#[test]
fn a_million_spawns() {
    let rt = rt(2);
    let start = Instant::now();
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    within(&rt, Duration::from_secs(60), move || {
        let handles: Vec<_> = (0..1_000_000)
            .map(|_| {
                let c = c.clone();
                fil::spawn(move || {
                    c.fetch_add(1, Relaxed);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(counter.load(Relaxed), 1_000_000);
    assert!(start.elapsed() < Duration::from_secs(120));
}

fn skynet(num: u64, size: u64, div: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let children: Vec<_> = (0..div)
        .map(|i| {
            let sub = size / div;
            fil::spawn(move || skynet(num + i * sub, sub, div))
        })
        .collect();
    children.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn skynet_million() {
    let rt = rt(2);
    let sum = within(&rt, Duration::from_secs(60), || skynet(0, 1_000_000, 10));
    assert_eq!(sum, 499_999_500_000);
}

#[test]
fn yield_storm() {
    let rt = rt(2);
    let total = Arc::new(AtomicUsize::new(0));
    let t = total.clone();
    within(&rt, Duration::from_secs(60), move || {
        let hs: Vec<_> = (0..1000)
            .map(|_| {
                let t = t.clone();
                fil::spawn(move || {
                    for _ in 0..1000 {
                        fil::yield_now();
                    }
                    t.fetch_add(1, Relaxed);
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
    assert_eq!(total.load(Relaxed), 1000);
}

#[test]
fn cross_worker_wakeups_via_park() {
    // Pairs of fibers wake each other with park/unpark many times; nothing is lost.
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        let hs: Vec<_> = (0..50)
            .map(|_| {
                fil::spawn(|| {
                    let turn = Arc::new(AtomicUsize::new(0));
                    let main = filament_runtime::park::unparker();
                    let t = turn.clone();
                    let other = fil::spawn(move || {
                        for i in 0..200 {
                            while t.load(Acquire) != 2 * i + 1 {
                                filament_runtime::park::park();
                            }
                            t.store(2 * i + 2, Release);
                            main.unpark();
                        }
                    });
                    let other_fiber = other.fiber();
                    for i in 0..200 {
                        turn.store(2 * i + 1, Release);
                        other_fiber.unpark();
                        while turn.load(Acquire) != 2 * i + 2 {
                            filament_runtime::park::park();
                        }
                    }
                    other.join().unwrap();
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[test]
fn cancel_during_sleep_unwinds() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        let h = fil::spawn(move || {
            let _guard = SetOnDrop(d);
            fil::sleep(Duration::from_secs(3600));
        });
        fil::sleep(Duration::from_millis(10));
        let start = Instant::now();
        h.cancel();
        let err = h.join().unwrap_err();
        assert!(err.is::<Cancelled>());
        assert!(dropped.load(SeqCst), "the fiber's destructors ran");
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn cancel_before_start_never_runs() {
    let rt = rt(1);
    within(&rt, Duration::from_secs(60), || {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let h = fil::spawn(move || r.store(true, SeqCst));
        h.cancel();
        assert!(h.join().unwrap_err().is::<Cancelled>());
        assert!(!ran.load(SeqCst));
    });
}

#[test]
fn scope_borrows_and_joins_all() {
    let rt = rt(2);
    let mut counts = vec![0u32; 8];
    within(&rt, Duration::from_secs(60), || {
        fil::scope(|s| {
            for (i, c) in counts.iter_mut().enumerate() {
                s.spawn(move || {
                    fil::sleep(Duration::from_millis(1));
                    *c = i as u32 * 2;
                });
            }
        });
    });
    assert_eq!(counts, vec![0, 2, 4, 6, 8, 10, 12, 14]);
}

/// A scoped fiber's handle joined by another scoped fiber while the scope itself waits for the
/// same fiber at its end: two joiners of one fiber at once. Both must be woken.
#[test]
fn a_scoped_fiber_joined_by_another_while_the_scope_waits_for_it() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        for round in 0..50u64 {
            let mut got = 0;
            fil::scope(|s| {
                let slow = s.spawn(move || {
                    fil::sleep(Duration::from_millis(2));
                    round
                });
                let got = &mut got;
                s.spawn(move || *got = slow.join().unwrap() + 1);
                // Let the joiner park on `slow` before the scope's end waits for it too.
                fil::sleep(Duration::from_micros(500));
            });
            assert_eq!(got, round + 1);
        }
    });
}

#[test]
fn sleep_precision_and_many_sleepers() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        let start = Instant::now();
        fil::sleep(Duration::from_millis(5));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(5), "{took:?}");
        assert!(took < Duration::from_millis(100), "{took:?}");
        let start = Instant::now();
        let hs: Vec<_> = (0..10_000)
            .map(|_| fil::spawn(|| fil::sleep(Duration::from_millis(20))))
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(
            took < Duration::from_secs(2),
            "10,000 sleepers took {took:?}"
        );
    });
}

#[test]
fn started_fibers_stay_on_their_thread_without_migration() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(20), || {
        let hs: Vec<_> = (0..200)
            .map(|i| {
                fil::spawn(move || {
                    let first = thread::current().id();
                    for _ in 0..50 {
                        if i % 2 == 0 {
                            fil::yield_now();
                        } else {
                            fil::sleep(Duration::from_micros(100));
                        }
                        assert_eq!(thread::current().id(), first, "a pinned fiber moved");
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
}

#[test]
fn fibers_migrate_when_allowed() {
    // SAFETY: the fibers below hold no thread-local references or thread-bound values across
    // blocking points.
    let rt = unsafe { Runtime::builder().workers(2).migrate_fibers() }
        .build()
        .unwrap();
    let moved = Arc::new(AtomicUsize::new(0));
    let m = moved.clone();
    within(&rt, Duration::from_secs(60), move || {
        let hs: Vec<_> = (0..200)
            .map(|_| {
                let m = m.clone();
                fil::spawn(move || {
                    // Sleep and yield until this fiber or another one has moved. Yields alone
                    // do not move anything while both workers are busy (an idle worker steals,
                    // a busy one does not); a timer fired by the other worker queues the fiber
                    // there.
                    let first = thread::current().id();
                    let start = Instant::now();
                    while m.load(Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
                        fil::sleep(Duration::from_micros(50));
                        fil::yield_now();
                        if thread::current().id() != first {
                            m.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
    assert!(moved.load(Relaxed) > 0, "no fiber ever moved");
}

#[test]
fn blocking_calls_do_not_stall_other_fibers() {
    let rt = rt(2);
    within(&rt, Duration::from_secs(60), || {
        let start = Instant::now();
        // Blocking calls on both workers at once, for 500 ms.
        let blockers: Vec<_> = (0..2)
            .map(|_| fil::spawn(|| fil::blocking(|| thread::sleep(Duration::from_millis(500)))))
            .collect();
        fil::sleep(Duration::from_millis(20));
        let done = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..1000)
            .map(|_| {
                let d = done.clone();
                fil::spawn(move || {
                    fil::yield_now();
                    d.fetch_add(1, Relaxed);
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        let took = start.elapsed();
        assert_eq!(done.load(Relaxed), 1000);
        assert!(
            took < Duration::from_millis(250),
            "others waited for the blocking calls: {took:?}"
        );
        blockers.into_iter().for_each(|h| h.join().unwrap());
        assert!(start.elapsed() >= Duration::from_millis(500));
        // A panic inside `blocking` reaches the fiber.
        let r = fil::spawn(|| fil::blocking(|| panic!("blocking boom"))).join();
        assert_eq!(
            r.unwrap_err().downcast_ref::<&str>(),
            Some(&"blocking boom")
        );
    });
}

#[test]
fn monitor_rescues_a_queue_behind_a_hogging_fiber() {
    let rt = rt(2);
    let start = Instant::now();
    // Two fibers hog both workers without ever blocking.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            rt.spawn(|| {
                let until = Instant::now() + Duration::from_millis(500);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(5));
    // Work from outside the pool (the injector) is served by a spare worker.
    let hs: Vec<_> = (0..1000u64).map(|i| rt.spawn(move || i)).collect();
    let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 499_500);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(300),
        "the queue waited for the hogs: {took:?}"
    );
    hogs.into_iter().for_each(|h| h.join().unwrap());
}

#[test]
fn dropping_the_runtime_cancels_fibers_and_runs_destructors() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    {
        let rt = rt(2);
        let d = drops.clone();
        within(&rt, Duration::from_secs(60), move || {
            for i in 0..1000 {
                let c = Count(d.clone());
                fil::spawn(move || {
                    let _c = c;
                    if i % 2 == 0 {
                        fil::sleep(Duration::from_secs(3600));
                    } else {
                        filament_runtime::park::park();
                        loop {
                            fil::yield_now();
                        }
                    }
                });
            }
        });
        // A fiber that may not have started by the time the runtime drops: its closure is
        // dropped either way.
        let c = Count(drops.clone());
        let _late = rt.spawn(move || drop(c));
    }
    assert_eq!(
        drops.load(SeqCst),
        1001,
        "every fiber's captured value was dropped"
    );
}

#[test]
fn spawn_during_shutdown() {
    let rt = rt(2);
    let spawned_late = Arc::new(AtomicUsize::new(0));
    let s = spawned_late.clone();
    within(&rt, Duration::from_secs(60), move || {
        for _ in 0..100 {
            let s = s.clone();
            fil::spawn(move || {
                struct SpawnOnDrop(Arc<AtomicUsize>);
                impl Drop for SpawnOnDrop {
                    fn drop(&mut self) {
                        let s = self.0.clone();
                        // Spawning while the runtime shuts down is allowed; the fiber is cancelled
                        // before it starts.
                        let h = fil::spawn(move || {
                            s.fetch_add(1, SeqCst);
                        });
                        let _ = h.join();
                    }
                }
                let _g = SpawnOnDrop(s);
                fil::sleep(Duration::from_secs(3600));
            });
        }
    });
    drop(rt);
    // Nothing hung, and a fiber spawned once shutdown has begun is cancelled before it runs.
    assert_eq!(spawned_late.load(SeqCst), 0);
}

thread_local! {
    static TL: Cell<u32> = const { Cell::new(0) };
}

#[test]
fn thread_join_from_outside_blocks_the_thread() {
    let rt = rt(1);
    let h = rt.spawn(|| {
        fil::sleep(Duration::from_millis(20));
        TL.with(|t| t.set(7));
        TL.with(Cell::get)
    });
    assert_eq!(h.join().unwrap(), 7);
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for i in 0..4 {
            let rt = &rt;
            let results = &results;
            s.spawn(move || {
                let v = rt.spawn(move || i * 10).join().unwrap();
                results.lock().unwrap().push(v);
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort();
    assert_eq!(r, vec![0, 10, 20, 30]);
}
