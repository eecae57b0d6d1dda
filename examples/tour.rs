//! A tour of filament in under 30 seconds: what it does, measured and checked.
//!
//! ```text
//! cargo run --release --example tour            # the full tour
//! cargo run --release --example tour -- --quick # a smoke run: about 1/20th, a second
//! ```
//!
//! Everything runs on one [`filament::Runtime`] (one worker per core), inside `block_on`:
//!
//! 1. **spawn**: 1,000,000 fibers, each adds 1 to an atomic; a `WaitGroup` waits for all. Time,
//!    ns per fiber, and the process's peak RSS (`VmHWM`: a process-wide peak, hence first).
//! 2. **skynet**: a fiber spawns 10 children, recursively, 6 levels deep; the 1,000,000 leaves
//!    return their number, inner fibers join and sum their children; the sum must be
//!    499999500000. Wall time.
//! 3. **pipeline**: 1,000,000 numbers through 4 fibers (source, `x*2`, `x+1`, sink) connected
//!    by bounded channels; idle workers steal the stages before they start, and the progress line
//!    says on how many workers they ran. The sink checks count and sum. Messages/s.
//! 4. **park**: 100,000 fibers each blocked on its own channel at once. RSS growth per parked
//!    fiber (its channel and join handle included) and the stack memory committed for them (they
//!    get a stack size of their own, 64 KiB, so their stacks are fresh rather than pages the
//!    earlier steps committed); then each is sent its number, and all are joined and checked.
//! 5. **echo**: a TCP echo server on an ephemeral 127.0.0.1 port (`filament::net`, a fiber per
//!    connection) and 100 client fibers doing 64-byte round trips for 2 seconds; every reply is
//!    checked. Round trips per second and latency percentiles.
//! 6. **native**: C's `labs` called 10,000,000 times through `filament::native` (the call runs
//!    on the worker's own stack), against the same loop calling it directly. ns per call.
//! 7. **metrics**: `Runtime::metrics()` at the end; no fiber may be left alive.
//!
//! A summary table follows. Every step checks its result: on a wrong result the tour prints what
//! went wrong and exits with status 1; a watchdog thread bounds every step's time, and on expiry
//! prints the runtime's fiber dump and exits with status 1 instead of hanging.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use filament::net::{TcpListener, TcpStream};

#[path = "../benches/common/proc_status.rs"]
mod proc_status;
use filament::sync::channel::{self, RecvTimeoutError};
use filament::sync::WaitGroup;
use filament::{JoinHandle, Runtime};
use proc_status::proc_status_kib;

const USAGE: &str = "\
tour: filament's features in under 30 seconds, measured and checked

USAGE: tour [--quick]

STEPS (each checks its result; numbers for the full tour):
    1 spawn     spawn 1,000,000 fibers that each add 1 to an atomic; wait with a WaitGroup.
                Shows ns per fiber and the process's peak RSS (VmHWM).
    2 skynet    10 children per fiber, 6 levels: 1,000,000 leaves return their number and
                parents sum their children's results (joins); checks 499999500000.
    3 pipeline  1,000,000 messages through 4 fibers (source, x*2, x+1, sink) linked by
                bounded channels, stolen by idle workers; shows messages per second.
    4 park      100,000 fibers blocked at once, each on its own channel; shows RSS and stack
                memory per parked fiber, then wakes and joins them all.
    5 echo      a TCP echo server on 127.0.0.1 (a fiber per connection) and 100 client fibers
                doing 64-byte round trips for 2 s; shows round trips/s and p99 latency.
    6 native    C's labs() called through filament::native from a fiber, against a direct
                call; shows ns per call.
    7 metrics   prints Runtime::metrics() and checks that no fiber is left alive.

OPTIONS:
    --quick     a smoke run of about a second: every step scaled down (about 1/20th,
                0.3 s of echo)
    -h, --help  print this help";

