//! A timerfd in the reactor's epoll set, so the poller wakes at its deadline to the microsecond.
//!
//! `epoll_wait` takes its timeout in whole milliseconds, and mio rounds a timeout *up* so that a
//! poll never ends early: a worker that must wake in 1.2 ms sleeps 2 ms, and a fiber's 1 ms sleep
//! took between 2 and 3 ms when the runtime was otherwise idle. Instead, before a poll that has a
//! deadline, the poller arms this timer (one `timerfd_settime`) and polls without a timeout; the
//! timer's expiry is an ordinary epoll event that ends the wait.
//!
//! The timer is registered edge-triggered and never read: re-arming resets its expiry count, and
//! each expiry after a re-arm is a new edge. A timer left armed by a poll that ended early (an
//! I/O event, a wake) can wake a later poll once, spuriously; the poller then re-checks and polls
//! again, which is harmless. A poll without a deadline disarms it first.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// The reactor's deadline timer. Used only by the thread holding the poll lock.
pub(super) struct DeadlineTimer {
    fd: OwnedFd,
    armed: bool,
}

impl DeadlineTimer {
    /// Creates the timer (disarmed) and registers it under `token`.
    pub(super) fn new(registry: &Registry, token: Token) -> io::Result<DeadlineTimer> {
        // SAFETY: plain syscall; the result is checked before it is used as a descriptor.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(DeadlineTimer { fd, armed: false })
    }

    /// Makes the timer expire `after` from now (at least 1 µs).
    pub(super) fn arm(&mut self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_micros(1));
        self.set(libc::timespec {
            tv_sec: after.as_secs().min(i64::MAX as u64 / 2) as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        })?;
        self.armed = true;
        Ok(())
    }

    /// Stops a pending expiry, if the timer is armed.
    pub(super) fn disarm(&mut self) -> io::Result<()> {
        if self.armed {
            self.set(libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })?;
            self.armed = false;
        }
        Ok(())
    }

    fn set(&self, value: libc::timespec) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: `fd` is our open timerfd; `spec` is a valid itimerspec and the old value is
        // not requested (null).
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
