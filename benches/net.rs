//! Network benchmark (BENCHMARKS.md: echo), a filament echo server against a tokio one.
//!
//! Run with `cargo bench --bench net`.
//!
//! Two TCP echo servers on 127.0.0.1 (ephemeral ports), each on its own runtime with one worker
//! per core: filament (`filament::net`, one fiber per connection, plain blocking `read` /
//! `write_all`) and tokio (one task per connection, `AsyncReadExt::read` / `write_all`). Both
//! read into a 4 KiB buffer and set `TCP_NODELAY`.
//!
//! **The load client** is the same code for both servers, so the comparison is fair: 100
//! connections (std `TcpStream`s, non-blocking, `TCP_NODELAY`), split over 2 plain OS threads
//! (50 each), each thread driving its connections with its own level-triggered epoll (`libc`).
//! Every connection keeps exactly one 64-byte request in flight: it writes a request (carrying a
//! sequence number), waits until the 64-byte echo is back, checks it byte for byte, records the
//! round trip's latency (write to last byte read), and sends the next. A few event-driven threads
//! rather than 100 blocking threads: on this 2-core machine the client shares the CPUs with the
//! server, and 100 client threads would spend most of the CPU on their own wake-ups (one futex /
//! scheduler round per round trip) instead of batching many ready sockets per `epoll_wait`.
//!
//! Two measurements per server:
//! * criterion (`echo/filament`, `echo/tokio`): one iteration = every connection does 100 round
//!   trips (10,000 in all, counted and checked); throughput 10,000 elements, so `thrpt` is round
//!   trips per second.
//! * a fixed 3 s run that records every round trip's latency and prints one line to stderr:
//!   `echo filament: 123456 rt/s p50 0.40 ms p99 1.23 ms max 5.00 ms (370368 rt in 3.00 s)`
//!   (p99 cannot come from criterion). Both lines are printed again at the end.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 100;
const CLIENT_THREADS: usize = 2;
const MSG: usize = 64;
const RT_PER_CONN_PER_ITER: u64 = 100;
const FIXED_RUN: Duration = Duration::from_secs(3);
/// The client gives up (panics with the connection states) after this long without any event.
const STALL: Duration = Duration::from_secs(10);

mod common;
use common::runtimes;

// ---------------------------------------------------------------------------------------------
// The servers

