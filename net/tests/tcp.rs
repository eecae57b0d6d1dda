//! TCP on OS threads, with and without a reactor.

mod common;

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use common::{both, pattern, Env};
use filament_net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(60);

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A server thread that echoes every byte of one connection until EOF.
fn echo_once(env: &Env, l: TcpListener) -> std::thread::JoinHandle<u64> {
    env.spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let (mut r, mut w) = (s.try_clone().unwrap(), &mut s);
        io::copy(&mut r, &mut w).unwrap()
    })
}

#[test]
fn echo_many_messages_every_byte_checked() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let server = echo_once(env, l);
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        let mut total = 0u64;
        for i in 0..2000 {
            let msg = pattern(i, 1 + (i * 37) % 3000);
            c.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg, "message {i}");
            total += msg.len() as u64;
        }
        // A big message: writes fill the socket buffers and park while a second handle reads.
        let big = pattern(9999, 4 << 20);
        let writer = {
            let c2 = c.try_clone().unwrap();
            let big = big.clone();
            env.spawn(move || {
                (&c2).write_all(&big).unwrap();
                c2.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == big, "big message differs");
        total += big.len() as u64;
        assert_eq!(server.join().unwrap(), total);
        env.assert_reactor_used();
    });
}

#[test]
fn vectored_io_and_peek() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let server = echo_once(env, l);
        let mut c = TcpStream::connect(addr).unwrap();
        let n = c
            .write_vectored(&[IoSlice::new(b"hello "), IoSlice::new(b"world")])
            .unwrap();
        assert!(n > 0);
        c.write_all(&b"hello world"[n..]).unwrap();
        let mut p = [0u8; 5];
        let k = c.peek(&mut p).unwrap();
        assert!(k >= 1 && p[..k] == b"hello"[..k]);
        let (mut a, mut b) = ([0u8; 6], [0u8; 5]);
        let mut got = 0;
        while got < 11 {
            let mut bufs = [
                io::IoSliceMut::new(&mut a[got.min(6)..]),
                io::IoSliceMut::new(&mut b[got.saturating_sub(6)..]),
            ];
            got += c.read_vectored(&mut bufs).unwrap();
        }
        assert_eq!((&a, &b), (b"hello ", b"world"));
        drop(c);
        assert_eq!(server.join().unwrap(), 11);
    });
}

#[test]
fn hundred_plus_concurrent_connections() {
    both(LIMIT, |env| {
        const N: usize = 128;
        let (l, addr) = listener();
        let e = env.clone();
        let server = env.spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..N {
                let (mut s, _) = l.accept().unwrap();
                handlers.push(e.spawn(move || {
                    let r = s.try_clone().unwrap();
                    io::copy(&mut &r, &mut s).unwrap()
                }));
            }
            handlers.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        let clients: Vec<_> = (0..N)
            .map(|k| {
                env.spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    let mut sent = 0u64;
                    for i in 0..20 {
                        let msg = pattern(k * 1000 + i, 100 + (k * 13 + i * 101) % 2000);
                        c.write_all(&msg).unwrap();
                        let mut back = vec![0; msg.len()];
                        c.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg);
                        sent += msg.len() as u64;
                    }
                    sent
                })
            })
            .collect();
        let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(server.join().unwrap(), sent);
        env.assert_reactor_used();
    });
}

fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd, valid pointer to a linger struct of the length passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn peer_reset_mid_message_is_an_error_or_eof_not_a_hang() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let server = env.spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut half = [0u8; 10];
            s.read_exact(&mut half).unwrap();
            // Half of a 20-byte reply, then an abortive close (RST).
            s.write_all(&[7u8; 10]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            set_linger_zero(&s);
            drop(s);
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[1u8; 10]).unwrap();
        let start = Instant::now();
        let mut reply = [0u8; 20];
        let r = c.read_exact(&mut reply);
        let e = r.expect_err("the reply is cut short");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ),
            "{e:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        server.join().unwrap();
        // Writing to a reset connection fails too (eventually), it does not hang.
        let mut failed = false;
        for _ in 0..100 {
            if c.write(&[0u8; 1024]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    });
}

#[test]
fn half_close_peer_reads_eof_and_still_writes_back() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let server = env.spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap(); // ends at the client's FIN
            s.write_all(b"got: ").unwrap();
            s.write_all(&got).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"request").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "got: request");
        server.join().unwrap();
    });
}

#[test]
fn read_timeout_is_timed_out_within_tolerance() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(c.read_timeout().unwrap(), None);
        let zero = c.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(zero.kind(), io::ErrorKind::InvalidInput);
        let t = Duration::from_millis(150);
        c.set_read_timeout(Some(t)).unwrap();
        // The kernel keeps the timeout in clock ticks, so it reads back rounded (as in std).
        let stored = c.read_timeout().unwrap().unwrap();
        assert!(
            stored >= t && stored <= t + Duration::from_millis(10),
            "{stored:?}"
        );
        // Clones share the timeout, as in std.
        assert_eq!(c.try_clone().unwrap().read_timeout().unwrap(), Some(stored));
        let start = Instant::now();
        let e = (&c).read(&mut [0u8; 8]).unwrap_err();
        let took = start.elapsed();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{}", env.name());
        assert!(took >= t, "returned early: {took:?}");
        assert!(took < t + Duration::from_millis(500), "late: {took:?}");
        // The stream still works after a timeout.
        (&s).write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        (&c).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        c.set_read_timeout(None).unwrap();
        assert_eq!(c.read_timeout().unwrap(), None);
        c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(c.write_timeout().unwrap(), Some(Duration::from_secs(2)));
    });
}

