//! A TCP echo server: one fiber per connection, plain blocking code.
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7878
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;

use filament::net::{TcpListener, TcpStream};

const USAGE: &str = "\
echo_server: echoes every byte back, one fiber per connection

USAGE: echo_server [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on (default 127.0.0.1:7878)
    -h, --help         print this help";

fn parse_args() -> Result<String, String> {
    let mut addr = "127.0.0.1:7878".to_string();
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

fn serve(mut stream: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
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
        eprintln!(
            "echo_server listening on {}",
            listener.local_addr().unwrap()
        );
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    filament::spawn(move || serve(s));
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
        ExitCode::SUCCESS
    })
}
