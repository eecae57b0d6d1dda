//! [`TcpListener`]: std's `TcpListener` API; `accept` parks the caller.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use mio::Interest;

use crate::socket::{dup, impl_fd_traits, Site, Socket, Timeout};
use crate::sys;
use crate::TcpStream;

/// A TCP listening socket, like [`std::net::TcpListener`], whose `accept` parks the calling
/// fiber (or thread). Accepted streams are non-blocking [`TcpStream`]s.
pub struct TcpListener {
    s: Socket<mio::net::TcpListener>,
}

impl_fd_traits!(TcpListener, mio::net::TcpListener, std::net::TcpListener);

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpListener");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.s.fd()).finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (each resolved address tried in turn, like std) and listens.
    /// `SO_REUSEADDR` is set, as std does on Unix; a port in use fails with `AddrInUse`.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        sys::each_addr(addr, |a| {
            Ok(TcpListener {
                s: Socket::new(mio::net::TcpListener::bind(*a)?, false),
            })
        })
    }

    /// Accepts a connection, parking until one arrives.
    ///
    /// A fiber parked here (or in [`incoming`](Self::incoming)'s `next`) shows in
    /// `Runtime::dump` as waiting on `"TcpListener::accept"` at the caller's location.
    #[track_caller]
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let site = Site::here("TcpListener::accept");
        let (s, addr) = self
            .s
            .io(Interest::READABLE, Timeout::None, site, |l| l.accept())?;
        Ok((TcpStream::from_mio(s, self.s.timeouts_unknown()), addr))
    }

    /// An endless iterator of accepted connections (`accept` in a loop).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().local_addr()
    }

    /// A second handle to the same socket (a `dup`ed fd).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        dup::<std::net::TcpListener>(self.as_raw_fd()).map(TcpListener::from)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.s.get().take_error()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.s.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.s.get().ttl()
    }
}

/// Iterator of [`TcpListener::incoming`]; never returns `None`.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    #[track_caller]
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}
