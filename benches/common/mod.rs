//! Shared by the benches: one filament and one tokio runtime per process, same worker count.

use std::sync::OnceLock;

/// One filament runtime and one tokio runtime per process, both with one worker per core.
pub struct Runtimes {
    pub filament: filament::Runtime,
    pub tokio: tokio::runtime::Runtime,
}

pub fn runtimes() -> &'static Runtimes {
    static RUNTIMES: OnceLock<Runtimes> = OnceLock::new();
    RUNTIMES.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Runtimes {
            filament: filament::Runtime::builder()
                .workers(workers)
                .build()
                .expect("filament runtime"),
            tokio: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        }
    })
}