/// Exit status for a failed step.
const FAILURE: u8 = 1;
/// Exit status for bad arguments.
const USAGE_ERROR: u8 = 2;

/// The size of every step.
#[derive(Debug, Clone)]
struct Sizes {
    spawn_fibers: u64,
    skynet_levels: u32,
    pipeline_messages: u64,
    pipeline_capacity: usize,
    parked_fibers: u64,
    echo_clients: usize,
    echo_for: Duration,
    native_calls: u64,
    /// The longest any step may take before the watchdog declares it hung.
    step_limit: Duration,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            spawn_fibers: 1_000_000,
            skynet_levels: 6,
            pipeline_messages: 1_000_000,
            pipeline_capacity: 256,
            parked_fibers: 100_000,
            echo_clients: 100,
            echo_for: Duration::from_secs(2),
            native_calls: 10_000_000,
            step_limit: Duration::from_secs(60),
        }
    }

    /// About 1/20th of the full tour (skynet: 1/10th, as it grows by powers of ten); it takes
    /// about a second, even in a debug build.
    fn quick() -> Sizes {
        Sizes {
            spawn_fibers: 50_000,
            skynet_levels: 5,
            pipeline_messages: 50_000,
            pipeline_capacity: 256,
            parked_fibers: 5_000,
            echo_clients: 20,
            echo_for: Duration::from_millis(300),
            native_calls: 500_000,
            step_limit: Duration::from_secs(20),
        }
    }
}

/// One row of the summary table.
struct Row {
    step: &'static str,
    workload: String,
    result: String,
    /// More figures, for the progress line only.
    detail: String,
}

fn parse_args() -> Result<bool, String> {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--quick" => quick = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(quick)
}

fn main() -> ExitCode {
    let quick = match parse_args() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    if cfg!(debug_assertions) && !quick {
        eprintln!("note: a debug build; for representative figures run with --release");
    }

    let rt = match Runtime::builder().build() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("error: cannot start a filament runtime: {e}");
            return ExitCode::from(FAILURE);
        }
    };
    let watchdog = Watchdog::start(Arc::downgrade(&rt));
    println!(
        "filament tour{}: {} workers, one runtime for every step\n",
        if quick { " (quick)" } else { "" },
        rt.workers()
    );

    type Step = fn(&Runtime, &Sizes) -> Result<Row, String>;
    let steps: [(&str, Step); 6] = [
        ("spawn", spawn_step),
        ("skynet", skynet_step),
        ("pipeline", pipeline_step),
        ("park", park_step),
        ("echo", echo_step),
        ("native", native_step),
    ];
    let total = steps.len() + 1;
    let started = Instant::now();
    let mut rows = Vec::new();
    for (i, (name, step)) in steps.iter().enumerate() {
        print!("[{}/{total}] {name:<9}", i + 1);
        let _ = std::io::stdout().flush();
        watchdog.arm(name, sizes.step_limit);
        let t = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| step(&rt, &sizes)))
            .unwrap_or_else(|payload| Err(format!("panicked: {}", panic_message(&*payload))));
        match outcome {
            Ok(row) => {
                let detail = if row.detail.is_empty() {
                    String::new()
                } else {
                    format!("; {}", row.detail)
                };
                println!("{}{detail}  [{}]", row.result, secs(t.elapsed()));
                rows.push(row);
            }
            Err(e) => fail(name, &e),
        }
    }

    println!("[{total}/{total}] metrics  Runtime::metrics() after every step:\n");
    watchdog.arm("metrics", sizes.step_limit);
    match metrics_step(&rt) {
        Ok(metrics) => {
            for line in metrics.lines() {
                println!("    {line}");
            }
        }
        Err(e) => fail("metrics", &e),
    }

    println!(
        "\nsummary ({} run, {} workers, {} in all)\n",
        if quick { "quick" } else { "full" },
        rt.workers(),
        secs(started.elapsed())
    );
    print!("{}", table(&rows));

    watchdog.arm("shutdown", sizes.step_limit);
    drop(rt);
    watchdog.stop();
    ExitCode::SUCCESS
}

