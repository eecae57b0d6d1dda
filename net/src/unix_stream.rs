//! [`UnixStream`]: std's `UnixStream` API over a non-blocking socket that parks the caller.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use filament_runtime::park;
use mio::Interest;

use crate::socket::{dup, impl_fd_traits, read_exact, write_all, Site, Socket, Timeout};

/// A Unix-domain stream socket, like [`std::os::unix::net::UnixStream`], whose blocking calls
/// park the calling fiber (or thread). Timeouts expire with [`io::ErrorKind::TimedOut`].
pub struct UnixStream {
    s: Socket<mio::net::UnixStream>,
}

impl_fd_traits!(
    UnixStream,
    mio::net::UnixStream,
    std::os::unix::net::UnixStream
);

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UnixStream");
        if let Ok(a) = self.local_addr() {
            d.field("local", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer", &a);
        }
        d.field("fd", &self.s.fd()).finish()
    }
}

impl UnixStream {
    /// Connects to the socket at `path`. A Unix connect completes at once or, when the
    /// listener's backlog is full, fails with `EAGAIN` and must be retried (there is no
    /// readiness to wait for): the caller then sleeps (parks) 1 ms, doubling up to 32 ms,
    /// between attempts.
    ///
    /// A fiber sleeping here shows in `Runtime::dump` as waiting on `"UnixStream::connect"`
    /// at the caller's location.
    #[track_caller]
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let site = Site::here("UnixStream::connect");
        let path = path.as_ref();
        let mut pause = Duration::from_millis(1);
        let mut recorded = None;
        loop {
            match mio::net::UnixStream::connect(path) {
                Ok(s) => return Ok(UnixStream::from_mio(s, false)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    recorded.get_or_insert_with(|| site.record());
                    let until = Instant::now() + pause;
                    while !park::park_until(Some(until)) {}
                    pause = (pause * 2).min(Duration::from_millis(32));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair of sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((
            UnixStream::from_mio(a, false),
            UnixStream::from_mio(b, false),
        ))
    }

    /// Wraps a stream this crate connected, paired or accepted (see `Socket::new`).
    pub(crate) fn from_mio(s: mio::net::UnixStream, timeouts_unknown: bool) -> UnixStream {
        UnixStream {
            s: Socket::new(s, timeouts_unknown),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().peer_addr()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.s.get().shutdown(how)
    }

    /// A second handle to the same socket (a `dup`ed fd): options and timeouts are shared.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        dup::<std::os::unix::net::UnixStream>(self.as_raw_fd()).map(UnixStream::from)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.s.get().take_error()
    }

    /// Bounds later reads by `dur` (`None`: forever; `Some(0)`: `InvalidInput`).
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.s.set_timeout(libc::SO_RCVTIMEO, dur)
    }

    /// Bounds later writes by `dur`.
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

crate::stream_io::impl_stream_io!(UnixStream, "UnixStream::read", "UnixStream::write");
