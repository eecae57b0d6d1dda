//! `Socket<T>`: a non-blocking mio socket plus the reactor registration it makes lazily, and the
//! one place where every blocking call of this crate waits.
//!
//! # How a call blocks
//!
//! [`Socket::io`] runs the syscall first (on a registered socket: if its readiness word does not
//! say the syscall would fail). Only when it has to wait does it compute the deadline (the
//! socket's `SO_RCVTIMEO`/`SO_SNDTIMEO`, read back from the fd), in one of two ways:
//!
//! * **With a reactor.** If the socket is already registered, or the calling thread has a
//!   reactor ([`reactor::current`], set on runtime workers), the socket is registered with it
//!   (once, under `init`) and the wait is [`Registration::do_io`]: the caller (fiber or thread)
//!   parks until readiness. A registration is kept for the socket's life, whoever calls later.
//! * **Without one** (a plain OS thread, socket never registered): `poll(2)` on the fd for the
//!   interest, with the deadline, then the syscall again, in a loop.
//!
//! Reading the timeouts back costs a `getsockopt` per wait, so a socket remembers whether any
//! can be set at all: not for one this crate bound, connected or accepted (from a listener
//! without them; accepted sockets inherit the listener's options), until `set_read_timeout` /
//! `set_write_timeout` is called, the fd is lent out (`AsRawFd`, `AsFd`: anything may set
//! options through it) or the socket is cloned (`try_clone` lends the fd; the clone, like any
//! socket converted from std or a raw fd, starts unknown). After that, every wait reads them.
//!
//! # What `Runtime::dump` shows
//!
//! Every public blocking call is `#[track_caller]` and passes a [`Site`] (what it is, e.g.
//! `"TcpStream::read"`, and its caller's location). Only once the first attempt returned
//! `WouldBlock` (or a connect is in progress), [`Socket::wait`] records the site on the calling
//! fiber (`filament_runtime::fiber::waiting`) for the whole wait; a ready socket pays nothing.
//!
//! # Drop order
//!
//! `reg` is declared before `io`, so the registration (whose drop deregisters the fd) goes
//! before the mio socket closes the fd, as the reactor requires.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use filament_runtime::reactor::{self, Registration};
use mio::unix::SourceFd;
use mio::Interest;

use crate::sys;

/// Which socket timeout bounds a blocking call.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Timeout {
    /// No timeout (accept, connect without a timeout).
    None,
    /// `SO_RCVTIMEO` (set by `set_read_timeout`).
    Read,
    /// `SO_SNDTIMEO` (set by `set_write_timeout`).
    Write,
}

/// What a blocking call waits on and where its caller is, for `Runtime::dump` (built by the
/// public `#[track_caller]` methods, recorded only once a call would block).
pub(crate) use filament_runtime::park::WaitSite as Site;

/// A registration and the fd it was made for; deregisters on drop.
#[derive(Debug)]
struct RegCell {
    reg: OnceLock<Registration>,
    init: Mutex<()>,
    fd: RawFd,
}

impl Drop for RegCell {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.get() {
            // Errors only mean the fd is already out of epoll; nothing to undo.
            let _ = reg.deregister(&mut SourceFd(&self.fd));
        }
    }
}

/// A non-blocking mio socket and its lazily made reactor registration.
#[derive(Debug)]
pub(crate) struct Socket<T: AsRawFd> {
    reg: RegCell,
    /// False while no timeout can be set on the socket, so waits need not read them back (see
    /// the module docs).
    timeouts_unknown: AtomicBool,
    io: T,
}

impl<T: AsRawFd> Socket<T> {
    /// Wraps a socket that is already in non-blocking mode. `timeouts_unknown`: false only
    /// for a socket this crate created (bound, connected, or accepted from a listener whose
    /// timeouts are known to be unset).
    pub(crate) fn new(io: T, timeouts_unknown: bool) -> Self {
        Socket {
            reg: RegCell {
                reg: OnceLock::new(),
                init: Mutex::new(()),
                fd: io.as_raw_fd(),
            },
            timeouts_unknown: AtomicBool::new(timeouts_unknown),
            io,
        }
    }

    /// The mio socket, for calls that never block.
    pub(crate) fn get(&self) -> &T {
        &self.io
    }

    /// Deregisters (if registered) and returns the mio socket.
    pub(crate) fn into_inner(self) -> T {
        let Socket { reg, io, .. } = self;
        drop(reg);
        io
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }

    /// The fd, lent to the user (`AsRawFd`, `AsFd`): from now on anything may set timeouts on
    /// the socket behind our back, so waits read them back from the kernel.
    pub(crate) fn lend_fd(&self) -> RawFd {
        self.timeouts_unknown.store(true, Relaxed);
        self.fd()
    }

    /// True unless no timeout can have been set on the socket.
    pub(crate) fn timeouts_unknown(&self) -> bool {
        self.timeouts_unknown.load(Relaxed)
    }

    /// Runs `op` on the socket until it does not return `WouldBlock`, waiting for `interest`
    /// in between, bounded by the socket's `timeout` (then `TimedOut`); a wait is recorded as
    /// `site`. See the module docs.
    pub(crate) fn io<R>(
        &self,
        interest: Interest,
        timeout: Timeout,
        site: Site,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_drain(interest, timeout, site, op, |_| false)
    }

