//! [`oneshot`]: a channel for exactly one value.
//!
//! It is the shared channel engine (see `chan.rs`) with capacity 1 behind handles that cannot
//! be cloned and whose `send` consumes the sender, so at most one value is ever sent and the
//! send never blocks. Dropping the sender without sending disconnects the receiver.

use std::fmt;
use std::time::{Duration, Instant};

use super::{bounded, Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError};
use crate::waiter::{deadline_after, Site};

/// The wait record of a blocked `recv` (see `Runtime::dump`).
const RECV: &str = "oneshot recv";

/// Creates a one-shot channel.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use filament_sync::channel::oneshot;
///
/// let (tx, rx) = oneshot();
/// std::thread::spawn(move || tx.send(42).unwrap());
/// assert_eq!(rx.recv(), Ok(42));
/// ```
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let (tx, rx) = bounded(1);
    (OneshotSender { tx }, OneshotReceiver { rx })
}

/// Sends the one value of a [`oneshot`] channel.
pub struct OneshotSender<T> {
    tx: Sender<T>,
}

/// Receives the one value of a [`oneshot`] channel.
pub struct OneshotReceiver<T> {
    rx: Receiver<T>,
}

impl<T> OneshotSender<T> {
    /// Sends the value; never blocks. Fails (returning it) if the receiver is gone.
    pub fn send(self, msg: T) -> Result<(), SendError<T>> {
        self.tx.try_send(msg).map_err(|e| SendError(e.into_inner()))
    }

    /// True if the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_disconnected()
    }
}

impl<T> OneshotReceiver<T> {
    /// Waits for the value. Fails if the sender was dropped without sending.
    ///
    /// A fiber parked here (or in the timed receives) shows in `Runtime::dump` as waiting on
    /// `"oneshot recv"` at the caller's location.
    #[track_caller]
    pub fn recv(self) -> Result<T, RecvError> {
        self.rx
            .chan()
            .recv(None, Site::here(RECV))
            .map_err(|_| RecvError)
    }

    /// Takes the value if it has arrived.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits for the value for at most `timeout`.
    #[track_caller]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.rx
            .chan()
            .recv(deadline_after(timeout), Site::here(RECV))
    }

    /// Waits for the value until `deadline` at the latest.
    #[track_caller]
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.rx.chan().recv(Some(deadline), Site::here(RECV))
    }
}

impl<T> fmt::Debug for OneshotSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotSender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for OneshotReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotReceiver").finish_non_exhaustive()
    }
}
