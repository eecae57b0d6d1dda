//! The channel engine shared by every flavour: a queue and two waiter lists behind one lock.
//!
//! # State (all under `Chan::state`'s lock)
//!
//! ```text
//!  queue      buffered values, FIFO; capacity `cap` (None = unbounded, Some(0) = rendezvous:
//!             the queue stays empty and values pass directly between waiters)
//!  senders    blocked senders. Every node is an *offer*: its packet points at a slot on the
//!             sender's stack holding the value (plain `send`, and `select` send arms)
//!  receivers  blocked receivers. Every node is an *offer* too: its packet points at an empty
//!             slot on the receiver's stack (plain `recv`, and `select` recv arms). (The engine
//!             also supports *interest* nodes with a null packet, which are only woken, RETRY,
//!             and then retry; nothing registers them at present.)
//!  tx, rx     number of live Sender / Receiver handles
//! ```
//!
//! # Moves (every claim is [`WaitList::claim`]: one CAS, so a waiter is resolved once)
//!
//! * **send** when the queue has room: push, then *dispatch receivers*: while the queue is
//!   non-empty, claim the first claimable receiver; an offer gets `queue.pop_front()` (HANDOFF),
//!   an interest is woken (RETRY) and dispatch stops (it will take one value). Rendezvous: claim
//!   the first receiver offer and write the value into its slot.
//! * **recv** from a non-empty queue: pop, then *dispatch senders*: while there is room, claim
//!   the first sender offer and move its value to the back of the queue (HANDOFF: its send is
//!   complete). Rendezvous (or empty queue): claim the first sender offer and take its value.
//! * When neither completes, a blocking call links an offer and parks; a rendezvous sender also
//!   wakes one receiver interest (a `select` that can now take the offer).
//! * Last `Sender` dropped: every receiver is claimed; offers get a queued value if any is left,
//!   else CLOSED; interests RETRY (and then see the disconnection). Last `Receiver` dropped:
//!   every sender offer is CLOSED (its owner takes the value back as the error) and the queue is
//!   dropped.
//!
//! # Why it is correct
//!
//! * **Exactly once:** a value is in exactly one place at a time (a sender's slot, the queue, a
//!   receiver's slot), and every move happens under the lock after a successful claim.
//! * **Order per sender:** values enter the queue in send order (a blocked sender's value
//!   enters only when claimed, and that sender is blocked until then); receivers always take the
//!   queue's front, and a direct hand-off to a receiver offer happens only through the front.
//! * **No lost wake-up:** a blocking caller checks and links under the same lock acquisition;
//!   every state change that could complete it happens under that lock and then dispatches.
//! * **Timeouts / cancellation:** the owner aborts (CAS) and unlinks under the lock; if the abort
//!   lost to a claim, the operation completed after all (the timeout call then succeeds). A
//!   receiver cancelled after a value was handed to it puts the value back at the queue front
//!   (buffered flavours); with a rendezvous the value is dropped (its sender already returned).

use std::collections::VecDeque;
use std::time::Instant;

use filament_runtime::loom::{ListLock, ListLockGuard, UnsafeCell};

use super::error::{RecvTimeoutError, SendTimeoutError};
use crate::waiter::{Context, Kind, Node, Registration, Site, WaitList, Wakeups};

/// A value slot on a waiter's stack; the packet of an offer points at one.
pub(crate) type Slot<T> = UnsafeCell<Option<T>>;

pub(crate) struct Chan<T> {
    cap: Option<usize>,
    state: ListLock<State<T>>,
}

pub(crate) struct State<T> {
    queue: VecDeque<T>,
    senders: WaitList,
    receivers: WaitList,
    tx: usize,
    rx: usize,
}

/// Puts `v` into the slot behind a claimed offer's packet.
///
/// # Safety
///
/// `packet` is the packet of a claimed (BUSY) receiver offer of a `Chan<T>`.
unsafe fn put<T>(packet: *mut (), v: T) {
    // SAFETY: the caller's claim keeps the owner (and its slot) in place; BUSY gives us
    // exclusive access to the slot until `finish`.
    unsafe { (*(packet as *const Slot<T>)).with_mut(|p| *p = Some(v)) }
}

