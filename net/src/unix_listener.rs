//! [`UnixListener`]: std's `UnixListener` API; `accept` parks the caller.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use mio::Interest;

use crate::socket::{dup, impl_fd_traits, Site, Socket, Timeout};
use crate::UnixStream;

/// A Unix-domain listening socket, like [`std::os::unix::net::UnixListener`], whose `accept`
/// parks the calling fiber (or thread).
pub struct UnixListener {
    s: Socket<mio::net::UnixListener>,
}

impl_fd_traits!(
    UnixListener,
    mio::net::UnixListener,
    std::os::unix::net::UnixListener
);

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UnixListener");
        if let Ok(a) = self.local_addr() {
            d.field("local", &a);
        }
        d.field("fd", &self.s.fd()).finish()
    }
}

impl UnixListener {
    /// Binds to `path` and listens (`AddrInUse` if the path exists).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        Ok(UnixListener {
            s: Socket::new(mio::net::UnixListener::bind(path)?, false),
        })
    }

    /// Accepts a connection, parking until one arrives.
    ///
    /// A fiber parked here (or in [`incoming`](Self::incoming)'s `next`) shows in
    /// `Runtime::dump` as waiting on `"UnixListener::accept"` at the caller's location.
    #[track_caller]
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let site = Site::here("UnixListener::accept");
        let (s, addr) = self
            .s
            .io(Interest::READABLE, Timeout::None, site, |l| l.accept())?;
        Ok((UnixStream::from_mio(s, self.s.timeouts_unknown()), addr))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().local_addr()
    }

    /// A second handle to the same socket (a `dup`ed fd).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        dup::<std::os::unix::net::UnixListener>(self.as_raw_fd()).map(UnixListener::from)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.s.get().take_error()
    }
}

/// Iterator of [`UnixListener::incoming`]; never returns `None`.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<UnixStream>;

    #[track_caller]
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}
