//! `Runtime::dump` names what a fiber blocked in filament-sync waits on, and the user's line.
//!
//! Fibers park in each primitive; the dump must list each as parked, waiting on the primitive's
//! `what` at the exact line of the blocking call in this file. Then everything is released and
//! joined.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filament_runtime::dump::FiberState;
use filament_runtime::Runtime;
use filament_sync::channel::{self, oneshot};
use filament_sync::{select, Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};

#[macro_use]
#[path = "../../runtime/tests/support/dump_sites.rs"]
mod dump_sites;
use dump_sites::{dump_when_parked, line_of, spawn_named};

#[test]
fn dump_names_each_sync_wait_and_its_line() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        // Held by this fiber while the waiter blocks.
        let mutex = Arc::new(Mutex::new(0));
        let held = mutex.lock();
        let rwlock = Arc::new(RwLock::new(0));
        let read = rwlock.read();
        let (tx, rx) = channel::unbounded::<u32>();
        let cv = Arc::new((Mutex::new(false), Condvar::new()));
        let wg = WaitGroup::new();
        wg.add(1);
        let sem = Arc::new(Semaphore::new(0));
        let barrier = Arc::new(Barrier::new(2));
        let (once_tx, once_rx) = oneshot::<u32>();
        let (sel_tx, sel_rx) = channel::bounded::<u32>(1);
        let (_idle_tx, idle_rx) = channel::bounded::<u32>(1);

        let mut handles = Vec::new();
        {
            let m = mutex.clone();
            handles.push(spawn_named("mutex", move || {
                let _g = at!("mutex", m.lock());
            }));
        }
        {
            let l = rwlock.clone();
            handles.push(spawn_named("rwlock", move || {
                let _g = at!("rwlock", l.write());
            }));
        }
        handles.push(spawn_named("chan", move || {
            assert_eq!(at!("chan", rx.recv()), Ok(1));
        }));
        {
            let cv = cv.clone();
            handles.push(spawn_named("condvar", move || {
                let g = cv.0.lock();
                let _g = at!("condvar", cv.1.wait_while(g, |ready| !*ready));
            }));
        }
        {
            let wg = wg.clone();
            handles.push(spawn_named("waitgroup", move || {
                at!("waitgroup", wg.wait())
            }));
        }
        {
            let s = sem.clone();
            handles.push(spawn_named("semaphore", move || {
                let _p = at!("semaphore", s.acquire());
            }));
        }
        {
            let b = barrier.clone();
            handles.push(spawn_named("barrier", move || {
                at!("barrier", b.wait());
            }));
        }
        handles.push(spawn_named("oneshot", move || {
            assert_eq!(at!("oneshot", once_rx.recv()), Ok(5));
        }));
        handles.push(spawn_named("select", move || {
            let (a, b) = (sel_rx, idle_rx);
            let got = at!("select", select! { recv(a) -> m => m, recv(b) -> m => m });
            assert_eq!(got, Ok(7));
        }));

        let expected = [
            ("mutex", "Mutex::lock"),
            ("rwlock", "RwLock::write"),
            ("chan", "channel recv"),
            ("condvar", "Condvar::wait"),
            ("waitgroup", "WaitGroup::wait"),
            ("semaphore", "Semaphore::acquire"),
            ("barrier", "Barrier::wait"),
            ("oneshot", "oneshot recv"),
            ("select", "select"),
        ];
        let dump = dump_when_parked(&rt, &expected);
        for (name, what) in expected {
            let info = dump
                .fibers
                .iter()
                .find(|f| f.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("fiber '{name}' missing from the dump:\n{dump}"));
            assert_eq!(info.state, FiberState::Parked, "fiber '{name}':\n{dump}");
            let (got, at) = info
                .waiting_on
                .unwrap_or_else(|| panic!("fiber '{name}' has no wait record:\n{dump}"));
            assert_eq!(got, what, "fiber '{name}':\n{dump}");
            assert!(
                at.file().ends_with("tests/dump.rs"),
                "fiber '{name}' recorded {at}, not this file:\n{dump}"
            );
            assert_eq!(Some(at.line()), line_of(name), "fiber '{name}':\n{dump}");
        }
        let text = dump.to_string();
        let mutex_at = format!("waiting on Mutex::lock at {}", file!());
        assert!(text.contains(&mutex_at), "{text}");

        // Release everything.
        drop(held);
        drop(read);
        tx.send(1).unwrap();
        *cv.0.lock() = true;
        cv.1.notify_all();
        wg.done();
        sem.add_permits(1);
        barrier.wait();
        once_tx.send(5).unwrap();
        sel_tx.send(7).unwrap();
        for h in handles {
            h.join().unwrap();
        }

        // Nothing is left behind: no fiber of the test still has a wait record.
        let dump = rt.dump();
        for (name, _) in expected {
            assert!(
                dump.fibers.iter().all(|f| f.name.as_deref() != Some(name)),
                "fiber '{name}' still live:\n{dump}"
            );
        }
    });
}

#[test]
fn uncontended_calls_record_nothing() {
    static SLEEPING: AtomicBool = AtomicBool::new(false);
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let h = spawn_named("fast", || {
            let m = Mutex::new(0);
            let _g = m.lock();
            let (tx, rx) = channel::bounded(1);
            tx.send(1).unwrap();
            rx.recv().unwrap();
            SLEEPING.store(true, SeqCst);
            filament_runtime::sleep(Duration::from_secs(30));
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            let dump = rt.dump();
            let info = dump
                .fibers
                .into_iter()
                .find(|f| f.name.as_deref() == Some("fast"));
            if let Some(info) = info {
                let parked = SLEEPING.load(SeqCst) && info.state == FiberState::Parked;
                if (parked && info.waiting_on.is_some()) || Instant::now() > deadline {
                    break info;
                }
            }
            filament_runtime::sleep(Duration::from_millis(10));
        };
        // The record is the sleep's, not a leftover of the lock or channel calls.
        assert_eq!(info.waiting_on.map(|w| w.0), Some("sleep"));
        h.cancel();
        assert!(h.join().is_err());
    });
}
