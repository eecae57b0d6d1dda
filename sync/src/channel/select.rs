//! [`Select`]: wait on several channel operations at once; the engine of [`select!`](crate::select).
//!
//! # Arms
//!
//! Each operation is an *arm* object that lives in the caller's frame and owns an intrusive
//! waiter node and a typed value slot. Both kinds register as *offers*, exactly like a plain
//! blocked `send`/`recv`: a [`RecvArm`] offers its empty slot, which a sender fills (HANDOFF);
//! a [`SendArm`] carries its value from the start (as in Go, the message is evaluated before the
//! select blocks), which a receiver takes (HANDOFF). A counterpart completes the operation by
//! claiming the select's one context, so at most one arm completes; `try_send`/`try_recv` on a
//! rendezvous channel complete against a blocked select, and a select that sends on a
//! rendezvous channel meets a select that receives on it.
//!
//! # Algorithm (one [`Context`] for the whole select)
//!
//! 1. **Try:** attempt every arm without blocking, starting at a random arm (fairness among
//!    ready arms), or first the arm that woke us. The first that completes wins.
//! 2. **Register:** reset the context to WAITING and register the arms one by one under each
//!    channel's lock. An arm that finds its operation possible right now stops the round: the
//!    select aborts its context (CAS) and goes back to 1. A counterpart may claim the context as
//!    soon as the first arm is linked; registration stops early when that happens.
//! 3. **Wait** until claimed or the deadline passes (then abort; losing that CAS means we were
//!    claimed after all).
//! 4. **Unregister** every linked arm under its channel's lock. HANDOFF/CLOSED on a send arm is
//!    the final result for either kind (CLOSED: disconnected); RETRY (only from the engine's
//!    interest path) means "try again, this arm first".
//!
//! **No lost wake-up:** every arm's readiness is checked under its channel's lock in the same
//! critical section that links it, and every change that could make it ready dispatches to the
//! linked nodes. Claims are single CASes, so at most one arm completes. A select that unwinds
//! after a value was handed to its recv arm puts the value back at the queue front.
//!
//! **Allocation:** up to 8 arms are held inline; more spill into a `Vec`.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use filament_runtime::loom::UnsafeCell;
use filament_runtime::park::{park, park_until};

use super::chan::Slot;
use super::{Receiver, RecvError, SendError, Sender};
use crate::waiter::{deadline_after, Context, Kind, Node, Site, Wakeups};

/// What the select engine needs from an arm.
trait ArmOps {
    /// Completes the operation now if possible (storing the outcome).
    fn try_complete(&self) -> bool;
    /// True if the operation is possible now (nothing linked); else links the node.
    fn register(&self, ctx: &Context, op: usize) -> bool;
    /// Unlinks the node if it is still linked.
    fn unregister(&self);
    /// A counterpart resolved this arm with HANDOFF/CLOSED; true if that completed it.
    fn resolved(&self, kind: Kind) -> bool;
    /// Gives back what a counterpart did for an arm whose select unwinds (`kind` as claimed).
    fn abandon(&self, kind: Kind);
    /// Records that this arm is the one the select completed.
    fn mark_selected(&self);
}

/// A receive arm for [`Select`]: receives from `rx` if selected.
pub struct RecvArm<'a, T> {
    rx: &'a Receiver<T>,
    node: Node,
    slot: Slot<T>,
    result: Cell<Option<Result<T, RecvError>>>,
    selected: Cell<bool>,
}

/// A send arm for [`Select`]: holds the value and sends it to `tx` if selected; otherwise the
/// value is dropped with the arm (or recovered with [`SendArm::into_result`]).
pub struct SendArm<'a, T> {
    tx: &'a Sender<T>,
    node: Node,
    slot: Slot<T>,
    // Some(true): sent; Some(false): disconnected (value still in `slot`).
    outcome: Cell<Option<bool>>,
    selected: Cell<bool>,
}

impl<'a, T> RecvArm<'a, T> {
    /// An arm that receives from `rx`.
    pub fn new(rx: &'a Receiver<T>) -> Self {
        RecvArm {
            rx,
            node: Node::new(),
            slot: UnsafeCell::new(None),
            result: Cell::new(None),
            selected: Cell::new(false),
        }
    }