    /// [`io`](Self::io) for stream reads and writes: `drained(&result)` is true when a
    /// successful `op` emptied the kernel buffer (a read shorter than its buffer, a write
    /// shorter than its data), so that a registered socket's next call parks at once instead
    /// of trying a syscall that would return `WouldBlock` (see `ScheduledIo::wait_with`).
    pub(crate) fn io_drain<R>(
        &self,
        interest: Interest,
        timeout: Timeout,
        site: Site,
        mut op: impl FnMut(&T) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> io::Result<R> {
        if let Some(reg) = self.reg.reg.get() {
            // Registered: the readiness word decides whether the syscall is worth trying, and
            // the timeout is read (and the wait recorded) only if the call parks.
            return reg.do_io_with(
                interest,
                || op(&self.io),
                drained,
                || Ok((self.deadline(timeout)?, site.record())),
            );
        }
        match op(&self.io) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        let deadline = self.deadline(timeout)?;
        self.wait(interest, deadline, site, op)
    }

    /// The deadline of a call that is about to wait: now + the socket's `timeout`, if any.
    fn deadline(&self, timeout: Timeout) -> io::Result<Option<Instant>> {
        if !self.timeouts_unknown() {
            return Ok(None);
        }
        let timeout = match timeout {
            Timeout::None => None,
            Timeout::Read => self.timeout(libc::SO_RCVTIMEO)?,
            Timeout::Write => self.timeout(libc::SO_SNDTIMEO)?,
        };
        Ok(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Like [`io`](Self::io) with an explicit deadline and without the first eager attempt's
    /// special role (the registration path tries `op` first anyway). The caller is expected to
    /// wait: `site` is recorded on the calling fiber for the whole call.
    pub(crate) fn wait<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        site: Site,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        let _recorded = site.record();
        if let Some(reg) = self.registration()? {
            return reg.do_io(interest, deadline, || op(&self.io));
        }
        loop {
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            sys::poll_fd(self.fd(), interest, deadline)?;
        }
    }

    /// The registration: the existing one, or a new one with the caller's reactor, or `None`
    /// when there is neither.
    fn registration(&self) -> io::Result<Option<&Registration>> {
        if let Some(reg) = self.reg.reg.get() {
            return Ok(Some(reg));
        }
        let Some(reactor) = reactor::current() else {
            return Ok(None);
        };
        let _guard = self.reg.init.lock().unwrap_or_else(|e| e.into_inner());
        if self.reg.reg.get().is_none() {
            let reg = reactor.register(&mut SourceFd(&self.fd()))?;
            let _ = self.reg.reg.set(reg);
        }
        Ok(self.reg.reg.get())
    }

    pub(crate) fn timeout(&self, opt: libc::c_int) -> io::Result<Option<Duration>> {
        sys::timeout(self.fd(), opt)
    }

    pub(crate) fn set_timeout(&self, opt: libc::c_int, dur: Option<Duration>) -> io::Result<()> {
        self.timeouts_unknown.store(true, Relaxed);
        sys::set_timeout(self.fd(), opt, dur)
    }
}

/// `Read::read_exact` with std's semantics (retry on `Interrupted`, `UnexpectedEof` when the
/// stream ends early) over `read`; the stream types override the default so that their
/// `#[track_caller]` location reaches the wait record.
pub(crate) fn read_exact(
    mut buf: &mut [u8],
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `Write::write_all` with std's semantics (retry on `Interrupted`, `WriteZero` when a write
/// makes no progress) over `write`; see [`read_exact`].
pub(crate) fn write_all(
    mut buf: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match write(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Implements the fd traits and the std conversions for a socket type `$ty` whose field `s` is
/// a `Socket<$mio>`, with std counterpart `$std`.
macro_rules! impl_fd_traits {
    ($ty:ident, $mio:ty, $std:ty) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.s.lend_fd()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                // SAFETY: the fd is owned by `self` and stays open for the borrow's lifetime.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(self.s.lend_fd()) }
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// Deregisters the socket and gives up the fd, still in non-blocking mode.
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                self.s.into_inner().into_raw_fd()
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// Takes ownership of `fd` and puts it in non-blocking mode (errors ignored: they
            /// mean an invalid fd, which the contract excludes).
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> Self {
                // SAFETY: the caller guarantees `fd` is an open socket of this kind that it
                // owns; ownership moves into the std type.
                let std = unsafe { <$std>::from_raw_fd(fd) };
                Self::from(std)
            }
        }

        impl From<$std> for $ty {
            /// Puts the std socket in non-blocking mode and wraps it.
            fn from(std: $std) -> Self {
                let _ = std.set_nonblocking(true);
                Self {
                    // A socket from elsewhere may carry timeouts.
                    s: $crate::socket::Socket::new(<$mio>::from_std(std), true),
                }
            }
        }

        impl From<$ty> for $std {
            /// Deregisters the socket and returns it in blocking mode, as std expects.
            fn from(s: $ty) -> Self {
                use std::os::fd::{FromRawFd, IntoRawFd};
                let fd = s.s.into_inner().into_raw_fd();
                // SAFETY: `fd` was just released by the mio socket of the same kind; we own it.
                let std = unsafe { <$std>::from_raw_fd(fd) };
                let _ = std.set_nonblocking(false);
                std
            }
        }
    };
}

pub(crate) use impl_fd_traits;

/// Duplicates `fd` (like `try_clone` in std); the copy shares the open file description, so it
/// is non-blocking too and shares the socket options, timeouts included.
pub(crate) fn dup<S: From<std::os::fd::OwnedFd>>(fd: RawFd) -> io::Result<S> {
    // SAFETY: `fd` is open for the duration of this call (borrowed from a live socket).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(S::from(borrowed.try_clone_to_owned()?))
}
