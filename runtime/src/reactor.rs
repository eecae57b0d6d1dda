//! The I/O reactor: one `mio::Poll` per runtime, registrations, readiness -> unpark.
//!
//! # Shape
//!
//! * [`Reactor`] owns the `mio::Poll` (behind a lock that only the polling thread holds), a
//!   cloned `mio::Registry` for registering without that lock, and a `mio::Waker`.
//! * A [`Registration`] is one source registered edge-triggered for `READABLE | WRITABLE`. Its
//!   state is a `ScheduledIo` (see `reactor/readiness.rs`): a readiness word — flags plus a tick
//!   that changes on every event — and separate read and write waiter lists of
//!   [`Unparker`](crate::park::Unparker)s.
//! * [`Registration::do_io`] tries the syscall first and parks (fiber or thread, through
//!   [`crate::park`]) only on `WouldBlock`; [`Reactor::poll`] records each event in the
//!   registration's word and unparks the waiters it concerns. `readiness.rs` states the protocol
//!   and why an event between the failed syscall and the park is never lost.
//!
//! # Tokens and lifetime of registrations
//!
//! The mio token of a registration is the address of its `ScheduledIo`, from `Arc::into_raw`:
//! that strong reference belongs to the reactor and keeps the address valid while epoll may still
//! report it. `poll` turns a token back into a `&ScheduledIo` without a lookup table.
//! [`Registration::deregister`] removes the source from epoll and then queues the token for
//! release; `poll` releases queued tokens at its *start*, before it waits. The poll lock makes
//! polls sequential, so a queued token was deregistered before this poll's `epoll_wait` began (it
//! cannot be reported again) and every earlier poll has finished dispatching its events (nobody
//! still holds the reference). A `Registration` dropped without `deregister` (or whose
//! `deregister` failed) leaks its `ScheduledIo` rather than risk a dangling token.
//!
//! # Threads without a reactor
//!
//! [`current`] is the reactor of the runtime whose worker runs the caller (set by [`enter`]);
//! on other threads it is `None`. Callers there (the `filament-net` types) wait with
//! `libc::poll` on the file descriptor instead; see that crate.
//!
//! # Field ownership
//!
//! * `poll` (`Mutex<PollState>`): the poller only, via `try_lock` (a concurrent `poll` returns
//!   `Ok(0)`).
//! * `registry`, `waker`: any thread (mio makes them thread-safe).
//! * `released` (`Mutex<Vec<usize>>`): pushed by `deregister`, drained by `poll`.
//! * statistics: relaxed counters, any thread.

#[cfg(not(loom))]
mod deadline_timer;
#[cfg_attr(loom, allow(dead_code))]
mod readiness;

#[cfg(not(loom))]
pub use self::mio_reactor::*;

#[cfg(not(loom))]
mod mio_reactor {
    use std::fmt;
    use std::io;
    use std::time::{Duration, Instant};

    use mio::event::Source;
    use mio::{Events, Interest, Poll, Registry, Token, Waker};

