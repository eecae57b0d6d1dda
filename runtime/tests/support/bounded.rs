//! Runtimes for the scheduler tests, and `block_on` bounded in time (shared by test binaries
//! through `#[path]`).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use filament_runtime::Runtime;

/// A runtime with `workers` workers.
pub fn rt(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

/// `rt.block_on(f)`, bounded: if `f` has not returned after `limit`, prints the runtime's
/// metrics and fiber dump (where every fiber is stuck) and aborts the test process.
pub fn within<T: Send>(rt: &Runtime, limit: Duration, f: impl FnOnce() -> T + Send) -> T {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            while !done.load(SeqCst) {
                thread::sleep(Duration::from_millis(10));
                if start.elapsed() > limit {
                    eprintln!(
                        "still running after {limit:?}:\n{}\n{}",
                        rt.metrics(),
                        rt.dump()
                    );
                    std::process::abort();
                }
            }
        });
        let value = rt.block_on(f);
        done.store(true, SeqCst);
        value
    })
}