/// Starts the filament echo server: an accept fiber, and a fiber per connection.
fn start_filament_server(rt: &filament::Runtime) -> SocketAddr {
    let listener = filament::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    rt.spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.expect("accept");
            stream.set_nodelay(true).unwrap();
            filament::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Starts the tokio echo server: an accept task, and a task per connection.
fn start_tokio_server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The load client (the same for both servers)

/// A minimal level-triggered epoll instance.
struct Epoll {
    fd: RawFd,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the returned fd is owned by the `Epoll`.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    /// Watches `fd` for readability, reporting `token` with its events.
    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `self.fd` is our open epoll fd, `fd` an open socket of the caller, and `event`
        // a valid epoll_event that the kernel only reads during the call.
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout`; returns the number of entries filled in `events`.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a valid, writable buffer of at least `max` epoll_events, and
        // `self.fd` is our open epoll fd.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), max, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: `self.fd` is an fd this `Epoll` owns and closes exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// One client connection with its request in flight.
struct Conn {
    stream: std::net::TcpStream,
    req: [u8; MSG],
    resp: [u8; MSG],
    /// Bytes of the current echo received so far.
    got: usize,
    seq: u64,
    sent_at: Instant,
    /// A request is out and its echo not complete.
    in_flight: bool,
    /// Round trips completed in the current `drive` call.
    done: u64,
    /// Per-round-trip latencies (ns) of the runs that record them.
    latencies: Vec<u64>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_nonblocking(true).unwrap();
        Conn {
            stream,
            req: [0; MSG],
            resp: [0; MSG],
            got: 0,
            seq: 0,
            sent_at: Instant::now(),
            in_flight: false,
            done: 0,
            latencies: Vec::new(),
        }
    }

    /// Writes the next request (64 bytes: the sequence number, then a filler derived from it).
    fn send(&mut self) {
        self.seq += 1;
        self.req = [(self.seq % 251) as u8; MSG];
        self.req[..8].copy_from_slice(&self.seq.to_le_bytes());
        self.got = 0;
        self.in_flight = true;
        self.sent_at = Instant::now();
        let mut off = 0;
        while off < MSG {
            match (&self.stream).write(&self.req[off..]) {
                Ok(0) => panic!("echo client: the server closed the connection"),
                Ok(n) => off += n,
                // A 64-byte write into an empty socket buffer practically never blocks.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("echo client: write: {e}"),
            }
        }
    }

    /// Reads what is available; true once the whole echo is in (and checked).
    fn receive(&mut self) -> bool {
        while self.got < MSG {
            match (&self.stream).read(&mut self.resp[self.got..]) {
                Ok(0) => panic!("echo client: the server closed the connection"),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("echo client: read: {e}"),
            }
        }
        assert_eq!(self.resp, self.req, "echo client: wrong echo");
        self.in_flight = false;
        true
    }
}

/// When a connection stops sending.
#[derive(Clone, Copy)]
enum Stop {
    /// After this many round trips.
    Count(u64),
    /// At the first completed round trip after this instant.
    At(Instant),
}

impl Stop {
    fn more(self, conn: &Conn) -> bool {
        match self {
            Stop::Count(n) => conn.done < n,
            Stop::At(t) => Instant::now() < t,
        }
    }
}

/// Drives `conns` (one client thread's share) until each has stopped; returns the round trips.
fn drive(conns: &mut [Conn], stop: Stop, record: bool) -> u64 {
    let epoll = Epoll::new().expect("epoll_create1");
    let mut active = 0;
    for (i, conn) in conns.iter_mut().enumerate() {
        epoll
            .add(conn.stream.as_raw_fd(), i as u64)
            .expect("epoll_ctl");
        conn.done = 0;
        if stop.more(conn) {
            conn.send();
            active += 1;
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len()];
    let mut last_event = Instant::now();
    while active > 0 {
        let n = epoll
            .wait(&mut events, Duration::from_millis(500))
            .expect("epoll_wait");
        if n == 0 {
            if last_event.elapsed() > STALL {
                let waiting: Vec<_> = conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.in_flight)
                    .map(|(i, c)| (i, c.seq, c.got))
                    .collect();
                panic!(
                    "echo client: no reply for {STALL:?}; {active} connections waiting \
                     (index, seq, bytes received): {waiting:?}"
                );
            }
            continue;
        }
        last_event = Instant::now();
        for event in &events[..n] {
            let token = event.u64;
            let conn = &mut conns[token as usize];
            if !conn.receive() {
                continue;
            }
            if record {
                conn.latencies
                    .push(conn.sent_at.elapsed().as_nanos() as u64);
            }
            conn.done += 1;
            if stop.more(conn) {
                conn.send();
            } else {
                active -= 1;
            }
        }
    }
    conns.iter().map(|c| c.done).sum()
}

/// 100 connections to one server, split over `CLIENT_THREADS` threads.
struct Client {
    shares: Vec<Vec<Conn>>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let mut shares: Vec<Vec<Conn>> = (0..CLIENT_THREADS).map(|_| Vec::new()).collect();
        for i in 0..CONNECTIONS {
            shares[i % CLIENT_THREADS].push(Conn::connect(addr));
        }
        Client { shares }
    }

    /// Runs every share on its own thread; returns the total round trips.
    fn run(&mut self, stop: Stop, record: bool) -> u64 {
        std::thread::scope(|s| {
            let threads: Vec<_> = self
                .shares
                .iter_mut()
                .map(|share| s.spawn(move || drive(share, stop, record)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        })
    }

    /// A fixed-duration run that records latencies; returns the summary line.
    fn fixed_run(&mut self, name: &str) -> String {
        for conn in self.shares.iter_mut().flatten() {
            conn.latencies.clear();
        }
        let start = Instant::now();
        let total = self.run(Stop::At(start + FIXED_RUN), true);
        let elapsed = start.elapsed();
        let mut latencies: Vec<u64> = self
            .shares
            .iter_mut()
            .flatten()
            .flat_map(|c| c.latencies.drain(..))
            .collect();
        assert_eq!(latencies.len() as u64, total, "one latency per round trip");
        assert!(total > 0, "no round trip completed in {FIXED_RUN:?}");
        latencies.sort_unstable();
        // Nearest-rank percentile.
        let pct = |p: f64| {
            let rank = ((latencies.len() as f64) * p).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1] as f64 / 1e6
        };
        format!(
            "echo {name}: {:.0} rt/s p50 {:.2} ms p99 {:.2} ms max {:.2} ms \
             ({total} rt over {CONNECTIONS} connections in {:.2} s)",
            total as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            elapsed.as_secs_f64(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The bench

fn echo(c: &mut Criterion) {
    let rts = runtimes();
    let servers = [
        ("filament", start_filament_server(&rts.filament)),
        ("tokio", start_tokio_server(&rts.tokio)),
    ];
    let per_iter = RT_PER_CONN_PER_ITER * CONNECTIONS as u64;
    let mut group = c.benchmark_group("echo");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(per_iter));
    let mut summary = Vec::new();
    for (name, addr) in servers {
        let mut client = Client::connect(addr);
        // Every connection accepted and served once before measuring.
        assert_eq!(client.run(Stop::Count(10), false), 10 * CONNECTIONS as u64);
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = client.run(Stop::Count(RT_PER_CONN_PER_ITER), false);
                assert_eq!(n, per_iter);
            });
        });
        let line = client.fixed_run(name);
        eprintln!("{line}");
        summary.push(line);
        // Dropping the client closes its connections; the server's fibers/tasks see EOF.
    }
    group.finish();
    for line in summary {
        eprintln!("{line}");
    }
}

criterion_group!(benches, echo);
criterion_main!(benches);
