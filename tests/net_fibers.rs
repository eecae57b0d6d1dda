//! filament-net inside fibers: a fiber-per-connection echo server under 1,000 concurrent
//! connections from plain threads, and 10,000 fibers blocked in accept/read costing no CPU.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use filament::net::{TcpListener, UnixStream};
use filament::Runtime;

/// Aborts the process if the test is still running after `limit` (a hang must not stall CI).
fn watchdog(name: &'static str, limit: Duration) -> impl Drop {
    struct Done(Arc<AtomicUsize>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(1, SeqCst);
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    thread::spawn(move || {
        let start = Instant::now();
        while d.load(SeqCst) == 0 {
            if start.elapsed() > limit {
                eprintln!("{name}: still running after {limit:?}; aborting");
                std::process::abort();
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    Done(done)
}

fn pattern(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(131) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

/// The tests of this file run one at a time: the idle test measures the whole process's CPU
/// time, which a concurrently running test would add to.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU time (user + system) of the whole process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn thousand_connections_fiber_per_connection_echo() {
    let _serial = one_at_a_time();
    let _w = watchdog("thousand_connections", Duration::from_secs(120));
    const THREADS: usize = 20;
    const PER_THREAD: usize = 50; // 1,000 connections, all open at once
    const ROUNDS: usize = 5;
    let rt = Runtime::builder().workers(2).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let s2 = served.clone();
    let server = rt.spawn(move || {
        let mut fibers = Vec::new();
        for _ in 0..THREADS * PER_THREAD {
            let (mut s, _) = listener.accept().unwrap();
            let served = s2.clone();
            fibers.push(filament::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut n_total = 0;
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                    n_total += n;
                }
                served.fetch_add(1, SeqCst);
                n_total
            }));
        }
        fibers.into_iter().map(|f| f.join().unwrap()).sum::<usize>()
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut conns: Vec<std::net::TcpStream> = (0..PER_THREAD)
                        .map(|_| std::net::TcpStream::connect(addr).unwrap())
                        .collect();
                    let mut sent = 0;
                    for r in 0..ROUNDS {
                        let msgs: Vec<Vec<u8>> = (0..PER_THREAD)
                            .map(|c| pattern(t * 100_000 + c * 100 + r, 1 + (t + c + r * 7) % 3000))
                            .collect();
                        for (c, m) in conns.iter_mut().zip(&msgs) {
                            c.write_all(m).unwrap();
                        }
                        for (c, m) in conns.iter_mut().zip(&msgs) {
                            let mut back = vec![0u8; m.len()];
                            c.read_exact(&mut back).unwrap();
                            assert_eq!(&back, m);
                            sent += m.len();
                        }
                    }
                    for c in &conns {
                        c.shutdown(Shutdown::Write).unwrap();
                    }
                    for c in &mut conns {
                        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
                    }
                    sent
                })
                .unwrap()
        })
        .collect();
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let echoed = server.join().unwrap();
    assert_eq!(echoed, sent);
    assert_eq!(served.load(SeqCst), THREADS * PER_THREAD);
    eprintln!(
        "1,000 connections x {ROUNDS} rounds, {sent} bytes echoed in {:?}",
        start.elapsed()
    );
}