/// Reports a failed step and exits (without dropping the runtime: a broken fiber could keep its
/// shutdown waiting).
fn fail(step: &str, message: &str) -> ! {
    println!();
    let _ = std::io::stdout().flush();
    eprintln!("tour: step `{step}` FAILED: {message}");
    std::process::exit(FAILURE.into())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The steps.
// ---------------------------------------------------------------------------------------------

/// Step 1: spawn many tiny fibers, wait for all with a `WaitGroup`.
fn spawn_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let n = sizes.spawn_fibers;
    let (count, elapsed) = rt.block_on(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let wg = WaitGroup::new();
        let t = Instant::now();
        wg.add(n as usize);
        for _ in 0..n {
            let counter = counter.clone();
            let wg = wg.clone();
            filament::spawn(move || {
                counter.fetch_add(1, Relaxed);
                wg.done();
            });
        }
        wg.wait();
        (counter.load(Relaxed), t.elapsed())
    });
    if count != n {
        return Err(format!("{count} fibers ran, expected {n}"));
    }
    let peak = match proc_status_kib("VmHWM") {
        Some(kib) => format!("peak RSS {}", bytes(kib * 1024)),
        None => "peak RSS n/a".to_string(),
    };
    Ok(Row {
        step: "spawn",
        workload: format!("{} fibers, each adds 1 to an atomic", count_fmt(n)),
        result: format!("{:.0} ns/fiber ({}), {peak}", per(elapsed, n), ms(elapsed)),
        detail: String::new(),
    })
}

/// A skynet node: a leaf returns its number, an inner node joins its 10 children and sums them.
fn skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let child = size / 10;
    let handles: [JoinHandle<u64>; 10] = std::array::from_fn(|i| {
        let first = num + i as u64 * child;
        filament::spawn(move || skynet(first, child))
    });
    handles
        .into_iter()
        .map(|h| h.join().expect("a skynet fiber panicked"))
        .sum()
}

/// Step 2: skynet.
fn skynet_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let leaves = 10u64.pow(sizes.skynet_levels);
    let expected = leaves * (leaves - 1) / 2;
    let fibers: u64 = (0..=sizes.skynet_levels).map(|l| 10u64.pow(l)).sum();
    let (sum, elapsed) = rt.block_on(|| {
        let t = Instant::now();
        let sum = skynet(0, leaves);
        (sum, t.elapsed())
    });
    if sum != expected {
        return Err(format!("sum {sum}, expected {expected}"));
    }
    Ok(Row {
        step: "skynet",
        workload: format!(
            "{} fibers, {} levels, sum {} checked",
            count_fmt(fibers),
            sizes.skynet_levels,
            count_fmt(sum)
        ),
        result: format!("{} ({:.0} ns/fiber)", ms(elapsed), per(elapsed, fibers)),
        detail: String::new(),
    })
}