    /// True if the select completed this arm.
    pub fn is_selected(&self) -> bool {
        self.selected.get()
    }

    /// The received value (`Err` if the channel was empty and disconnected).
    ///
    /// # Panics
    ///
    /// If the arm was not selected.
    pub fn into_result(self) -> Result<T, RecvError> {
        self.result.take().expect("RecvArm was not selected")
    }
}

impl<'a, T> SendArm<'a, T> {
    /// An arm that sends `msg` to `tx`.
    pub fn new(tx: &'a Sender<T>, msg: T) -> Self {
        SendArm {
            tx,
            node: Node::new(),
            slot: UnsafeCell::new(Some(msg)),
            outcome: Cell::new(None),
            selected: Cell::new(false),
        }
    }

    /// True if the select completed this arm.
    pub fn is_selected(&self) -> bool {
        self.selected.get()
    }

    /// `Ok` if the value was sent; `Err` with the value if every receiver was gone, or if the
    /// arm was not selected.
    pub fn into_result(self) -> Result<(), SendError<T>> {
        if self.outcome.get() == Some(true) {
            return Ok(());
        }
        // SAFETY: the arm is not registered anywhere (a select unregisters before returning),
        // so the slot is ours.
        let v = self.slot.with_mut(|p| unsafe { (*p).take() });
        Err(SendError(v.expect("value already sent")))
    }
}

impl<T> ArmOps for RecvArm<'_, T> {
    fn try_complete(&self) -> bool {
        let chan = self.rx.chan();
        let mut wakes = Wakeups::new();
        let mut st = chan.lock();
        let r = chan.try_recv_locked(&mut st, &mut wakes);
        drop(st);
        match r {
            Ok(v) => self.result.set(Some(Ok(v))),
            Err(true) => self.result.set(Some(Err(RecvError))),
            Err(false) => return false,
        }
        true
    }

    fn register(&self, ctx: &Context, op: usize) -> bool {
        self.rx
            .chan()
            .register_recv(&self.node, ctx, op, &self.slot)
    }

    fn unregister(&self) {
        self.rx.chan().unlink_receiver(&self.node);
    }

    fn resolved(&self, kind: Kind) -> bool {
        // SAFETY: the claim resolved and the node is unlinked: the slot is ours again, and the
        // Acquire in `Context::wait` ordered the sender's write before this read.
        let v = self.slot.with_mut(|p| unsafe { (*p).take() });
        match (kind, v) {
            (Kind::Handoff, Some(v)) => self.result.set(Some(Ok(v))),
            (Kind::Closed, _) => self.result.set(Some(Err(RecvError))),
            _ => return false,
        }
        true
    }

    fn abandon(&self, kind: Kind) {
        match kind {
            Kind::Retry => self.rx.chan().forward_recv_wake(),
            Kind::Handoff => {
                // SAFETY: as in `resolved`.
                if let Some(v) = self.slot.with_mut(|p| unsafe { (*p).take() }) {
                    self.rx.chan().requeue_front(v);
                }
            }
            Kind::Closed => {}
        }
    }

    fn mark_selected(&self) {
        self.selected.set(true);
    }
}

impl<T> ArmOps for SendArm<'_, T> {
    fn try_complete(&self) -> bool {
        // SAFETY: not registered during the try phase, so the slot is ours.
        let Some(msg) = self.slot.with_mut(|p| unsafe { (*p).take() }) else {
            return self.outcome.get().is_some();
        };
        let chan = self.tx.chan();
        let mut wakes = Wakeups::new();
        let mut st = chan.lock();
        let r = chan.try_send_locked(&mut st, msg, &mut wakes);
        drop(st);
        match r {
            Ok(()) => {
                self.outcome.set(Some(true));
                true
            }
            Err((m, disconnected)) => {
                // SAFETY: as above.
                self.slot.with_mut(|p| unsafe { *p = Some(m) });
                if disconnected {
                    self.outcome.set(Some(false));
                }
                disconnected
            }
        }
    }

    fn register(&self, ctx: &Context, op: usize) -> bool {
        self.tx
            .chan()
            .register_send(&self.node, ctx, op, &self.slot)
    }

    fn unregister(&self) {
        self.tx.chan().unlink_sender(&self.node);
    }

    fn resolved(&self, kind: Kind) -> bool {
        self.outcome.set(Some(kind == Kind::Handoff));
        true
    }

    fn abandon(&self, _kind: Kind) {
        // HANDOFF: the value went; CLOSED: it stays in the slot and drops with the arm.
    }

    fn mark_selected(&self) {
        self.selected.set(true);
    }
}

