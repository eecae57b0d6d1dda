//! The readiness state machine of one registration: a readiness word and two waiter lists.
//!
//! This file is the part of the reactor that loom checks; it knows nothing about mio. The
//! reactor calls [`ScheduledIo::set_ready`] when epoll reports an event for the registration,
//! and callers of blocking socket operations call [`ScheduledIo::wait`].
//!
//! # Fields and who touches them
//!
//! * `state: AtomicUsize` — the readiness word. Bits 0..6 are readiness flags ([`READABLE`],
//!   [`WRITABLE`], [`READ_CLOSED`], [`WRITE_CLOSED`], [`ERROR`], [`SHUTDOWN`]); the bits from
//!   `TICK_SHIFT` up hold a wrapping *tick* that changes on every event. The reactor ORs flags in
//!   and advances the tick (`set_ready`, a CAS loop); a waiter clears its direction's flag with a
//!   CAS that succeeds only if the tick is still the one it saw before its syscall
//!   (`clear_ready`). Nothing else writes it.
//! * `read` / `write: Mutex<WaiterList>` — the [`Unparker`]s of the callers parked for that
//!   direction, plus an `epoch` that counts how often the list was drained. Waiters push and
//!   remove themselves under the lock; the reactor drains the whole list under the lock (swapping
//!   it with a spare vector, so the unparks run outside the lock and nothing is allocated in
//!   steady state) and bumps the epoch. A waiter that finds the epoch changed knows it was drained
//!   (and unparked) and has nothing to remove.
//!
//! # The protocol of a blocking call (`wait`)
//!
//! 1. `snap = state.load()`.
//! 2. If `snap` has the direction's ready flag (or a closing flag), run the syscall; anything
//!    but `WouldBlock` is returned. If not, skip to 4: the flag is cleared only by step 3 or
//!    after a successful syscall that drained the buffer (a short stream read or write, see
//!    `wait_with`), in both cases only if no event arrived since that attempt's snapshot, so
//!    the syscall would fail; a registration starts with both flags set.
//! 3. `clear_ready(snap)`: clear the direction's flag if the tick still equals `snap`'s; if the
//!    tick moved, an event arrived after step 1, so go back to 1 without parking.
//! 4. Lock the direction's list; if the tick moved since `snap`, unlock and go back to 1;
//!    otherwise push our `Unparker`, note the epoch, unlock.
//! 5. `park_until(deadline)`; then remove our entry (if the epoch is unchanged) and go back to 1.
//!    A drop guard removes the entry also when the park unwinds (a cancelled fiber).
//!
//! The reactor's side (`set_ready`) is: advance the tick (and OR the flags), *then* lock the
//! list(s) the event concerns and unpark every entry.
//!
//! # Why no wake-up is lost
//!
//! Take an event `E` that makes the syscall succeed, delivered after the syscall of step 2
//! failed (if it was delivered before step 1, the syscall already saw the data). `E`'s tick
//! advance is after step 1, so either step 3 or step 4 sees the new tick and the caller retries
//! — or `E` advances the tick only after step 4's check. Step 4 checks the tick and pushes the
//! waiter under the same lock that `E`'s wake takes *after* advancing the tick, so in that case
//! `E`'s wake locks the list after our push and unparks us. The unpark may come before our
//! `park`: the token of [`crate::park`] makes that `park` return at once. A spurious return just
//! costs one more syscall.
//!
//! Closing events (`READ_CLOSED`, `WRITE_CLOSED`, `ERROR`) and deregistration (`SHUTDOWN`) wake
//! both lists, so every blocked caller retries and its syscall returns the real error (or EOF).
//!
//! Every event wakes *all* waiters of its direction (edge-triggered readiness may cover several
//! accepts or reads, and there is no second edge for the rest); the ones that lose the race get
//! `WouldBlock` and park again. Many fibers accepting on one listener therefore see a thundering
//! herd on each connection; one fiber per socket direction, the usual shape, does not.
//!
//! # Waiter storage
//!
//! A waiter is one [`Unparker`] (a reference-counted pointer, cloned without allocating) pushed
//! onto a per-direction `Vec`. Drained vectors keep their capacity and are swapped back in as the
//! spare, so in steady state a blocking call allocates nothing; a list grows (allocates) only when
//! more callers than ever before block on the same registration and direction at once.
//! Removal after a timeout or a spurious wake-up is a linear search, which only runs when the list
//! was not drained in between.