/// Step 3: source -> `x*2` -> `x+1` -> sink over bounded channels; the sink expects n
/// messages summing to n² (2·n(n-1)/2 + n).
fn pipeline_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let n = sizes.pipeline_messages;
    let cap = sizes.pipeline_capacity;
    let limit = sizes.step_limit;
    let steals_before = rt.metrics().steals;
    let (result, elapsed) = rt.block_on(|| {
        let t = Instant::now();
        let (tx0, rx0) = channel::bounded::<u64>(cap);
        let (tx1, rx1) = channel::bounded::<u64>(cap);
        let (tx2, rx2) = channel::bounded::<u64>(cap);
        let source = filament::spawn(move || {
            for i in 0..n {
                if tx0.send(i).is_err() {
                    break;
                }
            }
            worker_name()
        });
        let double = filament::spawn(move || {
            for x in rx0 {
                if tx1.send(x * 2).is_err() {
                    break;
                }
            }
            worker_name()
        });
        let increment = filament::spawn(move || {
            for x in rx1 {
                if tx2.send(x + 1).is_err() {
                    break;
                }
            }
            worker_name()
        });
        let sink = filament::spawn(move || {
            let (mut count, mut sum) = (0u64, 0u64);
            let result = loop {
                match rx2.recv_timeout(limit) {
                    Ok(x) => {
                        count += 1;
                        sum += x;
                    }
                    Err(RecvTimeoutError::Disconnected) => break Ok((count, sum)),
                    Err(RecvTimeoutError::Timeout) => {
                        break Err(format!("stalled after {count} messages"))
                    }
                }
            };
            (result, worker_name())
        });
        let (result, sink_worker) = match sink.join() {
            Ok(r) => r,
            Err(p) => return (Err(panic_message(&*p)), t.elapsed()),
        };
        let mut workers = vec![sink_worker];
        for h in [source, double, increment] {
            match h.join() {
                Ok(name) => workers.push(name),
                Err(p) => {
                    let e = format!("a stage panicked: {}", panic_message(&*p));
                    return (Err(e), t.elapsed());
                }
            }
        }
        workers.sort();
        workers.dedup();
        (result.map(|r| (r, workers.len())), t.elapsed())
    });
    let ((count, sum), workers) = result?;
    if count != n || sum != n * n {
        return Err(format!(
            "the sink got {count} messages summing to {sum}, expected {n} summing to {}",
            n * n
        ));
    }
    let steals = rt.metrics().steals - steals_before;
    Ok(Row {
        step: "pipeline",
        workload: format!(
            "{} messages, 4 fibers, 3 bounded({cap}) channels",
            count_fmt(n)
        ),
        result: format!(
            "{} messages/s ({})",
            rate(n as f64 / elapsed.as_secs_f64()),
            ms(elapsed)
        ),
        detail: format!(
            "the stages ran on {workers} worker{}; {steals} steals",
            if workers == 1 { "" } else { "s" }
        ),
    })
}

/// The name of the worker thread running the calling fiber (a started fiber stays on its
/// worker).
fn worker_name() -> String {
    thread::current().name().unwrap_or("?").to_string()
}

/// The stack size of step 4's fibers: a size no other step uses, so that their stacks come fresh
/// from the arenas, not from the pool of stacks the earlier steps committed, and the RSS growth
/// includes their stack pages.
const PARKED_STACK_SIZE: usize = 64 * 1024;

