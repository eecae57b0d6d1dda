//! Test harness: every test body runs twice, once on plain threads without a reactor
//! (`poll(2)` waits) and once with a reactor driven by a polling thread, entered by every
//! thread the test starts (thread park waits). Each run is bounded in time.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use filament_runtime::reactor::{self, Reactor};

/// Where a test body runs.
#[derive(Clone)]
pub struct Env {
    pub reactor: Option<Arc<Reactor>>,
}

impl Env {
    /// Spawns a thread that enters the reactor (if any) and runs `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let r = self.reactor.clone();
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _g = r.map(reactor::enter);
                f()
            })
            .expect("spawn thread")
    }

    /// With a reactor: asserts that it handled events (so waits went through it).
    pub fn assert_reactor_used(&self) {
        if let Some(r) = &self.reactor {
            let st = r.stats();
            assert!(st.events > 0 && st.polls > 0, "reactor unused: {st:?}");
        }
    }

    pub fn name(&self) -> &'static str {
        if self.reactor.is_some() {
            "reactor"
        } else {
            "poll(2)"
        }
    }
}

struct Driver {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Driver {
    fn start(reactor: Arc<Reactor>) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            while !s.load(SeqCst) {
                reactor.poll(Some(Duration::from_millis(10))).unwrap();
            }
        });
        Driver {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `body` without and with a reactor, each run on its own thread and failing the test if
/// it takes longer than `limit`.
pub fn both(limit: Duration, body: impl Fn(&Env) + Send + Sync + 'static) {
    let body = Arc::new(body);
    for with_reactor in [false, true] {
        let reactor = with_reactor.then(|| Arc::new(Reactor::new().unwrap()));
        let _driver = reactor.clone().map(Driver::start);
        let env = Env {
            reactor: reactor.clone(),
        };
        let name = env.name();
        let (tx, rx) = mpsc::channel();
        let b = body.clone();
        let e = env.clone();
        let runner = env.spawn(move || {
            b(&e);
            let _ = tx.send(());
        });
        match rx.recv_timeout(limit) {
            Ok(()) => runner.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The body panicked: re-raise its panic.
                if let Err(p) = runner.join() {
                    std::panic::resume_unwind(p);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("test body ({name}) did not finish within {limit:?}")
            }
        }
        if let Some(r) = &reactor {
            // Every socket the body made is dropped: all deregistered.
            assert_eq!(r.stats().registrations, 0, "{name}: registrations left");
        }
    }
}

/// A deterministic byte pattern for message `i`.
pub fn pattern(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect()
}