use std::io;
use std::mem;
use std::time::Instant;

use crate::loom::{AtomicUsize, Mutex, Ordering::*};
use crate::park::{self, Unparker};

/// The source is readable (or has a pending connection).
pub const READABLE: usize = 1 << 0;
/// The source is writable (or a connect finished).
pub const WRITABLE: usize = 1 << 1;
/// The read half is closed (peer sent FIN, or hang-up).
pub const READ_CLOSED: usize = 1 << 2;
/// The write half is closed (hang-up, reset).
pub const WRITE_CLOSED: usize = 1 << 3;
/// An error is pending on the source (`SO_ERROR`).
pub const ERROR: usize = 1 << 4;
/// The registration was deregistered; waiting on it is an error.
pub const SHUTDOWN: usize = 1 << 5;

/// Flags that wake both directions.
const WAKE_ALL: usize = READ_CLOSED | WRITE_CLOSED | ERROR | SHUTDOWN;
const FLAGS: usize = (1 << 6) - 1;
const TICK_SHIFT: u32 = 8;
const TICK_ONE: usize = 1 << TICK_SHIFT;

fn tick(state: usize) -> usize {
    state >> TICK_SHIFT
}

/// Which half of the socket a caller waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Waits for [`READABLE`] (or a closing event).
    Read,
    /// Waits for [`WRITABLE`] (or a closing event).
    Write,
}

impl Direction {
    fn ready_flag(self) -> usize {
        match self {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        }
    }
}

#[derive(Debug, Default)]
struct WaiterList {
    waiters: Vec<Unparker>,
    /// An empty vector with capacity, swapped in when the list is drained.
    spare: Vec<Unparker>,
    /// Incremented by every drain that took at least one waiter.
    epoch: u64,
}

/// Readiness word and waiters of one registration. See the module docs for the protocol.
#[derive(Debug)]
pub struct ScheduledIo {
    state: AtomicUsize,
    read: Mutex<WaiterList>,
    write: Mutex<WaiterList>,
}

impl Default for ScheduledIo {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes a parked caller's entry from its list when it stops waiting (normally or by unwind).
struct WaiterGuard<'a> {
    list: &'a Mutex<WaiterList>,
    epoch: u64,
    unparker: Unparker,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut list = self.list.lock();
        if list.epoch != self.epoch {
            return; // drained: the reactor took (and unparked) our entry
        }
        if let Some(i) = list
            .waiters
            .iter()
            .position(|u| u.will_unpark(&self.unparker))
        {
            list.waiters.swap_remove(i);
        }
    }
}

impl ScheduledIo {
    /// A registration with no waiters, whose directions count as ready until a syscall says
    /// otherwise (the first call always tries its syscall).
    pub fn new() -> Self {
        Self {
            state: AtomicUsize::new(READABLE | WRITABLE),
            read: Mutex::new(WaiterList::default()),
            write: Mutex::new(WaiterList::default()),
        }
    }

    /// The readiness flags (without the tick).
    pub fn readiness(&self) -> usize {
        self.state.load(Acquire) & FLAGS
    }

    fn list(&self, dir: Direction) -> &Mutex<WaiterList> {
        match dir {
            Direction::Read => &self.read,
            Direction::Write => &self.write,
        }
    }

