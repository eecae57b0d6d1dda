//! Helpers for the tests that check `Runtime::dump`'s wait sites (included by the sync and net
//! crates' `tests/dump.rs` with `#[path]`): note the line of each fiber's blocking call, spawn
//! named fibers, and poll the dump until the named fibers are parked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filament_runtime::dump::{Dump, FiberState};
use filament_runtime::{Builder, JoinHandle, Runtime};

/// The line of each fiber's blocking call, by fiber name.
static LINES: Mutex<Option<HashMap<&'static str, u32>>> = Mutex::new(None);

pub fn note_line(name: &'static str, line: u32) {
    LINES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(name, line);
}

pub fn line_of(name: &str) -> Option<u32> {
    LINES.lock().unwrap().as_ref()?.get(name).copied()
}

/// `at!(name, call)`: notes the line of this invocation for fiber `name`, then evaluates `call`.
/// Keep each use on one line: the blocking call's location must be that line.
macro_rules! at {
    ($name:expr, $e:expr) => {{
        crate::dump_sites::note_line($name, line!());
        $e
    }};
}

#[track_caller]
pub fn spawn_named<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    Builder::new().name(name).spawn(f).unwrap()
}

/// Polls the dump until every fiber of `expected` (name, what) is parked with a wait record
/// and its line noted, for at most 20 s; returns the last dump.
pub fn dump_when_parked(rt: &Runtime, expected: &[(&str, &str)]) -> Dump {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dump = rt.dump();
        let ready = expected.iter().all(|(name, _)| {
            line_of(name).is_some()
                && dump.fibers.iter().any(|f| {
                    f.name.as_deref() == Some(*name)
                        && f.state == FiberState::Parked
                        && f.waiting_on.is_some()
                })
        });
        if ready || Instant::now() > deadline {
            return dump;
        }
        filament_runtime::sleep(Duration::from_millis(10));
    }
}
