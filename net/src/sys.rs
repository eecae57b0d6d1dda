//! Thin wrappers over the few syscalls that neither std nor mio offer for a non-blocking socket:
//! waiting with `poll(2)` when there is no reactor, and reading/writing `SO_RCVTIMEO` /
//! `SO_SNDTIMEO`, where the sockets keep their timeouts (see the crate docs).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::Interest;

/// The error std returns for a timed-out blocking call on a socket with a timeout; filament
/// uses `TimedOut` (std's `WouldBlock` on Unix would be indistinguishable from non-blocking
/// mode).
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the operation timed out")
}

/// Blocks the calling thread in `poll(2)` until `fd` is ready for `interest` (or reports
/// hang-up/error, which `poll` always does), or `deadline` passes (`TimedOut`). `EINTR` is
/// retried. Used only when the caller has no reactor.
pub(crate) fn poll_fd(fd: RawFd, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
    let events = if interest.is_readable() {
        libc::POLLIN | libc::POLLRDHUP
    } else {
        libc::POLLOUT
    };
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(timed_out());
                }
                // Round up, so we never wake just before the deadline and spin.
                let left = d - now;
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            return Ok(());
        }
        // n == 0: poll's timeout; the loop re-checks the deadline.
    }
}

/// Reads a socket timeout option (`SO_RCVTIMEO` / `SO_SNDTIMEO`); zero means none.
pub(crate) fn timeout(fd: RawFd, opt: libc::c_int) -> io::Result<Option<Duration>> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid for writes and `len` holds the size of `tv`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if tv.tv_sec == 0 && tv.tv_usec == 0 {
        return Ok(None);
    }
    Ok(Some(
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64),
    ))
}

/// Sets a socket timeout option like std does: `Some(0)` is `InvalidInput`, durations below a
/// microsecond round up to one, huge ones saturate. On a non-blocking socket the kernel ignores
/// the option; filament reads it back to compute deadlines.
pub(crate) fn set_timeout(fd: RawFd, opt: libc::c_int, dur: Option<Duration>) -> io::Result<()> {
    let tv = match dur {
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        Some(d) if d.is_zero() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        Some(d) => {
            let secs = d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t;
            let mut tv = libc::timeval {
                tv_sec: secs,
                tv_usec: d.subsec_micros() as libc::suseconds_t,
            };
            if tv.tv_sec == 0 && tv.tv_usec == 0 {
                tv.tv_usec = 1;
            }
            tv
        }
    };
    // SAFETY: `tv` is a valid timeval and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Like std's private `each_addr`: resolves `addr` and returns the first success of `f`, or the
/// last error, or `InvalidInput` when nothing resolved. (Name resolution itself may block.)
pub(crate) fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(&a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}
