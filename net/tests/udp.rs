//! UDP on OS threads, with and without a reactor.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{both, pattern};
use filament_net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn udp_round_trip() {
    both(LIMIT, |env| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        let echo = env.spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..200 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0..100 {
            let msg = pattern(i, 1 + i * 13 % 1400);
            c.send_to(&msg, server_addr).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, server_addr);
            assert_eq!(&buf[..n], &msg[..]);
        }
        // Connected mode, and peek.
        c.connect(server_addr).unwrap();
        assert_eq!(c.peer_addr().unwrap(), server_addr);
        for i in 0..100 {
            let msg = pattern(1000 + i, 64);
            c.send(&msg).unwrap();
            let mut p = [0u8; 64];
            let (n, from) = c.peek_from(&mut p).unwrap();
            assert_eq!((n, from), (64, server_addr));
            let mut q = [0u8; 64];
            assert_eq!(c.peek(&mut q).unwrap(), 64);
            let mut buf = [0u8; 64];
            assert_eq!(c.recv(&mut buf).unwrap(), 64);
            assert_eq!(&buf[..], &msg[..]);
            assert_eq!(p, buf);
        }
        echo.join().unwrap();
        env.assert_reactor_used();
    });
}

#[test]
fn udp_recv_timeout_and_options() {
    both(LIMIT, |_env| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Duration::from_millis(100);
        s.set_read_timeout(Some(t)).unwrap();
        assert!(s.read_timeout().unwrap().unwrap() >= t);
        let start = Instant::now();
        let e = s.recv_from(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= t && start.elapsed() < t + Duration::from_millis(500));
        let e = s.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        s.set_broadcast(true).unwrap();
        assert!(s.broadcast().unwrap());
        s.set_ttl(9).unwrap();
        assert_eq!(s.ttl().unwrap(), 9);
        assert!(s.take_error().unwrap().is_none());
        let c = s.try_clone().unwrap();
        assert_eq!(c.local_addr().unwrap(), s.local_addr().unwrap());
        assert_eq!(
            s.peer_addr().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        let std_s: std::net::UdpSocket = c.into();
        let _back = UdpSocket::from(std_s);
    });
}
