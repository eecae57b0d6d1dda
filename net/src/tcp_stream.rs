//! [`TcpStream`]: std's `TcpStream` API over a non-blocking socket that parks the caller.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::Interest;

use crate::socket::{dup, impl_fd_traits, read_exact, write_all, Site, Socket, Timeout};
use crate::sys;

/// A TCP connection, like [`std::net::TcpStream`], whose blocking calls park the calling fiber
/// (or thread) instead of blocking the worker.
///
/// Reads and writes honour [`set_read_timeout`](Self::set_read_timeout) /
/// [`set_write_timeout`](Self::set_write_timeout); an expired timeout is
/// [`io::ErrorKind::TimedOut`] (std on Unix reports `WouldBlock`).
pub struct TcpStream {
    s: Socket<mio::net::TcpStream>,
}

impl_fd_traits!(TcpStream, mio::net::TcpStream, std::net::TcpStream);

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpStream");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer", &a);
        }
        d.field("fd", &self.s.fd()).finish()
    }
}

impl TcpStream {
    /// Opens a connection to `addr`, trying each resolved address in turn like std (the last
    /// error is returned). Waits for the handshake by parking.
    ///
    /// A fiber parked here (or in [`connect_timeout`](Self::connect_timeout)) shows in
    /// `Runtime::dump` as waiting on `"TcpStream::connect"` at the caller's location.
    #[track_caller]
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let site = Site::here(CONNECT);
        sys::each_addr(addr, |a| Self::connect_addr(a, None, site))
    }

    /// Opens a connection to `addr`, failing with `TimedOut` after `timeout`. A zero timeout is
    /// `InvalidInput`, as in std.
    #[track_caller]
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        Self::connect_addr(
            addr,
            Instant::now().checked_add(timeout),
            Site::here(CONNECT),
        )
    }

    fn connect_addr(
        addr: &SocketAddr,
        deadline: Option<Instant>,
        site: Site,
    ) -> io::Result<TcpStream> {
        let stream = TcpStream {
            s: Socket::new(mio::net::TcpStream::connect(*addr)?, false),
        };
        // The connect is in progress; it has finished when the socket reports writable (or an
        // error). Then SO_ERROR holds the outcome, and a connected socket has a peer.
        stream.s.wait(Interest::WRITABLE, deadline, site, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        })?;
        Ok(stream)
    }

    /// Wraps a stream this crate connected or accepted (see `Socket::new`).
    pub(crate) fn from_mio(s: mio::net::TcpStream, timeouts_unknown: bool) -> TcpStream {
        TcpStream {
            s: Socket::new(s, timeouts_unknown),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().local_addr()
    }

    /// Shuts down the read half, the write half or both (see [`std::net::Shutdown`]).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.s.get().shutdown(how)
    }

    /// A second handle to the same socket (a `dup`ed fd): options and timeouts are shared.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        dup::<std::net::TcpStream>(self.as_raw_fd()).map(TcpStream::from)
    }

    /// Receives data without removing it from the queue, parking until some arrives.
    ///
    /// A fiber parked here shows in `Runtime::dump` as waiting on `"TcpStream::peek"` at the
    /// caller's location.
    #[track_caller]
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let site = Site::here("TcpStream::peek");
        self.s
            .io(Interest::READABLE, Timeout::Read, site, |s| s.peek(buf))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.s.get().set_nodelay(nodelay)
    }

    /// Reads `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.s.get().nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.s.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.s.get().ttl()
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.s.get().take_error()
    }

    /// Bounds every later read (and peek) by `dur`; `None` waits forever, `Some(0)` is
    /// `InvalidInput`. A read that times out fails with `TimedOut`.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.s.set_timeout(libc::SO_RCVTIMEO, dur)
    }

    /// Bounds every later write by `dur` (see [`set_read_timeout`](Self::set_read_timeout)).
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.s.set_timeout(libc::SO_SNDTIMEO, dur)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.s.timeout(libc::SO_RCVTIMEO)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.s.timeout(libc::SO_SNDTIMEO)
    }
}

const CONNECT: &str = "TcpStream::connect";

crate::stream_io::impl_stream_io!(TcpStream, "TcpStream::read", "TcpStream::write");