/// Step 4: many fibers parked at once, each on its own channel.
fn park_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let n = sizes.parked_fibers;
    let limit = sizes.step_limit;
    rt.block_on(|| {
        let before = rt.metrics();
        let rss_before = proc_status_kib("VmRSS");
        let (committed_before, parks_before) = (before.stack_bytes_committed, before.fiber_parks);
        let t = Instant::now();
        let ready = WaitGroup::new();
        ready.add(n as usize);
        let mut senders = Vec::with_capacity(n as usize);
        let mut handles = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (tx, rx) = channel::bounded::<u64>(1);
            let ready = ready.clone();
            senders.push(tx);
            let fiber = filament::Builder::new()
                .stack_size(PARKED_STACK_SIZE)
                .spawn(move || {
                    ready.done();
                    rx.recv().ok()
                })
                .map_err(|e| format!("cannot spawn a parked fiber: {e}"))?;
            handles.push(fiber);
        }
        ready.wait();
        // Each fiber parks once in `recv` (nothing is sent yet). The park counter (cheap to read,
        // and allocation-free, unlike a dump) reaches `n` when about all of them are parked:
        // measure then; the dump below checks that every one of them is.
        let deadline = Instant::now() + limit / 2;
        while rt.metrics().fiber_parks - parks_before < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {n} fibers parked within {}",
                    rt.metrics().fiber_parks - parks_before,
                    secs(limit / 2)
                ));
            }
            filament::sleep(Duration::from_millis(2));
        }
        let parked_in = t.elapsed();
        let rss_after = proc_status_kib("VmRSS");
        let committed = rt.metrics().stack_bytes_committed;
        loop {
            let (_, _, parked) = rt.dump().counts();
            if parked as u64 >= n {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the dump shows {parked} parked fibers after {}, expected >= {n}",
                    secs(limit / 2)
                ));
            }
            filament::sleep(Duration::from_millis(2));
        }
        let t = Instant::now();
        for (i, tx) in senders.iter().enumerate() {
            tx.send(i as u64)
                .map_err(|_| format!("fiber {i} dropped its channel"))?;
        }
        let mut sum = 0;
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Some(v)) if v == i as u64 => sum += v,
                Ok(got) => return Err(format!("fiber {i} received {got:?}")),
                Err(p) => return Err(format!("fiber {i} panicked: {}", panic_message(&*p))),
            }
        }
        let released_in = t.elapsed();
        if sum != n * (n - 1) / 2 {
            return Err(format!("released fibers summed to {sum}"));
        }

        let rss = match (rss_before, rss_after) {
            (Some(b), Some(a)) => format!("{}/fiber RSS", bytes((a.saturating_sub(b) * 1024) / n)),
            _ => "RSS n/a".to_string(),
        };
        let stacks = format!(
            "stacks {}/fiber ({} committed)",
            bytes(committed.saturating_sub(committed_before) as u64 / n),
            bytes(committed as u64)
        );
        Ok(Row {
            step: "park",
            workload: format!(
                "{} fibers parked at once, each on its own channel",
                count_fmt(n)
            ),
            result: format!("{rss}, {stacks}"),
            detail: format!(
                "all parked after {}, woken and joined in {}",
                ms(parked_in),
                ms(released_in)
            ),
        })
    })
}

/// The echo server's connection fiber: echoes until EOF. It needs no read timeout: a client
/// gives up after its own timeout, and its connection closes.
fn serve(mut stream: TcpStream) -> std::io::Result<u64> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    let mut echoed = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(echoed);
        }
        stream.write_all(&buf[..n])?;
        echoed += n as u64;
    }
}