    /// Records an event (ORs `flags` in, advances the tick), then wakes the waiters it concerns:
    /// readers for [`READABLE`], writers for [`WRITABLE`], everyone for closing flags.
    /// Called by the reactor's poller (and by deregistration with [`SHUTDOWN`]).
    pub fn set_ready(&self, flags: usize) {
        let flags = flags & FLAGS;
        let mut cur = self.state.load(Relaxed);
        loop {
            let new = (cur & FLAGS | flags) | (cur & !FLAGS).wrapping_add(TICK_ONE);
            match self.state.compare_exchange_weak(cur, new, AcqRel, Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if flags & (READABLE | WAKE_ALL) != 0 {
            Self::wake_list(&self.read);
        }
        if flags & (WRITABLE | WAKE_ALL) != 0 {
            Self::wake_list(&self.write);
        }
    }

    /// Unparks every waiter in `list`. The unparks run outside the lock.
    fn wake_list(list: &Mutex<WaiterList>) {
        let mut batch = {
            let mut l = list.lock();
            if l.waiters.is_empty() {
                return;
            }
            let spare = mem::take(&mut l.spare);
            l.epoch = l.epoch.wrapping_add(1);
            mem::replace(&mut l.waiters, spare)
        };
        for u in batch.drain(..) {
            u.unpark();
        }
        let mut l = list.lock();
        if l.spare.capacity() < batch.capacity() {
            l.spare = batch;
        }
    }

    /// Clears `dir`'s ready flag if the tick is still `snap`'s. Returns false if an event arrived
    /// since `snap` was taken (the caller must retry its syscall instead of parking).
    fn clear_ready(&self, snap: usize, dir: Direction) -> bool {
        let mut cur = self.state.load(Acquire);
        loop {
            if tick(cur) != tick(snap) {
                return false;
            }
            let new = cur & !dir.ready_flag();
            if new == cur {
                return true;
            }
            match self.state.compare_exchange_weak(cur, new, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Runs `op` until it returns something other than `WouldBlock`, parking the caller between
    /// attempts until an event for `dir` (or a closing event) arrives or `deadline` passes
    /// (then `TimedOut`; the syscall is tried once more first, if readiness allows). After
    /// [`SHUTDOWN`], a `WouldBlock` becomes an error instead of a park.
    pub fn wait<R>(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        self.wait_with(dir, op, |_| false, || Ok((deadline, ())))
    }

    /// [`wait`](Self::wait), with two refinements for the socket layer:
    ///
    /// * `drained(&result)`: true when a successful `op` proves that it emptied the kernel
    ///   buffer for `dir` (a stream read shorter than its buffer, a write shorter than its
    ///   data). The ready flag is then cleared as after a `WouldBlock` (only if no event arrived
    ///   since the snapshot), so the next call parks without a syscall that would fail.
    /// * `prepare()`: called once, just before the first park, for the deadline and a guard kept
    ///   until the call returns (the socket layer reads its timeout and records the wait for
    ///   `Runtime::dump` there, so a call that never parks pays for neither).
    pub fn wait_with<R, G>(
        &self,
        dir: Direction,
        mut op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
        mut prepare: impl FnMut() -> io::Result<(Option<Instant>, G)>,
    ) -> io::Result<R> {
        let list = self.list(dir);
        let mut timed_out = false;
        let mut prepared: Option<(Option<Instant>, G)> = None;
        loop {
            let snap = self.state.load(Acquire);
            // Step 2 is skipped while the snapshot says the direction is not ready: the flag is
            // cleared only after a `WouldBlock` or a draining `op` with no event since, so the
            // syscall would fail; any later event moves the tick, which step 4 sees.
            if snap & (dir.ready_flag() | WAKE_ALL) != 0 {
                match op() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(r) => {
                        if drained(&r) {
                            self.clear_ready(snap, dir);
                        }
                        return Ok(r);
                    }
                    Err(e) => return Err(e),
                }
                if snap & SHUTDOWN != 0 {
                    return Err(io::Error::other(
                        "the socket's reactor registration is gone",
                    ));
                }
                if !self.clear_ready(snap, dir) {
                    continue;
                }
            }
            if timed_out {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the operation timed out",
                ));
            }
            let deadline = match &prepared {
                Some((deadline, _)) => *deadline,
                None => prepared.insert(prepare()?).0,
            };
            let unparker = park::unparker();
            let epoch = {
                let mut l = list.lock();
                if tick(self.state.load(Acquire)) != tick(snap) {
                    continue;
                }
                l.waiters.push(unparker.clone());
                l.epoch
            };
            let guard = WaiterGuard {
                list,
                epoch,
                unparker,
            };
            timed_out = park::park_until(deadline);
            drop(guard);
        }
    }

    #[cfg(test)]
    fn waiter_count(&self, dir: Direction) -> usize {
        self.list(dir).lock().waiters.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    fn would_block<T>() -> io::Result<T> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn flags_and_tick() {
        let io = ScheduledIo::new();
        assert_eq!(
            io.readiness(),
            READABLE | WRITABLE,
            "a new registration tries first"
        );
        let snap = io.state.load(Acquire);
        assert!(io.clear_ready(snap, Direction::Write));
        io.set_ready(READABLE);
        assert_eq!(io.readiness(), READABLE);
        let snap = io.state.load(Acquire);
        assert!(io.clear_ready(snap, Direction::Read));
        assert_eq!(io.readiness(), 0);
        io.set_ready(WRITABLE);
        assert!(!io.clear_ready(snap, Direction::Write), "tick moved");
        assert_eq!(io.readiness(), WRITABLE);
    }

    /// After an `op` that drained the buffer, the next call parks without running `op` until
    /// an event arrives.
    #[test]
    fn a_drained_direction_parks_without_a_syscall_until_an_event() {
        let io = Arc::new(ScheduledIo::new());
        let n = io
            .wait_with(
                Direction::Read,
                || Ok(3usize),
                |&n| n < 8,
                || Ok((None, ())),
            )
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            io.readiness() & READABLE,
            0,
            "a short read clears readiness"
        );
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let (io, calls) = (io.clone(), calls.clone());
            std::thread::spawn(move || {
                io.wait(Direction::Read, None, || {
                    calls.fetch_add(1, SeqCst);
                    Ok(7usize)
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(SeqCst), 0, "no syscall while not ready");
        io.set_ready(READABLE);
        assert_eq!(reader.join().unwrap().unwrap(), 7);
        assert_eq!(calls.load(SeqCst), 1);
    }

    #[test]
    fn timeout_returns_timed_out_and_leaves_no_waiter() {
        let io = ScheduledIo::new();
        let start = Instant::now();
        let r: io::Result<()> = io.wait(
            Direction::Read,
            Some(start + Duration::from_millis(30)),
            would_block,
        );
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(io.waiter_count(Direction::Read), 0);
    }

    #[test]
    fn event_wakes_parked_thread() {
        let io = Arc::new(ScheduledIo::new());
        let data = Arc::new(AtomicBool::new(false));
        let (io2, data2) = (io.clone(), data.clone());
        let t = std::thread::spawn(move || {
            io2.wait(Direction::Read, None, || {
                if data2.swap(false, SeqCst) {
                    Ok(7)
                } else {
                    would_block()
                }
            })
        });
        while io.waiter_count(Direction::Read) == 0 {
            std::thread::yield_now();
        }
        // A write event must not wake the reader.
        io.set_ready(WRITABLE);
        data.store(true, SeqCst);
        io.set_ready(READABLE);
        assert_eq!(t.join().unwrap().unwrap(), 7);
        assert_eq!(io.waiter_count(Direction::Read), 0);
    }

    #[test]
    fn shutdown_fails_waiters() {
        let io = Arc::new(ScheduledIo::new());
        let io2 = io.clone();
        let t = std::thread::spawn(move || io2.wait::<()>(Direction::Write, None, would_block));
        while io.waiter_count(Direction::Write) == 0 {
            std::thread::yield_now();
        }
        io.set_ready(SHUTDOWN);
        assert_eq!(t.join().unwrap().unwrap_err().kind(), io::ErrorKind::Other);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! `RUSTFLAGS="--cfg loom" cargo test -p filament-runtime --lib reactor::readiness`
    use super::*;
    use crate::loom::{thread, Arc, AtomicBool};

    /// A fake non-blocking "socket": `op` consumes one unit of data or fails with WouldBlock.
    fn take(flag: &AtomicBool) -> io::Result<()> {
        // A CAS, not `swap`: loom 0.7 lets a concurrent plain store slip between the read and
        // the write of a `swap` (tokio-rs/loom#254), which would fake a lost wake-up here.
        if flag.compare_exchange(true, false, AcqRel, Acquire).is_ok() {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// The event may land anywhere relative to the failed syscall, the flag clear, the waiter
    /// registration and the park: the reader must always finish.
    #[test]
    fn event_racing_the_park() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let data = Arc::new(AtomicBool::new(false));
            let (io2, data2) = (io.clone(), data.clone());
            let reader = thread::spawn(move || io2.wait(Direction::Read, None, || take(&data2)));
            data.store(true, Release);
            io.set_ready(READABLE);
            reader.join().unwrap().unwrap();
            assert_eq!(io.waiter_count(Direction::Read), 0);
        });
    }

    /// A short read clears readiness; new data (and its event) may land anywhere around that
    /// clear and the next call, which skips its syscall while the flag is clear: the second
    /// read must still get the data.
    #[test]
    fn event_racing_a_drained_read() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let data = Arc::new(AtomicBool::new(true));
            let (io2, data2) = (io.clone(), data.clone());
            let reader = thread::spawn(move || {
                io2.wait_with(
                    Direction::Read,
                    || take(&data2),
                    |_| true,
                    || Ok((None, ())),
                )
                .unwrap();
                io2.wait(Direction::Read, None, || take(&data2))
            });
            // The second unit of data arrives after the first was taken (or not yet).
            while data.load(Acquire) {
                thread::yield_now();
            }
            data.store(true, Release);
            io.set_ready(READABLE);
            reader.join().unwrap().unwrap();
            assert_eq!(io.waiter_count(Direction::Read), 0);
        });
    }

    /// A reader and a writer blocked on the same registration; each event wakes its own side.
    #[test]
    fn two_waiters_two_directions() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let rd = Arc::new(AtomicBool::new(false));
            let wr = Arc::new(AtomicBool::new(false));
            let (io_r, rd2) = (io.clone(), rd.clone());
            let reader = thread::spawn(move || io_r.wait(Direction::Read, None, || take(&rd2)));
            let (io_w, wr2) = (io.clone(), wr.clone());
            let writer = thread::spawn(move || io_w.wait(Direction::Write, None, || take(&wr2)));
            wr.store(true, Release);
            io.set_ready(WRITABLE);
            rd.store(true, Release);
            io.set_ready(READABLE);
            reader.join().unwrap().unwrap();
            writer.join().unwrap().unwrap();
        });
    }

    /// Two readers blocked on one registration; a close wakes both, and both see the "error".
    #[test]
    fn close_wakes_both_readers() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let closed = Arc::new(AtomicBool::new(false));
            let op = |closed: &AtomicBool| -> io::Result<()> {
                if closed.load(Acquire) {
                    Err(io::ErrorKind::ConnectionReset.into())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            };
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (io, closed) = (io.clone(), closed.clone());
                    thread::spawn(move || io.wait(Direction::Read, None, || op(&closed)))
                })
                .collect();
            closed.store(true, Release);
            io.set_ready(READ_CLOSED | WRITE_CLOSED);
            for t in threads {
                let e = t.join().unwrap().unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
            }
        });
    }
}