/// Timeouts set behind our back — through a std handle on a duplicate of a lent fd, or
/// inherited by an accepted socket from its listener — are honoured like our own.
#[test]
fn timeouts_set_through_a_lent_fd_or_inherited_are_honoured() {
    both(LIMIT, |env| {
        let t = Duration::from_millis(100);
        let check = |s: &TcpStream, how: &str| {
            let start = Instant::now();
            let e = (&*s).read(&mut [0u8; 8]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{how}, {}", env.name());
            assert!(start.elapsed() >= t, "{how}: returned early");
        };
        // `SO_RCVTIMEO` through a std handle on a duplicate of the fd (std's setter is a plain
        // setsockopt, whatever kind of socket the fd is).
        let set_behind_our_back = |fd: std::os::fd::BorrowedFd<'_>| {
            std::net::TcpStream::from(fd.try_clone_to_owned().unwrap())
                .set_read_timeout(Some(t))
                .unwrap();
        };
        let (l, addr) = listener();
        let _c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        set_behind_our_back(s.as_fd());
        check(&s, "set through a duplicate of the lent fd");

        let (l, addr) = listener();
        set_behind_our_back(l.as_fd());
        let _c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        check(&s, "inherited from the listener");
    });
}

#[test]
fn write_timeout_when_peer_does_not_read() {
    both(LIMIT, |_env| {
        let (l, addr) = listener();
        let c = TcpStream::connect(addr).unwrap();
        let (_s, _) = l.accept().unwrap();
        c.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let chunk = vec![0u8; 1 << 16];
        let start = Instant::now();
        let e = loop {
            match (&c).write(&chunk) {
                Ok(n) => assert!(n > 0 && start.elapsed() < Duration::from_secs(10)),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    });
}

#[test]
fn port_in_use_is_addr_in_use() {
    both(LIMIT, |_env| {
        let (_l, addr) = listener();
        let e = TcpListener::bind(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    });
}

#[test]
fn connect_to_closed_port_is_refused() {
    both(LIMIT, |_env| {
        let addr = listener().1; // bound, then closed
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn connect_tries_every_address_and_timeout_rules() {
    both(LIMIT, |_env| {
        let (l, good) = listener();
        let bad = listener().1;
        // The first address refuses; the second works, like std.
        let c = TcpStream::connect(&[bad, good][..]).unwrap();
        assert_eq!(c.peer_addr().unwrap(), good);
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        let e = TcpStream::connect_timeout(&good, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let c2 = TcpStream::connect_timeout(&good, Duration::from_secs(5)).unwrap();
        let _ = l.accept().unwrap();
        let none: &[SocketAddr] = &[];
        let e = TcpStream::connect(none).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        c2.set_ttl(42).unwrap();
        assert_eq!(c2.ttl().unwrap(), 42);
        assert!(c2.take_error().unwrap().is_none());
        l.set_ttl(33).unwrap();
        assert_eq!(l.ttl().unwrap(), 33);
        assert!(l.take_error().unwrap().is_none());
    });
}

#[test]
fn std_conversions_and_fds() {
    both(LIMIT, |env| {
        // std listener in, filament listener out.
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_l.local_addr().unwrap();
        let l = TcpListener::from(std_l);
        let l2 = l.try_clone().unwrap();
        let server = env.spawn(move || {
            let mut n = 0;
            for s in l2.incoming().take(2) {
                let mut s = s.unwrap();
                s.write_all(b"hi").unwrap();
                // Keep the connection open until the client is done with it.
                s.read_to_end(&mut Vec::new()).unwrap();
                n += 1;
            }
            n
        });
        // std stream in (blocking, with a timeout that survives the conversion).
        let std_c = std::net::TcpStream::connect(addr).unwrap();
        std_c
            .set_read_timeout(Some(Duration::from_secs(7)))
            .unwrap();
        let c = TcpStream::from(std_c);
        assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_secs(7)));
        let mut b = [0u8; 2];
        (&c).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        // Out to std: blocking again.
        let std_back: std::net::TcpStream = c.into();
        let mut buf = [0u8; 1];
        std_back
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let e = (&std_back).read(&mut buf).unwrap_err();
        // std reports its own timeout as WouldBlock on Unix; proves the socket blocked.
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(std_back);
        // Raw fd round trip.
        let c = TcpStream::connect(addr).unwrap();
        let _ = c.as_fd();
        let fd = c.into_raw_fd();
        // SAFETY: `fd` was just released by `into_raw_fd`; we own it.
        let c = unsafe { TcpStream::from_raw_fd(fd) };
        (&c).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        drop(c);
        assert_eq!(server.join().unwrap(), 2);
        drop(l);
    });
}

#[test]
fn socket_registered_by_reactor_thread_works_on_plain_thread() {
    both(LIMIT, |env| {
        let (l, addr) = listener();
        let server = echo_once(env, l);
        let c = TcpStream::connect(addr).unwrap();
        // Park once on this (maybe reactor) thread, so the socket gets registered.
        let e = env.spawn(|| ());
        e.join().unwrap();
        let writer = {
            let c2 = c.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                (&c2).write_all(b"ping").unwrap();
            })
        };
        let mut b = [0u8; 4];
        (&c).read_exact(&mut b).unwrap();
        writer.join().unwrap();
        // Now used from a thread that never entered a reactor.
        std::thread::spawn(move || {
            let w = c.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                (&w).write_all(b"pong").unwrap();
            });
            (&c).read_exact(&mut b).unwrap();
            assert_eq!(&b, b"pong");
        })
        .join()
        .unwrap();
        server.join().unwrap();
    });
}
