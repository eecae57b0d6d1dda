//! Where fibers start (`sched::placement`): detached fibers spread over the workers, joined ones
//! stay with their spawner, a burst of busy fibers is shared by balancing steals.
//!
//! A test binary of its own, and its tests run one at a time (`serial`): whether a busy worker
//! gets to steal depends on both workers getting a core, and other tests running alongside on
//! this 2-core machine took that away often enough to fail
//! `busy_workers_share_a_burst_of_spawns` one run in five to ten (2 of 15 runs of the scheduler
//! binary, 3 of 20 of this binary run in parallel; 0 of 40 alone).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use filament_runtime as fil;

#[path = "support/bounded.rs"]
mod bounded;
use bounded::{rt, within};

/// Held by each test of this file for its whole run, so they do not compete for the cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The worker threads fibers ran on, recorded by the fibers themselves (the placement tests).
#[derive(Clone, Default)]
struct ThreadLog(Arc<Mutex<Vec<thread::ThreadId>>>);

impl ThreadLog {
    /// Records the calling thread.
    fn record(&self) {
        self.0.lock().unwrap().push(thread::current().id());
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// How many records are of thread `id`.
    fn count_of(&self, id: thread::ThreadId) -> usize {
        self.0.lock().unwrap().iter().filter(|&&t| t == id).count()
    }

    /// Records on the first recorded thread, and on any other.
    fn split(&self) -> (usize, usize) {
        let first = self.0.lock().unwrap()[0];
        let on_first = self.count_of(first);
        (on_first, self.len() - on_first)
    }
}

#[test]
fn detached_fibers_spawned_one_at_a_time_are_spread_over_the_workers() {
    let _serial = serial();
    // An accept loop's shape: spawn one long-lived detached fiber, wait, spawn the next. Each
    // new fiber would run (and so be pinned) on the spawner's worker; placement hands some to
    // the other worker.
    let rt = rt(2);
    let threads = ThreadLog::default();
    let t = threads.clone();
    within(&rt, Duration::from_secs(60), move || {
        for _ in 0..100 {
            let t = t.clone();
            // Detached: the handle is dropped at once.
            fil::spawn(move || {
                t.record();
                fil::sleep(Duration::from_millis(400));
            });
            fil::sleep(Duration::from_millis(1));
        }
        while t.len() < 100 {
            fil::sleep(Duration::from_millis(1));
        }
    });
    let (on_first, _) = threads.split();
    assert!(
        (35..=65).contains(&on_first),
        "{on_first} of 100 fibers started on one worker"
    );
    // Every hand-over counted the fiber in its new home; once all have ended, no count is left.
    let start = Instant::now();
    let mut homed = rt.metrics().homed_fibers;
    while homed.iter().sum::<usize>() != 0 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(10));
        homed = rt.metrics().homed_fibers;
    }
    assert_eq!(
        homed.iter().sum::<usize>(),
        0,
        "homed counts left: {homed:?}"
    );
}

#[test]
fn joined_fibers_stay_with_their_spawner() {
    let _serial = serial();
    // The same shape with the handles kept: such fibers usually talk to their spawner (a
    // ping-pong pair, a fan-out joined at the end), so placement leaves them where they start.
    let rt = rt(2);
    let threads = ThreadLog::default();
    let t = threads.clone();
    let spawner = within(&rt, Duration::from_secs(60), move || {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let t = t.clone();
                let h = fil::spawn(move || {
                    t.record();
                    fil::sleep(Duration::from_millis(200));
                });
                fil::sleep(Duration::from_millis(1));
                h
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        thread::current().id()
    });
    let on_spawner = threads.count_of(spawner);
    assert!(
        on_spawner >= 90,
        "only {on_spawner} of {} joined fibers started on their spawner's worker",
        threads.len()
    );
}

#[test]
fn busy_workers_share_a_burst_of_spawns() {
    let _serial = serial();
    // One fiber spawns 1,000 that yield in a loop. The other worker steals a first batch, and
    // those become its pinned work; balancing steals must keep it taking unstarted fibers from
    // the spawner's queue while it is busy (without them the split was 968 to 32, every time).
    // The fibers all start within well under a millisecond, so on a machine busy with other
    // tests the thief may not get a core in that window: up to five bursts, one must split.
    let rt = rt(2);
    let mut splits = Vec::new();
    for _ in 0..5 {
        let threads = ThreadLog::default();
        let t = threads.clone();
        within(&rt, Duration::from_secs(60), move || {
            let handles: Vec<_> = (0..1000)
                .map(|_| {
                    let t = t.clone();
                    fil::spawn(move || {
                        for _ in 0..1000 {
                            fil::yield_now();
                        }
                        t.record();
                    })
                })
                .collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
        });
        let (on_first, elsewhere) = threads.split();
        splits.push((on_first, elsewhere));
        if on_first.min(elsewhere) >= 200 {
            return;
        }
    }
    panic!("1,000 busy fibers never split evenly over two workers: {splits:?}");
}
