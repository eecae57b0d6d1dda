//! Tests of the mio-facing reactor: poll/wake, registration, do_io with a driver thread.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::Interest;

use super::{current, enter, Reactor};

/// Polls `reactor` every few ms on a thread until the returned flag is set.
fn driver(reactor: &Arc<Reactor>) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (r, s) = (reactor.clone(), stop.clone());
    let handle = thread::spawn(move || {
        while !s.load(SeqCst) {
            r.poll(Some(Duration::from_millis(10))).unwrap();
        }
    });
    (stop, handle)
}

#[test]
fn wake_interrupts_poll() {
    let reactor = Arc::new(Reactor::new().unwrap());
    let r = reactor.clone();
    let t = thread::spawn(move || {
        let start = Instant::now();
        r.poll(None).unwrap();
        start.elapsed()
    });
    thread::sleep(Duration::from_millis(50));
    reactor.wake();
    assert!(t.join().unwrap() < Duration::from_secs(5));
    assert!(reactor.stats().polls >= 1);
}

#[test]
fn second_poller_returns_at_once() {
    let reactor = Arc::new(Reactor::new().unwrap());
    let r = reactor.clone();
    let t = thread::spawn(move || r.poll(Some(Duration::from_millis(300))).unwrap());
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    assert_eq!(reactor.poll(Some(Duration::from_secs(5))).unwrap(), 0);
    assert!(start.elapsed() < Duration::from_millis(200));
    t.join().unwrap();
}

#[test]
fn enter_sets_and_restores_current() {
    assert!(current().is_none());
    let reactor = Arc::new(Reactor::new().unwrap());
    {
        let _g = enter(reactor.clone());
        assert!(Arc::ptr_eq(&current().unwrap(), &reactor));
    }
    assert!(current().is_none());
}

#[test]
fn do_io_parks_until_readable_and_deregister_releases() {
    let reactor = Arc::new(Reactor::new().unwrap());
    let (stop, drv) = driver(&reactor);
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let reg = reactor.register(&mut a).unwrap();
    assert_eq!(reactor.stats().registrations, 1);

    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        b.write_all(b"hello").unwrap();
        b
    });
    let mut buf = [0u8; 16];
    let n = reg
        .do_io(Interest::READABLE, None, || (&a).read(&mut buf))
        .unwrap();
    assert_eq!(&buf[..n], b"hello");

    // Nothing more comes: a deadline gives TimedOut, not WouldBlock.
    let deadline = Instant::now() + Duration::from_millis(40);
    let err = reg
        .do_io(Interest::READABLE, Some(deadline), || (&a).read(&mut buf))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(Instant::now() >= deadline);

    // The peer closes: the parked reader wakes and reads EOF.
    let b = writer.join().unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        drop(b);
    });
    let n = reg
        .do_io(Interest::READABLE, None, || (&a).read(&mut buf))
        .unwrap();
    assert_eq!(n, 0);
    closer.join().unwrap();

    reg.deregister(&mut a).unwrap();
    reg.deregister(&mut a).unwrap(); // idempotent
    assert_eq!(reactor.stats().registrations, 0);
    assert!(reactor.stats().events >= 2);
    stop.store(true, SeqCst);
    drv.join().unwrap();
}
