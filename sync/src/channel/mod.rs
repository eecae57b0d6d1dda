//! Multi-producer multi-consumer channels: [`bounded`] (capacity 0 is a rendezvous),
//! [`unbounded`], [`oneshot()`], and [`select!`](crate::select) over several of them.
//!
//! Senders and receivers are cloneable and work from fibers and OS threads alike. Errors follow
//! crossbeam-channel: a failed send hands the value back.
//!
//! * **Disconnection:** when every [`Sender`] is dropped, receivers drain what is buffered and
//!   then get [`RecvError`]; when every [`Receiver`] is dropped, sends fail with the value and
//!   buffered values are dropped.
//! * **Ordering:** values from one sender are received in the order they were sent.
//! * **Cost:** a channel is one `Arc` plus its buffer (pre-allocated up to 1024 slots for
//!   `bounded`; an unbounded buffer grows and keeps its capacity, so a steady state allocates
//!   nothing). A blocked operation waits on an intrusive node on its own stack, and values pass
//!   directly between a blocked sender/receiver and its counterpart (see `chan.rs`).
//!
//! All flavours share one engine (a lock-protected queue plus sender/receiver waiter lists);
//! the flavour is only the capacity policy. A lock-free array queue would scale better under
//! heavy contention on many cores; the single short lock keeps the blocking, rendezvous,
//! disconnection and select protocols in one place where loom can check them.
//!
//! ```
//! # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
//! use filament_sync::channel;
//!
//! let (tx, rx) = channel::bounded(2);
//! let t = std::thread::spawn(move || {
//!     for i in 0..5 {
//!         tx.send(i).unwrap();
//!     }
//! });
//! assert_eq!(rx.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
//! t.join().unwrap();
//! ```

mod chan;
mod error;
mod oneshot;
mod select;
mod select_macro;

use std::fmt;
use std::time::{Duration, Instant};

use filament_runtime::loom::Arc;

use self::chan::Chan;
use crate::waiter::{deadline_after, Site, Wakeups};

pub use self::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use self::oneshot::{oneshot, OneshotReceiver, OneshotSender};
#[doc(hidden)]
pub use self::select::__SelectAdd;
pub use self::select::{RecvArm, Select, SendArm};

/// A channel holding at most `cap` values. `bounded(0)` is a rendezvous: `send` completes only
/// when a receiver takes the value.
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    new_pair(Some(cap))
}

/// A channel with an unlimited buffer: `send` never blocks.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    new_pair(None)
}

fn new_pair<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan::new(cap));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The sending half of a channel. Clone it for more producers.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving half of a channel. Clone it for more consumers; each value goes to one of them.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// The wait records of blocked channel operations (see `Runtime::dump`).
const SEND: &str = "channel send";
const RECV: &str = "channel recv";

impl<T> Sender<T> {
    /// Sends `msg`, waiting for room (or, for a rendezvous, for a receiver to take it).
    ///
    /// A fiber parked here (or in the other blocking sends) shows in `Runtime::dump` as
    /// waiting on `"channel send"` at the caller's location.
    #[track_caller]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.chan
            .send(msg, None, Site::here(SEND))
            .map_err(|e| SendError(e.into_inner()))
    }

    /// Sends `msg` if that can be done without waiting.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let mut wakes = Wakeups::new();
        let mut st = self.chan.lock();
        let r = self.chan.try_send_locked(&mut st, msg, &mut wakes);
        drop(st);
        r.map_err(|(m, disconnected)| {
            if disconnected {
                TrySendError::Disconnected(m)
            } else {
                TrySendError::Full(m)
            }
        })
    }

    /// Sends `msg`, waiting at most `timeout`.
    #[track_caller]
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.chan
            .send(msg, deadline_after(timeout), Site::here(SEND))
    }

    /// Sends `msg`, waiting until `deadline` at the latest.
    #[track_caller]
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.chan.send(msg, Some(deadline), Site::here(SEND))
    }

    /// Number of buffered values.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// True if no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the buffer is full (always true for a rendezvous channel).
    pub fn is_full(&self) -> bool {
        self.chan.capacity().is_some_and(|c| self.len() >= c)
    }

    /// The capacity: `Some(n)` for `bounded(n)`, `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// True if every receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        self.chan.is_disconnected_for_senders()
    }

    /// True if both handles belong to the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    pub(crate) fn chan(&self) -> &Chan<T> {
        &self.chan
    }
}

impl<T> Receiver<T> {
    /// Receives a value, waiting for one. Fails once the channel is empty and disconnected.
    ///
    /// A fiber parked here (or in the other blocking receives and the blocking iterators)
    /// shows in `Runtime::dump` as waiting on `"channel recv"` at the caller's location.
    #[track_caller]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan
            .recv(None, Site::here(RECV))
            .map_err(|_| RecvError)
    }

    /// Receives a value if one is available without waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut wakes = Wakeups::new();
        let mut st = self.chan.lock();
        let r = self.chan.try_recv_locked(&mut st, &mut wakes);
        drop(st);
        r.map_err(|disconnected| {
            if disconnected {
                TryRecvError::Disconnected
            } else {
                TryRecvError::Empty
            }
        })
    }

    /// Receives a value, waiting at most `timeout`.
    #[track_caller]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.chan.recv(deadline_after(timeout), Site::here(RECV))
    }

    /// Receives a value, waiting until `deadline` at the latest.
    #[track_caller]
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.chan.recv(Some(deadline), Site::here(RECV))
    }

    /// A blocking iterator that ends when the channel is empty and disconnected.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator over the values available right now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Number of buffered values.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// True if no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity: `Some(n)` for `bounded(n)`, `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// True if both handles belong to the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    pub(crate) fn chan(&self) -> &Chan<T> {
        &self.chan
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.add_receiver();
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.release_sender();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.release_receiver();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Blocking iterator over a [`Receiver`]; see [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

/// Non-blocking iterator over a [`Receiver`]; see [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

/// Owning blocking iterator over a [`Receiver`].
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    #[track_caller]
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    #[track_caller]
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
