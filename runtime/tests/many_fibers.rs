//! 200,000 scheduled fibers suspended at once, each holding its own 16 KiB stack (32 KiB in debug builds), on a stock
//! kernel (`vm.max_map_count` = 65530). A design that maps each stack (plus a guard) separately
//! needs two mappings per fiber and stops near 32,000 fibers with ENOMEM.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use filament_runtime::park::{self, Unparker};
use filament_runtime::{self as fil, Runtime};

const FIBERS: usize = 200_000;
/// 16 KiB, the minimum; unoptimised builds have frames several times larger, so they get 32 KiB.
const STACK: usize = if cfg!(debug_assertions) { 32 } else { 16 } * 1024;

mod support;
use support::map_count;

#[test]
fn two_hundred_thousand_fibers_suspended_at_once() {
    let rt = Runtime::builder()
        .workers(2)
        .stack_size(STACK)
        .build()
        .unwrap();
    let maps_before = map_count();
    let release = Arc::new(AtomicBool::new(false));
    let parked = Arc::new(AtomicUsize::new(0));
    let unparkers = Arc::new(Mutex::new(Vec::with_capacity(FIBERS)));
    let start = Instant::now();
    let handles: Vec<_> = rt.block_on(|| {
        (0..FIBERS)
            .map(|i| {
                let (release, parked, unparkers) =
                    (release.clone(), parked.clone(), unparkers.clone());
                fil::spawn(move || {
                    unparkers.lock().unwrap().push(park::unparker());
                    parked.fetch_add(1, SeqCst);
                    while !release.load(SeqCst) {
                        park::park();
                    }
                    i
                })
            })
            .collect()
    });
    while parked.load(SeqCst) < FIBERS {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} of {FIBERS} fibers started in 120 s",
            parked.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every fiber is alive and holds a stack right now.
    let m = rt.metrics();
    assert!(m.fibers_alive >= FIBERS, "{m}");
    assert!(m.stacks_in_use >= FIBERS, "{m}");
    let maps_during = map_count();
    assert!(
        maps_during < maps_before + 1_000,
        "{FIBERS} stacks took {} new mappings",
        maps_during - maps_before
    );
    eprintln!(
        "{FIBERS} fibers suspended in {:?}; {} new mappings; stack memory committed {} MiB",
        start.elapsed(),
        maps_during.saturating_sub(maps_before),
        m.stack_bytes_committed >> 20
    );
    release.store(true, SeqCst);
    for u in unparkers.lock().unwrap().drain(..) {
        Unparker::unpark(&u);
    }
    let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, FIBERS * (FIBERS - 1) / 2);
}
