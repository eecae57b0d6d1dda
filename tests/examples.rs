//! The example servers, run as the user runs them (their binaries, built by `cargo test`), driven
//! over real loopback sockets: echo, HTTP/1.1 (keep-alive, pipelining, 400, 431), chat, `--help`,
//! bad flags and a port already in use. Each server is started on port 0 and reports its address
//! on stderr; every test kills its server when it ends, even on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of an example binary: `target/<profile>/examples/<name>`, next to this test's `deps/`.
fn example(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    path
}

/// A running example server; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `name --addr 127.0.0.1:0` and reads the address it reports on stderr.
fn start(name: &str) -> Server {
    let mut child = Command::new(example(name))
        .args(["--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    stderr
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .split_whitespace()
        .find_map(|w| {
            w.trim_start_matches("http://")
                .trim_end_matches('/')
                .parse::<SocketAddr>()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} did not report its address: {line:?}"));
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Server { child, addr }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the example");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn help_and_bad_flags() {
    for name in ["echo_server", "http_server", "chat"] {
        let out = Command::new(example(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--addr"), "{name} --help: {text}");
        let out = Command::new(example(name)).arg("--bogus").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} --bogus");
        assert!(String::from_utf8_lossy(&out.stderr).contains("USAGE"));
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for name in ["echo_server", "http_server", "chat"] {
        let out = Command::new(example(name))
            .args(["--addr", &addr])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} started on a taken port");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot listen on"), "{name}: {stderr}");
        assert!(stderr.to_lowercase().contains("in use"), "{name}: {stderr}");
    }
}

#[test]
fn echo_server_echoes_every_byte_on_many_connections() {
    let server = start("echo_server");
    let clients: Vec<_> = (0..50u8)
        .map(|c| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for round in 0..20u8 {
                    let msg: Vec<u8> = (0..(64 + c as usize * 13))
                        .map(|i| i as u8 ^ round ^ c)
                        .collect();
                    s.write_all(&msg).unwrap();
                    let mut back = vec![0; msg.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Reads one HTTP response (status line, headers, `Content-Length` body).
fn read_response(r: &mut BufReader<TcpStream>) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("a header line");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .expect("Content-Length")
        .1
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status.trim_end().to_string(), headers, body)
}

#[test]
fn http_server_keep_alive_pipelining_and_errors() {
    let server = start("http_server");
    // Two pipelined requests in one write, on one keep-alive connection, then a third.
    let s = connect(server.addr);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for _ in 0..2 {
        let (status, headers, body) = read_response(&mut r);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(!body.is_empty());
        assert!(!headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"));
    }
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).0, "HTTP/1.1 200 OK");

    // A malformed request line: 400, then the server closes.
    let s = connect(server.addr);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let (status, _, _) = read_response(&mut r);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap_or(0), 0, "closed after 400");

    // Headers beyond the limit: 431.
    let s = connect(server.addr);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = w.write_all(huge.as_bytes());
    let (status, _, _) = read_response(&mut r);
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    // HTTP/1.0 without keep-alive: the server closes after the response.
    let s = connect(server.addr);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(read_response(&mut r).0.ends_with("200 OK"));
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn chat_lines_reach_every_other_client() {
    let server = start("chat");
    // Members join one at a time (each waits for its welcome, which counts the others), so no
    // greeting below can precede a join.
    let mut members: Vec<(TcpStream, BufReader<TcpStream>)> = (0..3)
        .map(|k| {
            let s = connect(server.addr);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut welcome = String::new();
            r.read_line(&mut welcome).unwrap();
            assert!(
                welcome.contains(&format!("{k} other(s) here")),
                "{welcome:?}"
            );
            (s, r)
        })
        .collect();
    for (i, (w, _)) in members.iter_mut().enumerate() {
        writeln!(w, "hello from {i}").unwrap();
    }
    for (i, (_, r)) in members.iter_mut().enumerate() {
        let mut heard: Vec<String> = (0..2).map(|_| chat_line(r)).collect();
        heard.sort();
        let expected: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("hello from {j}\n"))
            .collect();
        let ok = heard
            .iter()
            .zip(&expected)
            .all(|(h, e)| h.ends_with(e.as_str()));
        assert!(ok, "member {i} heard {heard:?}, expected {expected:?}");
    }
    // A member leaves; the others still talk.
    drop(members.remove(0));
    writeln!(members[0].0, "still here").unwrap();
    let line = chat_line(&mut members[1].1);
    assert!(line.ends_with("still here\n"), "{line:?}");
}

/// The next line a member hears from another member (skipping the room's `* ...` notices).
fn chat_line(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "the chat closed");
        if !line.starts_with("* ") {
            return line;
        }
    }
}
