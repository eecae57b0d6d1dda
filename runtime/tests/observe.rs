//! What an operator sees: `Runtime::metrics()`, `Runtime::dump()` and `dump_on_signal`.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filament_runtime::dump::{Dump, FiberInfo, FiberState};
use filament_runtime::{self as fil, Runtime};

fn named<'a>(dump: &'a Dump, name: &str) -> Option<&'a FiberInfo> {
    dump.fibers.iter().find(|f| f.name.as_deref() == Some(name))
}

/// Polls the dump until every named fiber is parked (at most 5 s).
fn dump_when_parked(rt: &Runtime, names: &[&str]) -> Dump {
    let start = Instant::now();
    loop {
        let dump = rt.dump();
        let all_parked = names
            .iter()
            .all(|n| named(&dump, n).is_some_and(|f| f.state == FiberState::Parked));
        if all_parked {
            return dump;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "fibers {names:?} did not all park; last dump:\n{dump}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dump_names_each_wait_and_spawn_site() {
    let rt = Runtime::builder()
        .workers(2)
        .name("observed")
        .build()
        .unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let r1 = release.clone();
    let r2 = release.clone();
    let spawn_line = line!() + 3;
    let (sleeper, joiner, blocker, lines) = rt.block_on(move || {
        let sleep_line = line!() + 3;
        let sleeper = fil::Builder::new().name("sleeper").spawn(move || {
            while !r1.load(SeqCst) {
                fil::sleep(Duration::from_millis(20));
            }
        });
        let target = fil::spawn(|| fil::sleep(Duration::from_secs(30)));
        let join_line = line!() + 2;
        let joiner = fil::Builder::new().name("joiner").spawn(move || {
            let _ = target.join();
        });
        let blocking_line = line!() + 2;
        let blocker = fil::Builder::new().name("blocker").spawn(move || {
            fil::blocking(|| {
                while !r2.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        });
        let lines = [sleep_line, join_line, blocking_line];
        (sleeper.unwrap(), joiner.unwrap(), blocker.unwrap(), lines)
    });
    let [sleep_line, join_line, blocking_line] = lines;
    let dump = dump_when_parked(&rt, &["sleeper", "joiner", "blocker"]);
    let text = dump.to_string();
    assert!(text.starts_with("runtime 'observed'"), "{text}");
    for (name, what, line) in [
        ("sleeper", "sleep", sleep_line),
        ("joiner", "join", join_line),
        ("blocker", "blocking", blocking_line),
    ] {
        let info = named(&dump, name).unwrap();
        let (w, at) = info
            .waiting_on
            .unwrap_or_else(|| panic!("{name} has no wait:\n{text}"));
        assert_eq!(w, what, "{text}");
        assert!(at.file().ends_with("observe.rs"), "{at}");
        assert_eq!(at.line(), line, "{name}: {at}\n{text}");
        assert!(info.spawned_at.file().ends_with("observe.rs"));
        assert!(text.contains(&format!("waiting on {what} at ")), "{text}");
    }
    assert_eq!(
        named(&dump, "sleeper").unwrap().spawned_at.line(),
        spawn_line
    );
    release.store(true, SeqCst);
    sleeper.join().unwrap();
    blocker.join().unwrap();
    // Dropping the runtime cancels the 30 s sleeper and the joiner waiting for it.
    drop(rt);
    let joined = joiner.join();
    assert!(joined.is_ok() || joined.unwrap_err().is::<fil::Cancelled>());
}

#[test]
fn a_fiber_in_its_first_slice_is_listed_as_running_then_by_name() {
    // Fibers are registered when they first suspend; before that their worker announces them.
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (go_on, started) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g, s) = (go_on.clone(), started.clone());
    let spawn_line = line!() + 2;
    let spinner = rt.block_on(move || {
        fil::Builder::new().name("spinner").spawn(move || {
            s.store(true, SeqCst);
            while !g.load(SeqCst) {
                std::hint::spin_loop();
            }
            fil::sleep(Duration::from_secs(30));
        })
    });
    let spinner = spinner.unwrap();
    while !started.load(SeqCst) {
        std::thread::yield_now();
    }
    let dump = rt.dump();
    let listed: Vec<_> = dump
        .fibers
        .iter()
        .filter(|f| f.spawned_at.line() == spawn_line)
        .collect();
    assert_eq!(listed.len(), 1, "{dump}");
    assert_eq!(listed[0].state, FiberState::Running, "{dump}");
    assert!(
        listed[0].spawned_at.file().ends_with("observe.rs"),
        "{dump}"
    );
    go_on.store(true, SeqCst);
    let dump = dump_when_parked(&rt, &["spinner"]);
    assert_eq!(dump.fibers.len(), 1, "{dump}");
    drop(rt);
    assert!(spinner.join().unwrap_err().is::<fil::Cancelled>());
}

#[test]
fn metrics_count_fibers_and_display() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let before = rt.metrics();
    assert_eq!(before.workers, 2);
    rt.block_on(|| {
        let hs: Vec<_> = (0..100).map(|i| fil::spawn(move || i)).collect();
        let sum: i32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 4950);
        fil::sleep(Duration::from_millis(1));
    });
    let m = rt.metrics();
    assert!(m.fibers_spawned >= before.fibers_spawned + 101, "{m}");
    assert!(m.fibers_finished >= before.fibers_finished + 100, "{m}");
    assert!(m.fiber_parks >= 1, "{m}");
    assert_eq!(m.queue_depths.len(), 2);
    assert_eq!(m.homed_fibers.len(), 2);
    assert_eq!(
        m.homed_fibers.iter().sum::<usize>(),
        0,
        "every fiber has finished: {m}"
    );
    assert!(
        m.stack_bytes_reserved > 0 && m.stack_bytes_committed > 0,
        "{m}"
    );
    assert!(m.stack_bytes_committed <= m.stack_bytes_reserved, "{m}");
    let text = m.to_string();
    for row in [
        "workers",
        "fibers",
        "steals",
        "homed fibers",
        "reactor",
        "timers pending",
        "stack memory",
    ] {
        assert!(text.contains(row), "{text}");
    }
}

/// Busy workers do not poll a reactor that has no sources (a syscall every 61 scheduling
/// decisions that could find nothing): a yield storm on a runtime without sockets leaves the
/// reactor's poll count nearly unchanged. (The parked workers' blocking polls and the monitor's
/// still count; with maintenance polls it grows by about 1 per 61 yields: 2,759 in one run.)
#[test]
fn busy_workers_skip_the_reactor_without_sources() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let before = rt.metrics().reactor_polls;
    rt.block_on(|| {
        let hs: Vec<_> = (0..100)
            .map(|_| {
                fil::spawn(|| {
                    for _ in 0..2_000 {
                        fil::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let polls = rt.metrics().reactor_polls - before;
    assert!(polls < 500, "{polls} reactor polls during a yield storm");
}

#[test]
fn dump_on_signal_rejects_bad_signals() {
    for bad in [0, libc::SIGKILL, libc::SIGSEGV, 10_000] {
        let e = Runtime::builder().dump_on_signal(bad).build().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
    }
}

/// In a child process (the signal's handler is process-wide): a runtime built with
/// `dump_on_signal(SIGUSR1)` prints its dump to stderr and keeps running.
#[test]
fn dump_on_signal_prints_and_keeps_running() {
    if std::env::var_os("FILAMENT_DUMP_CHILD").is_some() {
        let rt = Runtime::builder()
            .workers(1)
            .dump_on_signal(libc::SIGUSR1)
            .build()
            .unwrap();
        let h = rt.block_on(|| {
            fil::Builder::new()
                .name("napper")
                .spawn(|| fil::sleep(Duration::from_millis(400)))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: raising a signal whose handler the runtime installed.
        unsafe { libc::raise(libc::SIGUSR1) };
        h.join().unwrap();
        println!("child survived");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "dump_on_signal_prints_and_keeps_running",
            "--nocapture",
        ])
        .env("FILAMENT_DUMP_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(stdout.contains("child survived"), "{stdout}");
    assert!(stderr.contains("fiber dump on signal"), "{stderr}");
    assert!(stderr.contains("'napper' [parked]"), "{stderr}");
    assert!(stderr.contains("waiting on sleep at"), "{stderr}");
}

/// Fibers queued but not started are counted in the dump, not listed; once they run they are
/// listed, and once they end they are gone (the count too).
#[test]
fn dump_counts_fibers_that_have_not_started() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let (queued, handles) = rt.block_on(|| {
        // On one worker, fibers spawned by the running fiber wait until it parks or yields.
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let r = r.clone();
                fil::spawn(move || {
                    while !r.load(SeqCst) {
                        fil::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        (rt.dump(), handles)
    });
    assert_eq!(queued.not_started, 50, "{queued}");
    // Only the fiber taking the dump, listed through its worker (it has not suspended yet).
    assert_eq!(queued.fibers.len(), 1, "{queued}");
    assert_eq!(queued.fibers[0].state, FiberState::Running, "{queued}");
    assert!(
        queued.to_string().contains("50 not started yet"),
        "{queued}"
    );
    let start = Instant::now();
    loop {
        let dump = rt.dump();
        if dump.fibers.len() == 50 && dump.not_started == 0 {
            assert!(dump.fibers.iter().all(|f| f.state != FiberState::Running));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{dump}");
        std::thread::sleep(Duration::from_millis(5));
    }
    release.store(true, SeqCst);
    handles.into_iter().for_each(|h| h.join().unwrap());
    let dump = rt.dump();
    assert_eq!((dump.fibers.len(), dump.not_started), (0, 0), "{dump}");
}