const INLINE: usize = 8;

/// Waits on several channel operations and completes exactly one of them.
///
/// ```
/// # if filament_sync::__LOOM { return; } // loom types cannot run outside a model
/// use filament_sync::channel::{self, RecvArm, Select, SendArm};
///
/// let (tx1, rx1) = channel::bounded::<i32>(1);
/// let (tx2, _rx2) = channel::bounded::<&str>(0);
/// tx1.send(7).unwrap();
///
/// let a = RecvArm::new(&rx1);
/// let b = SendArm::new(&tx2, "nobody is receiving");
/// let mut sel = Select::new();
/// sel.recv(&a);
/// sel.send(&b);
/// let index = sel.select();
/// assert_eq!(index, 0);
/// assert!(a.is_selected());
/// assert_eq!(a.into_result(), Ok(7));
/// ```
pub struct Select<'a> {
    inline: [Option<&'a dyn ArmOps>; INLINE],
    len: usize,
    spill: Vec<&'a dyn ArmOps>,
}

enum Mode {
    Try,
    /// Block until the deadline, if any; a park is recorded as the site.
    Block(Option<Instant>, Site),
}

/// The wait record of a blocked select (see `Runtime::dump`).
const WHAT: &str = "select";

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Self {
        Select {
            inline: [None; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Adds a receive arm; returns its index.
    pub fn recv<T>(&mut self, arm: &'a RecvArm<'_, T>) -> usize {
        self.push(arm)
    }

    /// Adds a send arm; returns its index.
    pub fn send<T>(&mut self, arm: &'a SendArm<'_, T>) -> usize {
        self.push(arm)
    }

    fn push(&mut self, arm: &'a dyn ArmOps) -> usize {
        let i = self.len;
        if i < INLINE {
            self.inline[i] = Some(arm);
        } else {
            self.spill.push(arm);
        }
        self.len += 1;
        i
    }

    fn arm(&self, i: usize) -> &'a dyn ArmOps {
        if i < INLINE {
            self.inline[i].expect("arm")
        } else {
            self.spill[i - INLINE]
        }
    }

    /// Blocks until one arm completes; returns its index.
    ///
    /// A fiber parked here (or in the timed selects, or in [`select!`](crate::select)) shows in
    /// `Runtime::dump` as waiting on `"select"` at the caller's location (for `select!`, the
    /// macro's invocation).
    #[track_caller]
    pub fn select(&mut self) -> usize {
        self.run(Mode::Block(None, Site::here(WHAT)))
            .expect("no deadline")
    }

    /// Completes an arm that is ready now, if any.
    pub fn try_select(&mut self) -> Option<usize> {
        self.run(Mode::Try)
    }

    /// Like [`select`](Select::select), giving up after `timeout`.
    #[track_caller]
    pub fn select_timeout(&mut self, timeout: Duration) -> Option<usize> {
        self.run(Mode::Block(deadline_after(timeout), Site::here(WHAT)))
    }

    /// Like [`select`](Select::select), giving up at `deadline`.
    #[track_caller]
    pub fn select_deadline(&mut self, deadline: Instant) -> Option<usize> {
        self.run(Mode::Block(Some(deadline), Site::here(WHAT)))
    }

    fn done(&self, i: usize) -> Option<usize> {
        self.arm(i).mark_selected();
        Some(i)
    }

    fn run(&mut self, mode: Mode) -> Option<usize> {
        let n = self.len;
        if n == 0 {
            return match mode {
                Mode::Try => None,
                Mode::Block(deadline, site) => {
                    let _recorded = site.record();
                    loop {
                        match deadline {
                            None => park(),
                            Some(_) => {
                                if park_until(deadline) {
                                    break None;
                                }
                            }
                        }
                    }
                }
            };
        }
        let ctx = Context::new();
        let mut prefer: Option<usize> = None;
        loop {
            let start = random_below(n);
            if let Some(p) = prefer.take() {
                if self.arm(p).try_complete() {
                    return self.done(p);
                }
            }
            for k in 0..n {
                let i = (start + k) % n;
                if self.arm(i).try_complete() {
                    return self.done(i);
                }
            }
            let (deadline, site) = match mode {
                Mode::Try => return None,
                Mode::Block(d, site) => (d, site),
            };

            ctx.reset();
            let mut guard = Registered {
                sel: self,
                ctx: &ctx,
                start,
                count: 0,
            };
            let mut ready = false;
            for k in 0..n {
                let i = (start + k) % n;
                if self.arm(i).register(&ctx, i) {
                    ready = true;
                    break;
                }
                guard.count += 1;
                if !ctx.is_waiting() {
                    break;
                }
            }
            let selected = if ready || !ctx.is_waiting() {
                ctx.try_abort().err()
            } else {
                ctx.wait(deadline, site)
            };
            let count = guard.count;
            std::mem::forget(guard);
            self.unregister(start, count);
            match selected {
                None if ready => continue,
                None => return None, // timed out
                Some(s) if s.kind == Kind::Retry => prefer = Some(s.op),
                Some(s) => {
                    if self.arm(s.op).resolved(s.kind) {
                        return self.done(s.op);
                    }
                    prefer = Some(s.op);
                }
            }
        }
    }

    fn unregister(&self, start: usize, count: usize) {
        for k in 0..count {
            self.arm((start + k) % self.len).unregister();
        }
    }
}

/// Unregisters the arms of a select that unwinds out of `park`, and settles a claim that raced
/// with it (see [`ArmOps::abandon`]).
struct Registered<'s, 'a> {
    sel: &'s Select<'a>,
    ctx: &'s Context,
    start: usize,
    count: usize,
}

impl Drop for Registered<'_, '_> {
    fn drop(&mut self) {
        let r = self.ctx.try_abort();
        self.sel.unregister(self.start, self.count);
        if let Err(s) = r {
            self.sel.arm(s.op).abandon(s.kind);
        }
    }
}

impl Default for Select<'_> {
    fn default() -> Self {
        Select::new()
    }
}

