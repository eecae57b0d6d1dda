//! [`UdpSocket`]: std's `UdpSocket` API; sends and receives park the caller.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::Interest;

use crate::socket::{dup, impl_fd_traits, Site, Socket, Timeout};
use crate::sys;

/// A UDP socket, like [`std::net::UdpSocket`], whose blocking calls park the calling fiber (or
/// thread). Timeouts expire with [`io::ErrorKind::TimedOut`].
///
/// A fiber parked in a send or receive shows in `Runtime::dump` as waiting on
/// `"UdpSocket::<method>"` (e.g. `"UdpSocket::recv_from"`) at the caller's location.
pub struct UdpSocket {
    s: Socket<mio::net::UdpSocket>,
}

impl_fd_traits!(UdpSocket, mio::net::UdpSocket, std::net::UdpSocket);

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UdpSocket");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.s.fd()).finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` (each resolved address tried in turn, like std).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        sys::each_addr(addr, |a| {
            Ok(UdpSocket {
                s: Socket::new(mio::net::UdpSocket::bind(*a)?, false),
            })
        })
    }

    /// Sends `buf` to `addr` (the first resolved address, like std), parking while the send
    /// buffer is full.
    #[track_caller]
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let site = Site::here("UdpSocket::send_to");
        let target = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.s.io(Interest::WRITABLE, Timeout::Write, site, |s| {
            s.send_to(buf, target)
        })
    }

    /// Receives one datagram, parking until one arrives; returns its size and sender.
    #[track_caller]
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let site = Site::here("UdpSocket::recv_from");
        self.s.io(Interest::READABLE, Timeout::Read, site, |s| {
            s.recv_from(buf)
        })
    }

    /// Like [`recv_from`](Self::recv_from) but leaves the datagram queued.
    #[track_caller]
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let site = Site::here("UdpSocket::peek_from");
        self.s.io(Interest::READABLE, Timeout::Read, site, |s| {
            s.peek_from(buf)
        })
    }

    /// Sets the default destination and the only accepted source (each resolved address tried
    /// in turn, like std).
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        sys::each_addr(addr, |a| self.s.get().connect(*a))
    }

    /// Sends to the connected peer.
    #[track_caller]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let site = Site::here("UdpSocket::send");
        self.s
            .io(Interest::WRITABLE, Timeout::Write, site, |s| s.send(buf))
    }

    /// Receives from the connected peer.
    #[track_caller]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let site = Site::here("UdpSocket::recv");
        self.s
            .io(Interest::READABLE, Timeout::Read, site, |s| s.recv(buf))
    }

    /// Like [`recv`](Self::recv) but leaves the datagram queued.
    #[track_caller]
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let site = Site::here("UdpSocket::peek");
        self.s
            .io(Interest::READABLE, Timeout::Read, site, |s| s.peek(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().local_addr()
    }

    /// The connected peer's address (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.get().peer_addr()
    }

    /// A second handle to the same socket (a `dup`ed fd): options and timeouts are shared.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        dup::<std::net::UdpSocket>(self.as_raw_fd()).map(UdpSocket::from)
    }

    /// Bounds later receives by `dur` (`None`: forever; `Some(0)`: `InvalidInput`).
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.s.set_timeout(libc::SO_RCVTIMEO, dur)
    }

    /// Bounds later sends by `dur`.
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

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.s.get().set_broadcast(on)
    }

    /// Reads `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.s.get().broadcast()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.s.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.s.get().ttl()
    }

    /// Joins an IPv4 multicast group.
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.s.get().join_multicast_v4(multiaddr, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.s.get().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group.
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.s.get().leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.s.get().leave_multicast_v6(multiaddr, interface)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.s.get().take_error()
    }
}
