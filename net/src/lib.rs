//! filament-net: `std::net`-shaped sockets whose blocking calls park the calling fiber.
//!
//! [`TcpListener`], [`TcpStream`], [`UdpSocket`], [`UnixListener`] and [`UnixStream`] have
//! std's method names, signatures and error kinds. Inside a filament fiber a call that would
//! block parks the fiber (the worker runs other fibers); on a plain OS thread it blocks the
//! thread. A socket created on one thread may be used anywhere.
//!
//! # Protocol of a blocking call
//!
//! Every socket is non-blocking (a mio socket inside). A call first runs the syscall; only if it
//! returns `WouldBlock` does it wait, then retry, until the syscall returns anything else:
//!
//! * If the socket is registered with a reactor, or the calling thread has one
//!   ([`filament_runtime::reactor::current`], set on every runtime worker), the socket is
//!   registered (lazily, once, with that reactor, edge-triggered) and the wait is the reactor's
//!   park protocol (`Registration::do_io`), which never loses a readiness event that arrives
//!   between the failed syscall and the park.
//! * Otherwise (a plain thread, never-registered socket) the thread waits in `poll(2)` on the fd
//!   for the interest and the deadline.
//!
//! `WouldBlock` never escapes: these sockets have no user-visible non-blocking mode.
//!
//! # Timeouts
//!
//! `set_read_timeout` / `set_write_timeout` store the timeout in the socket's own
//! `SO_RCVTIMEO` / `SO_SNDTIMEO` (the kernel ignores them for non-blocking sockets), so clones
//! made by `try_clone` share them exactly as std's do, and a std socket converted with `From`
//! keeps its timeouts. The timeout is read back (one `getsockopt`) only when a call is about to
//! wait, and only if one can have been set (a socket this crate created, whose fd was never lent
//! through `AsRawFd`/`AsFd`, and which never had a setter called, skips it); the deadline is then
//! `now + timeout`. The kernel keeps these options in clock ticks, so
//! the getters (and the deadlines) see the value rounded up to a tick, as with std. An expired timeout is
//! [`io::ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut) — std on Unix returns
//! `WouldBlock`, which here would be indistinguishable from a non-blocking socket's answer.
//! `connect_timeout` fails with `TimedOut` as in std. In fibers the deadline is served by the
//! runtime's timer (`park_until`).
//!
//! # Lifetime
//!
//! Dropping a socket deregisters it from its reactor before the fd is closed. Converting into
//! a std socket (or `into_raw_fd`) deregisters it too; the std socket comes back in blocking
//! mode (`into_raw_fd` leaves the fd non-blocking). `From<std::..>` / `from_raw_fd` switch the
//! socket to non-blocking mode.
#![warn(missing_docs)]

mod socket;
mod stream_io;
mod sys;
mod tcp_listener;
mod tcp_stream;
mod udp;
mod unix_listener;
mod unix_stream;

pub use tcp_listener::{Incoming, TcpListener};
pub use tcp_stream::TcpStream;
pub use udp::UdpSocket;
pub use unix_listener::{Incoming as UnixIncoming, UnixListener};
pub use unix_stream::UnixStream;