/// Takes the value out of the slot behind a claimed offer's packet.
///
/// # Safety
///
/// As for [`put`], for a claimed sender offer (whose slot holds a value).
unsafe fn take<T>(packet: *mut ()) -> T {
    // SAFETY: as in `put`.
    unsafe { (*(packet as *const Slot<T>)).with_mut(|p| (*p).take()) }
        .expect("offer without a value")
}

fn is_offer(r: &Registration) -> bool {
    !r.packet.is_null()
}

impl<T> Chan<T> {
    pub(crate) fn new(cap: Option<usize>) -> Chan<T> {
        Chan {
            cap,
            state: ListLock::new(State {
                queue: VecDeque::with_capacity(cap.unwrap_or(0).min(1024)),
                senders: WaitList::new(),
                receivers: WaitList::new(),
                tx: 1,
                rx: 1,
            }),
        }
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.cap
    }

    pub(crate) fn lock(&self) -> ListLockGuard<'_, State<T>> {
        self.state.lock()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    fn has_space(&self, st: &State<T>) -> bool {
        match self.cap {
            None => true,
            Some(c) => st.queue.len() < c,
        }
    }

    /// Completes a send if possible. `Err((msg, disconnected))` otherwise.
    pub(crate) fn try_send_locked(
        &self,
        st: &mut State<T>,
        msg: T,
        wakes: &mut Wakeups,
    ) -> Result<(), (T, bool)> {
        if st.rx == 0 {
            return Err((msg, true));
        }
        if self.cap == Some(0) {
            return match st.receivers.claim(is_offer) {
                Some(c) => {
                    // SAFETY: `c` is a claimed receiver offer of this channel.
                    unsafe { put(c.packet(), msg) };
                    wakes.push(c.finish(Kind::Handoff));
                    Ok(())
                }
                None => Err((msg, false)),
            };
        }
        if !self.has_space(st) {
            return Err((msg, false));
        }
        st.queue.push_back(msg);
        self.dispatch_receivers(st, wakes);
        Ok(())
    }

    /// Completes a receive if possible. `Err(disconnected)` otherwise.
    pub(crate) fn try_recv_locked(
        &self,
        st: &mut State<T>,
        wakes: &mut Wakeups,
    ) -> Result<T, bool> {
        if let Some(v) = st.queue.pop_front() {
            self.dispatch_senders(st, wakes);
            return Ok(v);
        }
        if let Some(c) = st.senders.claim(is_offer) {
            // SAFETY: `c` is a claimed sender offer of this channel.
            let v = unsafe { take(c.packet()) };
            wakes.push(c.finish(Kind::Handoff));
            return Ok(v);
        }
        Err(st.tx == 0)
    }

    fn dispatch_receivers(&self, st: &mut State<T>, wakes: &mut Wakeups) {
        while !st.queue.is_empty() {
            let Some(c) = st.receivers.claim(|_| true) else {
                break;
            };
            if c.packet().is_null() {
                wakes.push(c.finish(Kind::Retry));
                break;
            }
            let v = st.queue.pop_front().expect("non-empty");
            // SAFETY: `c` is a claimed receiver offer of this channel.
            unsafe { put(c.packet(), v) };
            wakes.push(c.finish(Kind::Handoff));
        }
    }

    fn dispatch_senders(&self, st: &mut State<T>, wakes: &mut Wakeups) {
        while self.cap != Some(0) && self.has_space(st) {
            let Some(c) = st.senders.claim(is_offer) else {
                break;
            };
            // SAFETY: `c` is a claimed sender offer of this channel.
            let v = unsafe { take(c.packet()) };
            st.queue.push_back(v);
            wakes.push(c.finish(Kind::Handoff));
        }
    }