/// One echo client: 64-byte round trips until `until`; returns each round trip's latency (ns).
fn echo_client(addr: SocketAddr, id: usize, until: Instant) -> Result<Vec<u32>, String> {
    let err = |what: &str, e: std::io::Error| format!("client {id}: {what}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| err("connect", e))?;
    stream.set_nodelay(true).map_err(|e| err("nodelay", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| err("read timeout", e))?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| err("write timeout", e))?;
    let mut latencies = Vec::with_capacity(4096);
    let mut request = [0u8; 64];
    let mut reply = [0u8; 64];
    let mut seq = 0u64;
    while Instant::now() < until {
        request[..8].copy_from_slice(&(id as u64).to_le_bytes());
        request[8..16].copy_from_slice(&seq.to_le_bytes());
        request[16..].fill(seq as u8);
        let t = Instant::now();
        stream.write_all(&request).map_err(|e| err("write", e))?;
        stream.read_exact(&mut reply).map_err(|e| err("read", e))?;
        latencies.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        if reply != request {
            return Err(format!("client {id}: round trip {seq} came back altered"));
        }
        seq += 1;
    }
    Ok(latencies)
}

/// Step 5: an echo server and its clients, all fibers of the same runtime.
fn echo_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let clients = sizes.echo_clients;
    let run_for = sizes.echo_for;
    rt.block_on(|| {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            filament::spawn(move || -> Result<(usize, u64), String> {
                let mut connections = Vec::new();
                loop {
                    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
                    if stop.load(SeqCst) {
                        break;
                    }
                    connections.push(filament::spawn(move || serve(stream)));
                }
                let accepted = connections.len();
                let mut echoed = 0;
                for c in connections {
                    match c.join() {
                        Ok(Ok(n)) => echoed += n,
                        Ok(Err(e)) => return Err(format!("server connection: {e}")),
                        Err(p) => return Err(format!("server panicked: {}", panic_message(&*p))),
                    }
                }
                Ok((accepted, echoed))
            })
        };

        let t = Instant::now();
        let until = t + run_for;
        let handles: Vec<_> = (0..clients)
            .map(|id| filament::spawn(move || echo_client(addr, id, until)))
            .collect();
        let mut latencies = Vec::new();
        let mut first_error = None;
        for h in handles {
            match h.join() {
                Ok(Ok(l)) => latencies.extend(l),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(p) => {
                    first_error.get_or_insert(format!("client panicked: {}", panic_message(&*p)));
                }
            }
        }
        let elapsed = t.elapsed();
        // Wake the accept loop with one last connection so that it sees `stop`.
        stop.store(true, SeqCst);
        drop(
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("cannot stop the server: {e}"))?,
        );
        let (accepted, echoed) = server
            .join()
            .map_err(|p| format!("server panicked: {}", panic_message(&*p)))??;
        if let Some(e) = first_error {
            return Err(e);
        }
        let trips = latencies.len() as u64;
        if accepted != clients {
            return Err(format!(
                "the server accepted {accepted} connections, expected {clients}"
            ));
        }
        if echoed != trips * 64 {
            return Err(format!(
                "the server echoed {echoed} bytes for {trips} round trips of 64 bytes"
            ));
        }
        if trips == 0 {
            return Err("no round trip completed".to_string());
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
            Duration::from_nanos(latencies[i - 1] as u64)
        };
        Ok(Row {
            step: "echo",
            workload: format!(
                "{clients} client fibers, 64-byte round trips, {}",
                secs(run_for)
            ),
            result: format!(
                "{} round trips/s, p50 {}, p99 {}",
                rate(trips as f64 / elapsed.as_secs_f64()),
                latency(pct(0.50)),
                latency(pct(0.99))
            ),
            detail: format!(
                "{} round trips checked, p99.9 {}, max {}",
                count_fmt(trips),
                latency(pct(0.999)),
                latency(pct(1.0))
            ),
        })
    })
}

extern "C" {
    /// C's `labs` (libc).
    fn labs(x: libc::c_long) -> libc::c_long;
}

/// Step 6: C calls through `native`, against direct calls.
fn native_step(rt: &Runtime, sizes: &Sizes) -> Result<Row, String> {
    let n = sizes.native_calls;
    let half = (n / 2) as libc::c_long;
    // The expected sum of |x| for x in -half..n-half.
    let expected: u64 = (0..n as libc::c_long)
        .map(|i| (i - half).unsigned_abs())
        .sum();
    rt.block_on(|| {
        let t = Instant::now();
        let mut via_native = 0u64;
        for i in 0..n as libc::c_long {
            let x = std::hint::black_box(i - half);
            // SAFETY: `labs` is a pure libc function, defined for every value but LONG_MIN,
            // which `x` never is (|x| <= n/2).
            via_native += filament::native(|| unsafe { labs(x) }) as u64;
        }
        let native_time = t.elapsed();

        let t = Instant::now();
        let mut direct = 0u64;
        for i in 0..n as libc::c_long {
            let x = std::hint::black_box(i - half);
            // SAFETY: as above.
            direct += unsafe { labs(x) } as u64;
        }
        let direct_time = t.elapsed();

        if via_native != expected || direct != expected {
            return Err(format!(
                "sums of labs(): {via_native} via native, {direct} direct, expected {expected}"
            ));
        }
        Ok(Row {
            step: "native",
            workload: format!("{} calls of C's labs() from a fiber", count_fmt(n)),
            result: format!(
                "{:.1} ns/call via filament::native (direct call: {:.1} ns)",
                per(native_time, n),
                per(direct_time, n)
            ),
            detail: String::new(),
        })
    })
}

