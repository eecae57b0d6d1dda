//! `Runtime::dump` names what a fiber blocked on a filament-net socket waits on, and the user's
//! line.
//!
//! Fibers park in `accept` and reads of several socket kinds; the dump must list each as
//! parked, waiting on the call's `what` at the exact line of the call in this file. Then every
//! wait is satisfied and the fibers are joined.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use filament_net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use filament_runtime::dump::FiberState;
use filament_runtime::{JoinHandle, Runtime};

#[macro_use]
#[path = "../../runtime/tests/support/dump_sites.rs"]
mod dump_sites;
use dump_sites::{dump_when_parked, line_of, spawn_named};

/// A connected TCP pair: (client, server side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    (client, server)
}

#[test]
fn dump_names_each_socket_wait_and_its_line() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let path = std::env::temp_dir().join(format!("filament-dump-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    rt.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen_addr = listener.local_addr().unwrap();
        let (mut read_client, read_server) = tcp_pair();
        let (mut exact_client, exact_server) = tcp_pair();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        let unix_listener = UnixListener::bind(&path).unwrap();
        let (mut unix_a, unix_b) = UnixStream::pair().unwrap();

        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        handles.push(spawn_named("accept", move || {
            let (s, _) = at!("accept", listener.accept()).unwrap();
            drop(s);
        }));
        handles.push(spawn_named("read", move || {
            let mut buf = [0u8; 16];
            let n = at!("read", (&read_server).read(&mut buf)).unwrap();
            assert_eq!(&buf[..n], b"hello");
        }));
        handles.push(spawn_named("read_exact", move || {
            let (mut s, mut buf) = (exact_server, [0u8; 4]);
            at!("read_exact", s.read_exact(&mut buf)).unwrap();
            assert_eq!(&buf, b"four");
        }));
        handles.push(spawn_named("recv_from", move || {
            let mut buf = [0u8; 16];
            let (n, _) = at!("recv_from", udp.recv_from(&mut buf)).unwrap();
            assert_eq!(&buf[..n], b"dgram");
        }));
        handles.push(spawn_named("unix_accept", move || {
            let (s, _) = at!("unix_accept", unix_listener.accept()).unwrap();
            drop(s);
        }));
        handles.push(spawn_named("unix_read", move || {
            let (mut s, mut buf) = (unix_b, [0u8; 16]);
            let n = at!("unix_read", s.read(&mut buf)).unwrap();
            assert_eq!(&buf[..n], b"unix");
        }));

        let expected = [
            ("accept", "TcpListener::accept"),
            ("read", "TcpStream::read"),
            ("read_exact", "TcpStream::read"),
            ("recv_from", "UdpSocket::recv_from"),
            ("unix_accept", "UnixListener::accept"),
            ("unix_read", "UnixStream::read"),
        ];
        let dump = dump_when_parked(&rt, &expected);
        for (name, what) in expected {
            let info = dump
                .fibers
                .iter()
                .find(|f| f.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("fiber '{name}' missing from the dump:\n{dump}"));
            assert_eq!(info.state, FiberState::Parked, "fiber '{name}':\n{dump}");
            let (got, at) = info
                .waiting_on
                .unwrap_or_else(|| panic!("fiber '{name}' has no wait record:\n{dump}"));
            assert_eq!(got, what, "fiber '{name}':\n{dump}");
            assert!(
                at.file().ends_with("tests/dump.rs"),
                "fiber '{name}' recorded {at}, not this file:\n{dump}"
            );
            assert_eq!(Some(at.line()), line_of(name), "fiber '{name}':\n{dump}");
        }

        // Satisfy every wait.
        let c = TcpStream::connect(listen_addr).unwrap();
        read_client.write_all(b"hello").unwrap();
        exact_client.write_all(b"fo").unwrap();
        filament_runtime::sleep(Duration::from_millis(20));
        exact_client.write_all(b"ur").unwrap();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"dgram", udp_addr)
            .unwrap();
        let u = UnixStream::connect(&path).unwrap();
        unix_a.write_all(b"unix").unwrap();
        for h in handles {
            h.join().unwrap();
        }
        drop((c, u));
    });
    let _ = std::fs::remove_file(&path);
}

#[test]
fn ready_sockets_record_nothing() {
    static SLEEPING: AtomicBool = AtomicBool::new(false);
    let rt = Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let h = spawn_named("fast", || {
            let (mut client, mut server) = tcp_pair();
            client.write_all(b"x").unwrap();
            let mut buf = [0u8; 1];
            server.read_exact(&mut buf).unwrap();
            SLEEPING.store(true, SeqCst);
            filament_runtime::sleep(Duration::from_secs(30));
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            let dump = rt.dump();
            let info = dump
                .fibers
                .into_iter()
                .find(|f| f.name.as_deref() == Some("fast"));
            if let Some(info) = info {
                let parked = SLEEPING.load(SeqCst) && info.state == FiberState::Parked;
                if (parked && info.waiting_on.is_some()) || Instant::now() > deadline {
                    break info;
                }
            }
            filament_runtime::sleep(Duration::from_millis(10));
        };
        // The record is the sleep's: the socket calls left none behind.
        assert_eq!(info.waiting_on.map(|w| w.0), Some("sleep"));
        h.cancel();
        assert!(h.join().is_err());
    });
}