    /// Blocking send (until `deadline`, if any); a park is recorded as `site`.
    pub(crate) fn send(
        &self,
        msg: T,
        deadline: Option<Instant>,
        site: Site,
    ) -> Result<(), SendTimeoutError<T>> {
        // Set up only on the path that waits: getting the caller's handle costs two
        // thread-local lookups, which a send that completes at once need not pay.
        let ctx;
        let node = Node::new();
        let slot: Slot<T> = UnsafeCell::new(None);
        {
            let mut wakes = Wakeups::new();
            let mut st = self.lock();
            let msg = match self.try_send_locked(&mut st, msg, &mut wakes) {
                Ok(()) => return Ok(()),
                Err((m, true)) => return Err(SendTimeoutError::Disconnected(m)),
                Err((m, false)) => m,
            };
            ctx = Context::new();
            // SAFETY: the slot is ours and not yet shared.
            slot.with_mut(|p| unsafe { *p = Some(msg) });
            // SAFETY: fresh node; it, `ctx` and `slot` outlive the wait; the guard unlinks it.
            unsafe {
                node.set(&ctx, 0, &slot as *const Slot<T> as *mut ());
                st.senders.push_back(&node);
            }
            if self.cap == Some(0) {
                if let Some(c) = st.receivers.claim(|r| !is_offer(r)) {
                    wakes.push(c.finish(Kind::Retry));
                }
            }
            drop(st);
        }
        let guard = WaitGuard {
            chan: self,
            ctx: &ctx,
            node: &node,
            recv_slot: None,
        };
        let sel = ctx.wait(deadline, site);
        std::mem::forget(guard);
        // SAFETY (all slot accesses below): the wait resolved (selected or aborted+unlinked),
        // so nobody else touches the slot any more; the Acquire in `wait` orders the claimer's
        // access before ours.
        match sel.map(|s| s.kind) {
            Some(Kind::Handoff) => Ok(()),
            Some(_) => Err(SendTimeoutError::Disconnected(
                slot.with_mut(|p| unsafe { (*p).take() }).expect("value"),
            )),
            None => {
                self.unlink_sender(&node);
                Err(SendTimeoutError::Timeout(
                    slot.with_mut(|p| unsafe { (*p).take() }).expect("value"),
                ))
            }
        }
    }

    /// Blocking receive (until `deadline`, if any); a park is recorded as `site`.
    pub(crate) fn recv(
        &self,
        deadline: Option<Instant>,
        site: Site,
    ) -> Result<T, RecvTimeoutError> {
        let ctx; // as in `send`
        let node = Node::new();
        let slot: Slot<T> = UnsafeCell::new(None);
        {
            let mut wakes = Wakeups::new();
            let mut st = self.lock();
            match self.try_recv_locked(&mut st, &mut wakes) {
                Ok(v) => return Ok(v),
                Err(true) => return Err(RecvTimeoutError::Disconnected),
                Err(false) => {}
            }
            ctx = Context::new();
            // SAFETY: fresh node; it, `ctx` and `slot` outlive the wait; the guard unlinks it.
            unsafe {
                node.set(&ctx, 0, &slot as *const Slot<T> as *mut ());
                st.receivers.push_back(&node);
            }
            drop(st);
        }
        let guard = WaitGuard {
            chan: self,
            ctx: &ctx,
            node: &node,
            recv_slot: Some(&slot),
        };
        let sel = ctx.wait(deadline, site);
        std::mem::forget(guard);
        match sel.map(|s| s.kind) {
            // SAFETY: resolved wait, as in `send`.
            Some(Kind::Handoff) => Ok(slot.with_mut(|p| unsafe { (*p).take() }).expect("value")),
            Some(_) => Err(RecvTimeoutError::Disconnected),
            None => {
                self.unlink_receiver(&node);
                Err(RecvTimeoutError::Timeout)
            }
        }
    }

    pub(crate) fn unlink_sender(&self, node: &Node) {
        // SAFETY: the node is the caller's and only ever linked in this channel's sender list.
        unsafe { self.lock().senders.remove(node) };
    }

    pub(crate) fn unlink_receiver(&self, node: &Node) {
        // SAFETY: as above, receiver list.
        unsafe { self.lock().receivers.remove(node) };
    }

    /// Select recv arm: true if a receive would not block now; otherwise links `node` as an
    /// offer with the empty `slot` and returns false.
    pub(crate) fn register_recv(
        &self,
        node: &Node,
        ctx: &Context,
        op: usize,
        slot: &Slot<T>,
    ) -> bool {
        let mut st = self.lock();
        let me = ctx as *const Context;
        if !st.queue.is_empty()
            || st.tx == 0
            || st
                .senders
                .any(|r| is_offer(r) && r.ctx != me && r.is_waiting())
        {
            return true;
        }
        // SAFETY: the arm's node is unlinked; the select unlinks it before returning; the slot
        // outlives the registration.
        unsafe {
            node.set(ctx, op, slot as *const Slot<T> as *mut ());
            st.receivers.push_back(node);
        }
        false
    }