#[test]
fn ten_thousand_blocked_fibers_cost_no_cpu() {
    let _serial = one_at_a_time();
    let _w = watchdog("ten_thousand_blocked", Duration::from_secs(120));
    const ACCEPTORS: usize = 100;
    const PAIRS: usize = 100;
    const READERS_PER_PAIR: usize = 99; // 100 + 100 * 99 = 10,000 blocked fibers
    let rt = Runtime::builder().workers(2).build().unwrap();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let blocked = Arc::new(AtomicUsize::new(0));
    let mut fibers = Vec::new();
    for _ in 0..ACCEPTORS {
        let (l, b) = (listener.clone(), blocked.clone());
        fibers.push(rt.spawn(move || {
            b.fetch_add(1, SeqCst);
            let (s, _) = l.accept().unwrap();
            drop(s);
            0usize
        }));
    }
    let mut writers = Vec::new();
    for p in 0..PAIRS {
        let (a, w) = UnixStream::pair().unwrap();
        let a = Arc::new(a);
        writers.push(w);
        for _ in 0..READERS_PER_PAIR {
            let (a, b) = (a.clone(), blocked.clone());
            fibers.push(rt.spawn(move || {
                b.fetch_add(1, SeqCst);
                let mut buf = [0u8; 1];
                // Everyone wakes at the writer's close: EOF (or one byte for a few).
                let n = (&*a).read(&mut buf).unwrap();
                assert!(n == 0 || buf[0] == p as u8);
                1usize
            }));
        }
    }
    let total = ACCEPTORS + PAIRS * READERS_PER_PAIR;
    let t0 = Instant::now();
    while blocked.load(SeqCst) < total {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "fibers did not start"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // Let the last ones reach their park.
    thread::sleep(Duration::from_millis(300));
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    eprintln!("{total} fibers blocked: {cpu:?} CPU over {wall:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "{total} blocked fibers burned {cpu:?} of CPU in {wall:?}; runtime:\n{}",
        rt.metrics()
    );
    // Release everyone: connections for the acceptors, a byte and a close for the readers.
    let clients: Vec<_> = (0..ACCEPTORS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for (p, mut w) in writers.into_iter().enumerate() {
        w.write_all(&[p as u8]).unwrap();
        drop(w);
    }
    let done: usize = fibers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(done, PAIRS * READERS_PER_PAIR);
    drop(clients);
}

#[test]
fn fiber_read_timeout_and_cancel_while_blocked() {
    let _serial = one_at_a_time();
    let _w = watchdog("fiber_timeout_cancel", Duration::from_secs(60));
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let a = Arc::new(a);
    // A read timeout in a fiber is served by the runtime's timer.
    let a2 = a.clone();
    let took = rt.block_on(move || {
        a2.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let e = (&*a2).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        a2.set_read_timeout(None).unwrap();
        start.elapsed()
    });
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(600),
        "{took:?}"
    );
    // A fiber blocked in read unwinds when cancelled; the socket stays usable afterwards.
    let a3 = a.clone();
    let returned = Arc::new(AtomicUsize::new(0));
    let r2 = returned.clone();
    let blocked = rt.spawn(move || {
        let _ = (&*a3).read(&mut [0u8; 4]);
        r2.store(1, SeqCst);
    });
    thread::sleep(Duration::from_millis(100));
    blocked.cancel();
    assert!(
        blocked.join().is_err(),
        "a cancelled fiber reports an error"
    );
    let a4 = a.clone();
    let reader = rt.spawn(move || {
        let mut buf = [0u8; 4];
        (&*a4).read_exact(&mut buf).unwrap();
        buf
    });
    thread::sleep(Duration::from_millis(50));
    (&b).write_all(b"ok!!").unwrap();
    assert_eq!(&reader.join().unwrap(), b"ok!!");
}

/// Busy workers look at the reactor between fibers (`maintenance`) while sockets are registered:
/// a socket's readiness reaches its fiber while every worker runs a yield loop that never parks.
/// The latency bound is loose (the monitor also polls every 2 ms when no worker blocks in the
/// reactor); what must not happen is a reader left waiting until the yielders stop.
#[test]
fn readiness_reaches_a_fiber_while_every_worker_is_busy() {
    let _serial = one_at_a_time();
    let _w = watchdog("readiness_while_busy", Duration::from_secs(60));
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let stop = Arc::new(AtomicUsize::new(0));
    let yielders: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(move || {
                let mut n = 0u64;
                while stop.load(SeqCst) == 0 {
                    filament::yield_now();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let s2 = stop.clone();
    let reader = rt.spawn(move || {
        let mut buf = [0u8; 2];
        (&a).read_exact(&mut buf).unwrap();
        let got = Instant::now();
        s2.store(1, SeqCst);
        (buf, got)
    });
    thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    (&b).write_all(b"hi").unwrap();
    let (buf, got) = reader.join().unwrap();
    assert_eq!(&buf, b"hi");
    let latency = got.duration_since(sent);
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    for y in yielders {
        assert!(y.join().unwrap() > 0);
    }
}
