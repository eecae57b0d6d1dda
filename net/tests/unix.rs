//! Unix-domain streams on OS threads, with and without a reactor.

mod common;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{both, pattern};
use filament_net::{UnixListener, UnixStream};

const LIMIT: Duration = Duration::from_secs(30);

fn socket_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "filament-net-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn unix_stream_pair_echo() {
    both(LIMIT, |env| {
        let (a, b) = UnixStream::pair().unwrap();
        let echo = env.spawn(move || {
            let r = b.try_clone().unwrap();
            io::copy(&mut &r, &mut &b).unwrap()
        });
        let w = a.try_clone().unwrap();
        let total: usize = (0..500).map(|i| 1 + (i * 53) % 5000).sum();
        let writer = env.spawn(move || {
            for i in 0..500 {
                (&w).write_all(&pattern(i, 1 + (i * 53) % 5000)).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&a).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        let want: Vec<u8> = (0..500)
            .flat_map(|i| pattern(i, 1 + (i * 53) % 5000))
            .collect();
        assert_eq!(got.len(), total);
        assert!(got == want);
        assert_eq!(echo.join().unwrap(), total as u64);
        env.assert_reactor_used();
    });
}

#[test]
fn unix_listener_accepts_and_timeouts() {
    both(LIMIT, |env| {
        let path = socket_path();
        let l = UnixListener::bind(&path).unwrap();
        assert_eq!(
            UnixListener::bind(&path).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        let server = env.spawn(move || {
            for s in l.incoming().take(3) {
                let mut s = s.unwrap();
                let mut b = [0u8; 5];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
            }
        });
        for _ in 0..3 {
            let mut c = UnixStream::connect(&path).unwrap();
            assert!(c.peer_addr().unwrap().as_pathname().is_some());
            c.write_all(b"hello").unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hello");
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let e = c.read(&mut b).map(|n| n as i64).unwrap_or_else(|e| {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                -1
            });
            // Either the server already closed (EOF) or nothing came in time.
            assert!(e == 0 || e == -1);
        }
        server.join().unwrap();
        let e = UnixStream::connect(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        std::fs::remove_file(&path).unwrap();
    });
}