impl fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select").field("arms", &self.len).finish()
    }
}

impl<T> fmt::Debug for RecvArm<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvArm").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for SendArm<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendArm").finish_non_exhaustive()
    }
}

/// A uniform index in `0..n` from a per-thread xorshift generator (fixed under loom, whose
/// models must be deterministic).
fn random_below(n: usize) -> usize {
    #[cfg(loom)]
    {
        let _ = n;
        0
    }
    #[cfg(not(loom))]
    {
        thread_local! {
            static RNG: Cell<u64> = const { Cell::new(0) };
        }
        RNG.with(|rng| {
            let mut x = rng.get();
            if x == 0 {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                x = (t ^ (rng as *const _ as u64)) | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rng.set(x);
            (((x >> 32) * n as u64) >> 32) as usize
        })
    }
}

/// Adds an arm to a [`Select`] without naming its kind; used by [`select!`](crate::select).
#[doc(hidden)]
pub trait __SelectAdd<'a> {
    /// Adds `self` to `sel`; returns its index.
    fn add_to(&'a self, sel: &mut Select<'a>) -> usize;
}

impl<'a, T> __SelectAdd<'a> for RecvArm<'_, T> {
    fn add_to(&'a self, sel: &mut Select<'a>) -> usize {
        sel.recv(self)
    }
}

impl<'a, T> __SelectAdd<'a> for SendArm<'_, T> {
    fn add_to(&'a self, sel: &mut Select<'a>) -> usize {
        sel.send(self)
    }
}