    /// Select send arm: true if a send would not block now; otherwise links `node` as an offer of
    /// the value in `slot` and returns false.
    pub(crate) fn register_send(
        &self,
        node: &Node,
        ctx: &Context,
        op: usize,
        slot: &Slot<T>,
    ) -> bool {
        let mut wakes = Wakeups::new();
        let mut st = self.lock();
        let me = ctx as *const Context;
        let ready = st.rx == 0
            || match self.cap {
                Some(0) => st
                    .receivers
                    .any(|r| is_offer(r) && r.ctx != me && r.is_waiting()),
                _ => self.has_space(&st),
            };
        if ready {
            return true;
        }
        // SAFETY: as in register_recv; the slot outlives the registration.
        unsafe {
            node.set(ctx, op, slot as *const Slot<T> as *mut ());
            st.senders.push_back(node);
        }
        if self.cap == Some(0) {
            if let Some(c) = st.receivers.claim(|r| !is_offer(r) && r.ctx != me) {
                wakes.push(c.finish(Kind::Retry));
            }
        }
        drop(st);
        false
    }

    /// Passes on a RETRY wake that a cancelled `select` will not use.
    pub(crate) fn forward_recv_wake(&self) {
        let mut wakes = Wakeups::new();
        let mut st = self.lock();
        self.dispatch_receivers(&mut st, &mut wakes);
        drop(st);
    }

    /// Puts back a value that was handed to a receiver which then unwound (buffered flavours;
    /// with a rendezvous the value is dropped, its sender has already returned).
    pub(crate) fn requeue_front(&self, v: T) {
        if self.cap == Some(0) {
            return;
        }
        let mut wakes = Wakeups::new();
        let mut st = self.lock();
        st.queue.push_front(v);
        self.dispatch_receivers(&mut st, &mut wakes);
        drop(st);
    }

    pub(crate) fn add_sender(&self) {
        self.lock().tx += 1;
    }

    pub(crate) fn add_receiver(&self) {
        self.lock().rx += 1;
    }

    /// A `Sender` handle was dropped.
    pub(crate) fn release_sender(&self) {
        let mut wakes = Wakeups::new();
        let mut st = self.lock();
        st.tx -= 1;
        if st.tx > 0 {
            return;
        }
        while let Some(c) = st.receivers.claim(|_| true) {
            if c.packet().is_null() {
                wakes.push(c.finish(Kind::Retry));
            } else if let Some(v) = st.queue.pop_front() {
                // SAFETY: a claimed receiver offer of this channel.
                unsafe { put(c.packet(), v) };
                wakes.push(c.finish(Kind::Handoff));
            } else {
                wakes.push(c.finish(Kind::Closed));
            }
        }
        drop(st);
    }

    /// A `Receiver` handle was dropped.
    pub(crate) fn release_receiver(&self) {
        let mut wakes = Wakeups::new();
        let mut st = self.lock();
        st.rx -= 1;
        if st.rx > 0 {
            return;
        }
        while let Some(c) = st.senders.claim(|_| true) {
            wakes.push(c.finish(Kind::Closed));
        }
        let dropped = std::mem::take(&mut st.queue);
        drop(st);
        drop(wakes);
        // Values are dropped outside the lock: their destructors may use channels.
        drop(dropped);
    }

    pub(crate) fn is_disconnected_for_senders(&self) -> bool {
        self.lock().rx == 0
    }
}

/// Unlinks the node of a plain send/recv that unwinds out of `park`; a receiver that was handed
/// a value puts it back (buffered flavours).
struct WaitGuard<'a, T> {
    chan: &'a Chan<T>,
    ctx: &'a Context,
    node: &'a Node,
    recv_slot: Option<&'a Slot<T>>,
}

impl<T> Drop for WaitGuard<'_, T> {
    fn drop(&mut self) {
        match (self.ctx.try_abort(), self.recv_slot) {
            (Ok(()), None) => self.chan.unlink_sender(self.node),
            (Ok(()), Some(_)) => self.chan.unlink_receiver(self.node),
            (Err(sel), Some(slot)) if sel.kind == Kind::Handoff => {
                // SAFETY: the wait resolved; the slot is ours again.
                if let Some(v) = slot.with_mut(|p| unsafe { (*p).take() }) {
                    self.chan.requeue_front(v);
                }
            }
            (Err(_), _) => {}
        }
    }
}
