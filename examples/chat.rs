//! A line-based chat room: every line a client sends reaches every other client.
//!
//! One reader fiber and one writer fiber per client. A reader pushes each line into the outbox
//! of every other member and unparks that member's writer (`filament::rt::park`: an unpark
//! before the park is not lost), so a slow client never blocks the others and lines from
//! different senders never interleave mid-line. Clients may join and leave at any time.
//!
//! ```text
//! cargo run --release --example chat -- --addr 127.0.0.1:7879
//! nc 127.0.0.1 7879
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use filament::net::{TcpListener, TcpStream};
use filament::rt::park::{self, Unparker};

const USAGE: &str = "\
chat: a line chat room; every line reaches every other client

USAGE: chat [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on (default 127.0.0.1:7879)
    -h, --help         print this help";

/// A longer line is cut here (a chat line, not a file transfer).
const MAX_LINE: usize = 4096;
/// A member whose outbox holds this many lines is too slow and is dropped.
const MAX_QUEUED: usize = 1024;

struct Member {
    outbox: Mutex<VecDeque<Arc<str>>>,
    writer: Unparker,
    gone: AtomicBool,
}

impl Member {
    fn send(&self, line: Arc<str>) {
        {
            // A std Mutex is fine here: it is never held across a blocking call.
            let mut q = self.outbox.lock().unwrap();
            if q.len() >= MAX_QUEUED {
                self.gone.store(true, SeqCst);
            } else {
                q.push_back(line);
            }
        }
        self.writer.unpark();
    }

    fn leave(&self) {
        self.gone.store(true, SeqCst);
        self.writer.unpark();
    }
}

#[derive(Default)]
struct Room {
    members: Mutex<HashMap<u64, Arc<Member>>>,
}

impl Room {
    /// Sends `line` to everyone but `from`.
    fn broadcast(&self, from: u64, line: &str) {
        let line: Arc<str> = Arc::from(format!("{line}\n"));
        let targets: Vec<Arc<Member>> = {
            let m = self.members.lock().unwrap();
            m.iter()
                .filter(|(id, _)| **id != from)
                .map(|(_, m)| m.clone())
                .collect()
        };
        for m in targets {
            m.send(line.clone());
        }
    }
}

fn parse_args() -> Result<String, String> {
    let mut addr = "127.0.0.1:7879".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--addr" => addr = args.next().ok_or("--addr needs a value")?,
            other => match other.strip_prefix("--addr=") {
                Some(v) => addr = v.to_string(),
                None => return Err(format!("unknown argument `{other}`")),
            },
        }
    }
    Ok(addr)
}

/// The writer fiber: drains the outbox to the socket, parks when it is empty.
fn write_loop(stream: Arc<TcpStream>, member: Arc<Member>) {
    let mut out = &*stream;
    loop {
        let batch: Vec<Arc<str>> = member.outbox.lock().unwrap().drain(..).collect();
        if batch.is_empty() {
            if member.gone.load(SeqCst) {
                break;
            }
            park::park();
            continue;
        }
        for line in batch {
            if out.write_all(line.as_bytes()).is_err() {
                member.gone.store(true, SeqCst);
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
    // Wakes our reader if the client is still connected (e.g. dropped for being slow).
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Runs in the client's fiber, which becomes its writer; a second fiber reads its lines.
fn client(room: Arc<Room>, id: u64, stream: TcpStream) {
    let name = format!("guest{id}");
    let stream = Arc::new(stream);
    let member = Arc::new(Member {
        outbox: Mutex::new(VecDeque::new()),
        writer: park::unparker(), // this fiber's
        gone: AtomicBool::new(false),
    });
    member.send(Arc::from(format!(
        "* welcome, you are {name}; {} other(s) here\n",
        room.members.lock().unwrap().len()
    )));
    room.members.lock().unwrap().insert(id, member.clone());
    room.broadcast(id, &format!("* {name} joined"));

    let reader = {
        let (room, member, stream) = (room.clone(), member.clone(), stream.clone());
        let name = name.clone();
        filament::spawn(move || {
            let mut reader = BufReader::new(&*stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if member.gone.load(SeqCst) {
                    break;
                }
                let text = String::from_utf8_lossy(&buf);
                let text = text.trim_end_matches(['\r', '\n']);
                if !text.is_empty() {
                    room.broadcast(id, &format!("<{name}> {text}"));
                }
            }
            room.members.lock().unwrap().remove(&id);
            member.leave();
        })
    };
    write_loop(stream, member);
    let _ = reader.join();
    room.broadcast(id, &format!("* {name} left"));
}

fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    filament::run(move || {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("chat listening on {}", listener.local_addr().unwrap());
        let room = Arc::new(Room::default());
        for (id, stream) in (1u64..).zip(listener.incoming()) {
            match stream {
                Ok(s) => {
                    let room = room.clone();
                    filament::spawn(move || client(room, id, s));
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
        ExitCode::SUCCESS
    })
}
