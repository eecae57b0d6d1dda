//! A minimal HTTP/1.1 "hello world" server: one fiber per connection, keep-alive, pipelining.
//!
//! * Every well-formed request gets `200 OK` with `Hello, world!\n` and a correct
//!   `Content-Length` (`HEAD` gets the headers only).
//! * HTTP/1.1 connections stay open unless the client sends `Connection: close`; HTTP/1.0 ones
//!   close unless it sends `Connection: keep-alive`.
//! * Pipelined requests are answered in order; responses are buffered and flushed when no
//!   further request is already buffered, so a pipeline costs one write.
//! * A malformed request line or header gets `400 Bad Request`; a request head over
//!   `--max-header` bytes gets `431 Request Header Fields Too Large`; a chunked body gets
//!   `501 Not Implemented`; then the connection closes. Request bodies with `Content-Length`
//!   are read and discarded.
//!
//! ```text
//! cargo run --release --example http_server -- --addr 127.0.0.1:8080
//! curl -v http://127.0.0.1:8080/
//! ```

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use filament::net::{TcpListener, TcpStream};

const USAGE: &str = "\
http_server: HTTP/1.1 hello world, one fiber per connection

USAGE: http_server [--addr HOST:PORT] [--max-header BYTES]

OPTIONS:
    --addr HOST:PORT     address to listen on (default 127.0.0.1:8080)
    --max-header BYTES   limit of a request's line + headers (default 8192)
    -h, --help           print this help";

const BODY: &[u8] = b"Hello, world!\n";

struct Config {
    addr: String,
    max_header: usize,
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        addr: "127.0.0.1:8080".to_string(),
        max_header: 8192,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        match key.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--addr" => cfg.addr = value("--addr")?,
            "--max-header" => {
                cfg.max_header = value("--max-header")?
                    .parse()
                    .map_err(|e| format!("--max-header: {e}"))?
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(cfg)
}

/// Why a request could not be served.
enum Bad {
    /// 400: malformed request line or header.
    Malformed,
    /// 431: the head is over the limit.
    TooLarge,
    /// 501: a transfer coding we do not implement.
    Unsupported,
    /// The connection failed or closed mid-request: nothing to answer.
    Io,
}

struct Request {
    head_only: bool,
    keep_alive: bool,
}

/// Reads one line (through `\n`) into `line`, counting it against `budget`.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut usize) -> Result<usize, Bad> {
    line.clear();
    let n = r
        .take(*budget as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|_| Bad::Io)?;
    if n > *budget {
        return Err(Bad::TooLarge);
    }
    *budget -= n;
    Ok(n)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads and validates one request (discarding its body). `Ok(None)`: the client closed
/// cleanly between requests.
fn read_request(r: &mut impl BufRead, max_header: usize) -> Result<Option<Request>, Bad> {
    let mut budget = max_header;
    let mut line = Vec::new();
    // Like most servers, ignore empty lines before a request line (RFC 9112 §2.2).
    loop {
        if read_line(r, &mut line, &mut budget)? == 0 {
            return Ok(None);
        }
        if line != b"\r\n" && line != b"\n" {
            break;
        }
    }
    if !line.ends_with(b"\n") {
        return Err(Bad::Io); // EOF mid-line
    }
    let text = std::str::from_utf8(&line).map_err(|_| Bad::Malformed)?;
    let mut parts = text.trim_end_matches(['\r', '\n']).split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(Bad::Malformed),
    };
    if !is_token(method) || target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(Bad::Malformed);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Bad::Malformed),
    };
    let head_only = method == "HEAD";
    let mut keep_alive = http11;
    let mut content_length: u64 = 0;
    loop {
        if read_line(r, &mut line, &mut budget)? == 0 || !line.ends_with(b"\n") {
            return Err(Bad::Io);
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let text = std::str::from_utf8(&line).map_err(|_| Bad::Malformed)?;
        let (name, value) = text.split_once(':').ok_or(Bad::Malformed)?;
        if !is_token(name) {
            return Err(Bad::Malformed);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| Bad::Malformed)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Bad::Unsupported);
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in value.split(',').map(str::trim) {
                if opt.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if opt.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let discarded = io::copy(&mut r.take(content_length), &mut io::sink()).map_err(|_| Bad::Io)?;
    if discarded != content_length {
        return Err(Bad::Io);
    }
    Ok(Some(Request {
        head_only,
        keep_alive,
    }))
}

fn respond(
    w: &mut impl Write,
    status: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )?;
    if !head_only {
        w.write_all(body)?;
    }
    Ok(())
}

fn serve(stream: TcpStream, max_header: usize) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(&stream);
    let mut writer = BufWriter::new(&stream);
    loop {
        let (status, body, head_only, keep_alive) = match read_request(&mut reader, max_header) {
            Ok(None) => break,
            Ok(Some(req)) => ("200 OK", BODY, req.head_only, req.keep_alive),
            Err(Bad::Malformed) => ("400 Bad Request", &b"bad request\n"[..], false, false),
            Err(Bad::TooLarge) => (
                "431 Request Header Fields Too Large",
                &b"request header too large\n"[..],
                false,
                false,
            ),
            Err(Bad::Unsupported) => (
                "501 Not Implemented",
                &b"not implemented\n"[..],
                false,
                false,
            ),
            Err(Bad::Io) => break,
        };
        respond(&mut writer, status, body, head_only, keep_alive)?;
        // Flush only when no pipelined request is waiting in our buffer.
        if !keep_alive || reader.buffer().is_empty() {
            writer.flush()?;
        }
        if !keep_alive {
            break;
        }
    }
    writer.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    filament::run(move || {
        let listener = match TcpListener::bind(&cfg.addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", cfg.addr);
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "http_server listening on http://{}/",
            listener.local_addr().unwrap()
        );
        let max_header = cfg.max_header;
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    filament::spawn(move || {
                        let _ = serve(s, max_header);
                    });
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
        ExitCode::SUCCESS
    })
}