    use super::deadline_timer::DeadlineTimer;
    use super::readiness::{self, Direction, ScheduledIo};
    use crate::loom::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::*};

    /// The token of the reactor's waker; registration tokens are `ScheduledIo` addresses, which
    /// are never `usize::MAX`.
    const WAKER_TOKEN: Token = Token(usize::MAX);
    /// The token of the deadline timer (not an address either: odd).
    const TIMER_TOKEN: Token = Token(usize::MAX - 2);
    const EVENTS_CAPACITY: usize = 1024;

    struct PollState {
        poll: Poll,
        events: Events,
        /// Ends a blocking poll at its deadline with microsecond precision.
        deadline_timer: DeadlineTimer,
    }

    /// One runtime's I/O reactor (one `mio::Poll`). `Send + Sync`; shared by `Arc`.
    pub struct Reactor {
        poll: Mutex<PollState>,
        registry: Registry,
        waker: Waker,
        /// Tokens of deregistered sources whose reference the next `poll` releases.
        released: Mutex<Vec<usize>>,
        polls: AtomicU64,
        events: AtomicU64,
        live: AtomicUsize,
    }

    /// Counters of a [`Reactor`], from [`Reactor::stats`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ReactorStats {
        /// Calls of [`Reactor::poll`] that waited on the OS (not the ones that found another
        /// poller).
        pub polls: u64,
        /// I/O events handled (the waker's events not counted).
        pub events: u64,
        /// Registrations registered and not yet deregistered.
        pub registrations: usize,
    }

    impl fmt::Debug for Reactor {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Reactor")
                .field("stats", &self.stats())
                .finish_non_exhaustive()
        }
    }

    impl Reactor {
        /// Creates a reactor (an epoll instance and its waker).
        pub fn new() -> io::Result<Reactor> {
            let poll = Poll::new()?;
            let registry = poll.registry().try_clone()?;
            let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
            let deadline_timer = DeadlineTimer::new(poll.registry(), TIMER_TOKEN)?;
            Ok(Reactor {
                poll: Mutex::new(PollState {
                    poll,
                    events: Events::with_capacity(EVENTS_CAPACITY),
                    deadline_timer,
                }),
                registry,
                waker,
                released: Mutex::new(Vec::new()),
                polls: AtomicU64::new(0),
                events: AtomicU64::new(0),
                live: AtomicUsize::new(0),
            })
        }

        /// Waits for readiness (at most `timeout`; `None` = forever) and wakes the waiters of
        /// every ready registration. Called by one thread at a time; if another thread is already
        /// polling, returns `Ok(0)` at once. Returns the number of I/O events handled. An
        /// interrupted wait (`EINTR`) returns `Ok(0)`.
        pub fn poll(&self, timeout: Option<Duration>) -> io::Result<usize> {
            self.poll_unless(timeout, || false)
        }

        /// [`poll`](Self::poll), but first, holding the poll lock, asks `woken` whether a
        /// wake-up already arrived; if so, polls without blocking.
        ///
        /// Why the parked worker needs this: a non-blocking poll by another thread (a busy
        /// worker's maintenance, the monitor) may consume the [`wake`](Self::wake) event that was
        /// meant for the worker about to block here. Every waker publishes its wake-up (the
        /// worker's token, an earlier timer deadline) *before* calling `wake`, and nobody else can
        /// poll while this thread holds the lock. So either `woken` sees the published wake-up,
        /// or the waker's `wake` comes after the check and its event waits in the eventfd for
        /// this poll: the wake-up is never lost.
        pub fn poll_unless(
            &self,
            timeout: Option<Duration>,
            woken: impl FnOnce() -> bool,
        ) -> io::Result<usize> {
            let Some(mut state) = self.poll.try_lock() else {
                return Ok(0);
            };
            let timeout = if woken() {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            self.release_deregistered();
            let PollState {
                poll,
                events,
                deadline_timer,
            } = &mut *state;
            // A blocking poll with a deadline waits for the timerfd instead of epoll's
            // millisecond timeout (`deadline_timer.rs`); if the timer cannot be set, epoll's
            // timeout (rounded up by mio) still ends the wait.
            let timeout = match timeout {
                Some(t) if !t.is_zero() && deadline_timer.arm(t).is_ok() => None,
                None => {
                    let _ = deadline_timer.disarm();
                    None
                }
                t => t,
            };
            self.polls.fetch_add(1, Relaxed);
            match poll.poll(events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(e),
            }
            let mut handled = 0;
            for event in events.iter() {
                let token = event.token();
                if token == WAKER_TOKEN || token == TIMER_TOKEN {
                    continue;
                }
                let mut flags = 0;
                if event.is_readable() {
                    flags |= readiness::READABLE;
                }
                if event.is_writable() {
                    flags |= readiness::WRITABLE;
                }
                if event.is_read_closed() {
                    flags |= readiness::READ_CLOSED;
                }
                if event.is_write_closed() {
                    flags |= readiness::WRITE_CLOSED;
                }
                if event.is_error() {
                    flags |= readiness::ERROR;
                }
                // SAFETY: every token other than WAKER_TOKEN and TIMER_TOKEN is a pointer from
                // `Arc::into_raw` in `register`. That reference is released only by
                // `release_deregistered`, at the start of a later poll, after the source left
                // epoll (module docs); we hold the poll lock, so it is still alive here.
                let io = unsafe { &*(token.0 as *const ScheduledIo) };
                io.set_ready(flags);
                handled += 1;
            }
            self.events.fetch_add(handled as u64, Relaxed);
            Ok(handled)
        }

        /// Releases the reactor's references of deregistered sources. Caller holds the poll lock.
        fn release_deregistered(&self) {
            let tokens = {
                let mut released = self.released.lock();
                if released.is_empty() {
                    return;
                }
                std::mem::take(&mut *released)
            };
            for token in tokens {
                // SAFETY: `token` came from `Arc::into_raw` in `register` and was queued exactly
                // once, by a successful `deregister`; no poll can report it any more and no
                // earlier poll is still dispatching (we hold the poll lock).
                drop(unsafe { Arc::from_raw(token as *const ScheduledIo) });
            }
        }

        /// Makes a poll in progress (or the next one) return promptly.
        pub fn wake(&self) {
            // The only error is a full eventfd counter, which still means "wake up".
            let _ = self.waker.wake();
        }

        /// Registers `source` edge-triggered for `READABLE | WRITABLE`. The returned
        /// [`Registration`] must be deregistered with the same source
        /// ([`Registration::deregister`]) before the source is dropped.
        pub fn register<S: Source + ?Sized>(
            self: &Arc<Self>,
            source: &mut S,
        ) -> io::Result<Registration> {
            let io = Arc::new(ScheduledIo::new());
            let token = Arc::into_raw(io.clone()) as usize;
            if let Err(e) = self.registry.register(
                source,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                // SAFETY: the registration failed, so epoll never saw the token; we take back
                // the reference `into_raw` gave away just above.
                drop(unsafe { Arc::from_raw(token as *const ScheduledIo) });
                return Err(e);
            }
            self.live.fetch_add(1, Relaxed);
            Ok(Registration {
                reactor: self.clone(),
                io,
                token,
                deregistered: AtomicBool::new(false),
            })
        }

        /// True while some source is registered (a relaxed read of a counter written only by
        /// `register` and `deregister`). With none, a non-blocking poll can only find the waker
        /// or the deadline timer, which nobody waits on then: busy workers skip it.
        pub fn has_registrations(&self) -> bool {
            self.live.load(Relaxed) != 0
        }

        /// Counters: polls, events handled, live registrations.
        pub fn stats(&self) -> ReactorStats {
            ReactorStats {
                polls: self.polls.load(Relaxed),
                events: self.events.load(Relaxed),
                registrations: self.live.load(Relaxed),
            }
        }
    }

    impl Drop for Reactor {
        fn drop(&mut self) {
            // Registrations hold an `Arc<Reactor>`, so none is live now; release the queued.
            self.release_deregistered();
        }
    }

    /// One source registered with a [`Reactor`]. Deregister it (with the same source) before
    /// the source is dropped.
    pub struct Registration {
        reactor: Arc<Reactor>,
        io: Arc<ScheduledIo>,
        token: usize,
        deregistered: AtomicBool,
    }

    impl fmt::Debug for Registration {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Registration")
                .field("token", &self.token)
                .field("readiness", &self.io.readiness())
                .finish_non_exhaustive()
        }
    }

    impl Registration {
        /// Runs `op` (a non-blocking syscall) until it does not return `WouldBlock`, parking
        /// the caller (fiber or thread, via [`crate::park`]) between attempts until the
        /// registration is ready for `interest` or `deadline` passes (then
        /// [`io::ErrorKind::TimedOut`]). `WouldBlock` never escapes.
        ///
        /// `interest` is `READABLE` or `WRITABLE`; a combined interest waits for readability.
        /// Closing and error events wake every waiter: the next `op` returns the real error.
        /// After [`deregister`](Self::deregister), a `WouldBlock` becomes an error.
        pub fn do_io<R>(
            &self,
            interest: Interest,
            deadline: Option<Instant>,
            op: impl FnMut() -> io::Result<R>,
        ) -> io::Result<R> {
            self.io.wait(Self::direction(interest), deadline, op)
        }

        /// [`do_io`](Self::do_io) with two refinements: `drained(&result)` says a successful
        /// `op` emptied the kernel buffer (a short stream read or write), which clears the
        /// direction's readiness so the next call parks without a failing syscall (only if no
        /// event arrived meanwhile); `prepare()` gives the deadline and a guard kept until the
        /// call returns, and is called only if the call parks (`reactor/readiness.rs` has the
        /// protocol).
        pub fn do_io_with<R, G>(
            &self,
            interest: Interest,
            op: impl FnMut() -> io::Result<R>,
            drained: impl Fn(&R) -> bool,
            prepare: impl FnMut() -> io::Result<(Option<Instant>, G)>,
        ) -> io::Result<R> {
            self.io
                .wait_with(Self::direction(interest), op, drained, prepare)
        }

        fn direction(interest: Interest) -> Direction {
            if interest.is_readable() {
                Direction::Read
            } else {
                Direction::Write
            }
        }

        /// The reactor this registration belongs to.
        pub fn reactor(&self) -> &Arc<Reactor> {
            &self.reactor
        }

        /// Removes `source` (the one registered) from the reactor and wakes every waiter (their
        /// next `WouldBlock` becomes an error). Idempotent: later calls return `Ok(())`.
        pub fn deregister<S: Source + ?Sized>(&self, source: &mut S) -> io::Result<()> {
            if self.deregistered.swap(true, AcqRel) {
                return Ok(());
            }
            let result = self.reactor.registry.deregister(source);
            self.io.set_ready(readiness::SHUTDOWN);
            self.reactor.live.fetch_sub(1, Relaxed);
            if result.is_ok() {
                self.reactor.released.lock().push(self.token);
            }
            result
        }
    }
}