/// Step 7: the runtime's metrics; every fiber must have finished by now.
fn metrics_step(rt: &Runtime) -> Result<String, String> {
    // The last fibers may still be finishing for a moment after their result was delivered.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = rt.metrics();
        if m.fibers_alive == 0 && m.fibers_spawned == m.fibers_finished {
            return Ok(m.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "fibers still alive after every step:\n{m}\n{}",
                truncated_dump(rt, 40)
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// The watchdog: no step may hang the tour.
// ---------------------------------------------------------------------------------------------

/// A thread that exits the process, after printing the fiber dump, when the current step runs
/// past its limit.
struct Watchdog {
    shared: Arc<WatchState>,
    thread: Option<thread::JoinHandle<()>>,
}

struct WatchState {
    /// The step being watched and its deadline; `None` once stopped.
    step: Mutex<Option<(String, Instant, Duration)>>,
    changed: Condvar,
}

impl Watchdog {
    fn start(rt: Weak<Runtime>) -> Watchdog {
        let shared = Arc::new(WatchState {
            step: Mutex::new(Some(("start".to_string(), Instant::now(), Duration::MAX))),
            changed: Condvar::new(),
        });
        let state = shared.clone();
        let thread = thread::Builder::new()
            .name("tour-watchdog".into())
            .spawn(move || {
                let mut step = state.step.lock().unwrap();
                loop {
                    let Some((name, started, limit)) = step.clone() else {
                        return;
                    };
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        drop(step);
                        eprintln!(
                            "\ntour: step `{name}` did not finish within {}: it hangs",
                            secs(limit)
                        );
                        if let Some(rt) = rt.upgrade() {
                            eprintln!("{}\n{}", rt.metrics(), truncated_dump(&rt, 60));
                        }
                        std::process::exit(FAILURE.into());
                    }
                    step = state.changed.wait_timeout(step, left).unwrap().0;
                }
            })
            .expect("start the watchdog thread");
        Watchdog {
            shared,
            thread: Some(thread),
        }
    }

    /// Watches a new step, which has `limit` to finish.
    fn arm(&self, name: &str, limit: Duration) {
        *self.shared.step.lock().unwrap() = Some((name.to_string(), Instant::now(), limit));
        self.shared.changed.notify_all();
    }

    fn stop(mut self) {
        *self.shared.step.lock().unwrap() = None;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The runtime's fiber dump, cut after `max_lines` lines.
fn truncated_dump(rt: &Runtime, max_lines: usize) -> String {
    let dump = rt.dump().to_string();
    let lines: Vec<&str> = dump.lines().collect();
    let mut out = lines[..lines.len().min(max_lines)].join("\n");
    if lines.len() > max_lines {
        let _ = write!(out, "\n... ({} more lines)", lines.len() - max_lines);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Formatting and /proc.
// ---------------------------------------------------------------------------------------------

/// The summary table, columns aligned.
fn table(rows: &[Row]) -> String {
    let header = ("step", "workload", "result");
    let width = |column: fn(&Row) -> &str, title: &str| {
        rows.iter()
            .map(|r| column(r).len())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let w0 = width(|r| r.step, header.0);
    let w1 = width(|r| &r.workload, header.1);
    let w2 = width(|r| &r.result, header.2);
    let mut out = String::new();
    let _ = writeln!(out, "  {:<w0$}  {:<w1$}  {}", header.0, header.1, header.2);
    let _ = writeln!(
        out,
        "  {}  {}  {}",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2)
    );
    for r in rows {
        let _ = writeln!(out, "  {:<w0$}  {:<w1$}  {}", r.step, r.workload, r.result);
    }
    out
}

/// Nanoseconds per item.
fn per(elapsed: Duration, items: u64) -> f64 {
    elapsed.as_nanos() as f64 / items.max(1) as f64
}

/// `1234567` as `1,234,567`.
fn count_fmt(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count with a binary unit.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A per-second rate: `85.3k`, `2.41M`.
fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2}M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1}k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A latency in µs below a millisecond, else in ms.
fn latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