/// The per-thread current reactor (`current` / `enter`).
#[cfg(not(loom))]
mod current_reactor {
    use super::Reactor;
    use crate::loom::Arc;
    use std::cell::RefCell;
    use std::marker::PhantomData;

    thread_local! {
        static CURRENT: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
    }

    /// The reactor of the runtime whose worker thread calls this (`None` on other threads).
    ///
    /// `#[inline(never)]`: the thread-local is read afresh after a fiber switch (design
    /// decision 7).
    #[inline(never)]
    pub fn current() -> Option<Arc<Reactor>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Makes `reactor` current on this thread until the guard drops (worker threads call this
    /// at start). Guards nest: dropping one restores the reactor that was current before.
    pub fn enter(reactor: Arc<Reactor>) -> EnterGuard {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(reactor));
        EnterGuard {
            previous,
            _not_send: PhantomData,
        }
    }

    /// Restores the previously current reactor when dropped. Not `Send`: it belongs to the
    /// thread that entered.
    #[must_use = "the reactor is current only while the guard lives"]
    pub struct EnterGuard {
        previous: Option<Arc<Reactor>>,
        _not_send: PhantomData<*const ()>,
    }

    impl std::fmt::Debug for EnterGuard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EnterGuard").finish_non_exhaustive()
        }
    }

    impl Drop for EnterGuard {
        fn drop(&mut self) {
            let previous = self.previous.take();
            // `try_with`: during thread teardown the slot may already be gone.
            let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
        }
    }
}

#[cfg(not(loom))]
pub use self::current_reactor::{current, enter, EnterGuard};

#[cfg(all(test, not(loom)))]
mod tests;
