//! The shared waiter machinery: a per-operation [`Context`], intrusive [`Node`]s that live on the
//! waiter's stack, and the [`WaitList`] every primitive keeps its blocked callers in.
//!
//! # Shape
//!
//! A blocking operation (lock, acquire, send, a whole `select`) creates one [`Context`] on its
//! own stack: a state word plus the caller's [`FrameUnparker`]. It links one [`Node`] per list it waits
//! on (one for a plain operation, one per arm for `select`) into the primitive's [`WaitList`]
//! under that primitive's internal lock, then parks until the context is *selected*. Nothing is
//! allocated: nodes and context are locals of the blocked frame.
//!
//! # The context state word
//!
//! ```text
//!  WAITING (0)   parked or about to park; a waker may claim it
//!  ABORTED (1)   the owner gave up (timeout, unwinding, select found an arm ready); nobody
//!                may claim it any more
//!  BUSY    (2)   a waker claimed it and is moving data into/out of the owner's packet
//!  3 + op*4 + k  SELECTED: operation `op` was completed or woken with kind `k`
//!                (HANDOFF = done for you, RETRY = try again, CLOSED = disconnected)
//! ```
//!
//! Transitions: the owner moves WAITING → ABORTED (CAS, [`Context::try_abort`]); a waker moves
//! WAITING → BUSY (CAS, only while holding the lock of a list the node is linked in and only
//! through [`WaitList::claim`]), then BUSY → SELECTED (store, [`Claim::finish`]). Exactly one CAS
//! out of WAITING succeeds, so a waiter is woken at most once per registration (**no double
//! wake**) and a timeout racing a wake is decided by that CAS.
//!
//! # Lifetimes (why the stack-allocated node is never used after free)
//!
//! * A node is linked and unlinked only under the lock of the list that holds it. The owner
//!   unlinks its own nodes (under that lock) before its frame is left, unless a waker already
//!   unlinked it in [`WaitList::claim`].
//! * A waker dereferences a node's context only while the node is linked and it holds the lock;
//!   after a successful claim (state BUSY) the owner cannot leave: it waits for SELECTED. So the
//!   waker unparks the owner *while* the context is BUSY (through the context's
//!   [`FrameUnparker`], an uncounted handle that is valid exactly as long as the owner stays in
//!   its frame), then stores SELECTED, and touches nothing of the owner afterwards. No reference
//!   count is taken or dropped for a wait.
//!
//! # No lost wake-up
//!
//! The owner links its node under the primitive's lock after checking the condition under the same
//! lock; a waker changes the condition under that lock and then claims. So either the owner saw
//! the new condition, or its node was linked when the waker looked. The waker unparks, then
//! stores SELECTED (Release); park's token semantics make the owner's `park` return even if the
//! unpark came before it, and the owner re-reads the state (Acquire) after every return. An
//! owner that finds its context BUSY never parks (the unpark may already have been spent): it
//! spins, yielding, until the waker's store, which follows within a few instructions (the
//! unpark in between is a queue push, at worst a wake of a sleeping worker).

use std::marker::PhantomPinned;
use std::ptr;
use std::time::Instant;

use filament_runtime::loom::{AtomicUsize, Ordering::*, UnsafeCell};
use filament_runtime::park::FrameUnparker;

const WAITING: usize = 0;
const ABORTED: usize = 1;
const BUSY: usize = 2;
const SELECTED_BASE: usize = 3;

// What a blocking call waits on and where (for `Runtime::dump`): public blocking methods are
// `#[track_caller]` and build a `Site` once (two pointers); `Context::wait` records it on the
// calling fiber only right before it really parks, so fast paths pay nothing.
pub(crate) use filament_runtime::park::{WaitRecord as Recorded, WaitSite as Site};

/// The deadline `timeout` from now; `None` (no deadline) when it is too far to represent.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// How a waker resolved a waiter (the `k` of the SELECTED state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The operation was completed on the waiter's behalf (lock/permit handed over, value
    /// delivered or taken, notification delivered).
    Handoff = 0,
    /// The waiter should retry its operation (lock released, an arm became ready).
    Retry = 1,
    /// The channel was disconnected.
    Closed = 2,
}

/// The outcome of a wait: which registered operation was selected, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Selected {
    /// The `op` the node was registered with.
    pub(crate) op: usize,
    /// What the waker did.
    pub(crate) kind: Kind,
}

impl Selected {
    fn decode(state: usize) -> Selected {
        let code = state - SELECTED_BASE;
        let kind = match code & 3 {
            0 => Kind::Handoff,
            1 => Kind::Retry,
            _ => Kind::Closed,
        };
        Selected {
            op: code >> 2,
            kind,
        }
    }

    fn encode(op: usize, kind: Kind) -> usize {
        SELECTED_BASE + (op << 2) + kind as usize
    }
}

/// One blocking operation's rendezvous point; lives on the blocked caller's stack.
#[derive(Debug)]
pub(crate) struct Context {
    state: AtomicUsize,
    unparker: FrameUnparker,
    _pin: PhantomPinned,
}

impl Context {
    /// A context for the calling fiber or thread, in state WAITING.
    pub(crate) fn new() -> Context {
        Context {
            state: AtomicUsize::new(WAITING),
            unparker: FrameUnparker::current(),
            _pin: PhantomPinned,
        }
    }

    /// Makes the context claimable again. Only the owner calls it, and only while none of its
    /// nodes is linked anywhere.
    pub(crate) fn reset(&self) {
        self.state.store(WAITING, Relaxed);
    }

    /// True while no waker has claimed the context and the owner has not aborted.
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Acquire) == WAITING
    }

    /// Gives up: WAITING → ABORTED. If a waker got there first, waits out its BUSY window and
    /// returns what it selected. Never parks, so it is safe during unwinding.
    pub(crate) fn try_abort(&self) -> Result<(), Selected> {
        match self
            .state
            .compare_exchange(WAITING, ABORTED, Acquire, Acquire)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(self.spin_until_selected()),
        }
    }

    fn spin_until_selected(&self) -> Selected {
        let mut spins = 0u32;
        loop {
            let s = self.state.load(Acquire);
            if s >= SELECTED_BASE {
                return Selected::decode(s);
            }
            // BUSY: the waker is copying a value or unparking us; a few instructions, unless
            // its thread was preempted: then give the CPU (or the worker) to someone else.
            std::hint::spin_loop();
            spins += 1;
            if spins >= 64 {
                yield_now();
            }
        }
    }

    /// Parks until the context is selected (`Some`) or, with a deadline, until the deadline passed
    /// and the owner aborted (`None`). Unwinds if the calling fiber is cancelled; callers keep a
    /// drop guard that unlinks their nodes. While parked, the fiber's wait record (for
    /// `Runtime::dump`) is `site`; it is set only once the wait really parks.
    pub(crate) fn wait(&self, deadline: Option<Instant>, site: Site) -> Option<Selected> {
        let mut recorded: Option<Recorded> = None;
        loop {
            let s = self.state.load(Acquire);
            if s >= SELECTED_BASE {
                return Some(Selected::decode(s));
            }
            if recorded.is_none() {
                // SAFETY: the context is ours: we are the owner of its unparker.
                recorded = Some(unsafe { self.unparker.record(site) });
            }
            if s == BUSY {
                // The claimer unparks us, then stores SELECTED: the unpark may be spent
                // already, so parking could sleep forever.
                return Some(self.spin_until_selected());
            }
            debug_assert_eq!(s, WAITING);
            // SAFETY: as above.
            if unsafe { self.unparker.park_until(deadline) } {
                return self.try_abort().err();
            }
        }
    }
}

/// Registration data of a node; written by the owner while the node is unlinked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registration {
    /// The owner's context.
    pub(crate) ctx: *const Context,
    /// Which of the owner's operations this node stands for (arm index for select).
    pub(crate) op: usize,
    /// Primitive-specific pointer into the owner's frame (a channel value slot), or null.
    pub(crate) packet: *mut (),
}

#[derive(Debug)]
struct Links {
    prev: *const Node,
    next: *const Node,
    linked: bool,
}

/// An intrusive list node. Lives in the waiter's frame; must not move while linked.
#[derive(Debug)]
pub(crate) struct Node {
    links: UnsafeCell<Links>,
    reg: UnsafeCell<Registration>,
    _pin: PhantomPinned,
}

impl Node {
    /// An unlinked node.
    pub(crate) fn new() -> Node {
        Node {
            links: UnsafeCell::new(Links {
                prev: ptr::null(),
                next: ptr::null(),
                linked: false,
            }),
            reg: UnsafeCell::new(Registration {
                ctx: ptr::null(),
                op: 0,
                packet: ptr::null_mut(),
            }),
            _pin: PhantomPinned,
        }
    }

    /// Sets what the node registers.
    ///
    /// # Safety
    ///
    /// The node must not be linked in any list (nobody else reads `reg` then).
    pub(crate) unsafe fn set(&self, ctx: &Context, op: usize, packet: *mut ()) {
        // SAFETY: unlinked, so only the owner can reach the node (caller's contract).
        self.reg
            .with_mut(|r| unsafe { *r = Registration { ctx, op, packet } });
    }

    fn reg(&self) -> Registration {
        // SAFETY: `reg` is written only while unlinked by the owner; readers hold the list lock
        // (which orders them after the write that preceded the link) or are the owner.
        self.reg.with(|r| unsafe { *r })
    }
}

/// A FIFO of waiting nodes. Not synchronised itself: it always lives inside the primitive's
/// internal lock, and `&mut WaitList` is the proof that lock is held.
#[derive(Debug)]
pub(crate) struct WaitList {
    head: *const Node,
    tail: *const Node,
}

// SAFETY: the raw pointers name nodes whose owners keep them alive while linked (module docs);
// the list is only reached through its owner's lock, so moving it between threads is fine.
unsafe impl Send for WaitList {}

impl Default for WaitList {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitList {
    /// An empty list.
    pub(crate) const fn new() -> WaitList {
        WaitList {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    /// True if no node is linked (claimable or not).
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Links `node` at the back.
    ///
    /// # Safety
    ///
    /// `node` is unlinked, its registration is set, and it stays alive and unmoved until it is
    /// unlinked again (by [`WaitList::remove`] or a claim) under this list's lock.
    pub(crate) unsafe fn push_back(&mut self, node: &Node) {
        let tail = self.tail;
        // SAFETY: we hold the list lock; `node` is unlinked (caller), `tail` is linked here.
        node.links.with_mut(|l| unsafe {
            debug_assert!(!(*l).linked);
            *l = Links {
                prev: tail,
                next: ptr::null(),
                linked: true,
            };
        });
        if tail.is_null() {
            self.head = node;
        } else {
            // SAFETY: `tail` is a linked node, alive by the owners' contract.
            unsafe { (*tail).links.with_mut(|l| (*l).next = node) };
        }
        self.tail = node;
    }

    /// Links `node` at the front (a waiter that lost its turn keeps its seniority).
    ///
    /// # Safety
    ///
    /// As for [`WaitList::push_back`].
    pub(crate) unsafe fn push_front(&mut self, node: &Node) {
        let head = self.head;
        // SAFETY: as in push_back.
        node.links.with_mut(|l| unsafe {
            debug_assert!(!(*l).linked);
            *l = Links {
                prev: ptr::null(),
                next: head,
                linked: true,
            };
        });
        if head.is_null() {
            self.tail = node;
        } else {
            // SAFETY: `head` is a linked node.
            unsafe { (*head).links.with_mut(|l| (*l).prev = node) };
        }
        self.head = node;
    }

    /// Unlinks `node` if it is linked; returns whether it was.
    ///
    /// # Safety
    ///
    /// `node` is alive and is either unlinked or linked in *this* list.
    pub(crate) unsafe fn remove(&mut self, node: &Node) -> bool {
        // SAFETY: we hold the list lock; the node is ours or linked here (caller).
        let (prev, next, linked) = node
            .links
            .with(|l| unsafe { ((*l).prev, (*l).next, (*l).linked) });
        if !linked {
            return false;
        }
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: neighbours of a linked node are linked, hence alive.
            unsafe { (*prev).links.with_mut(|l| (*l).next = next) };
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { (*next).links.with_mut(|l| (*l).prev = prev) };
        }
        // SAFETY: as above.
        node.links.with_mut(|l| unsafe {
            *l = Links {
                prev: ptr::null(),
                next: ptr::null(),
                linked: false,
            }
        });
        true
    }

    /// Walks the list front to back and returns the registration of every linked node to `f`
    /// until it returns true. Claimability is the caller's business ([`Registration::is_waiting`]).
    pub(crate) fn any(&self, mut f: impl FnMut(&Registration) -> bool) -> bool {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: linked nodes are alive; we hold the lock (`&self` is reached through it).
            let node = unsafe { &*cur };
            if f(&node.reg()) {
                return true;
            }
            cur = node.links.with(|l| unsafe { (*l).next });
        }
        false
    }

    /// Claims the first node (front to back) whose registration passes `filter` and whose context
    /// is still WAITING: CAS WAITING → BUSY, unlink, and return it. Nodes whose context cannot be
    /// claimed (aborted, or selected through another list) are skipped and left for their owner.
    pub(crate) fn claim(&mut self, mut filter: impl FnMut(&Registration) -> bool) -> Option<Claim> {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: linked nodes are alive while we hold the lock.
            let node = unsafe { &*cur };
            let next = node.links.with(|l| unsafe { (*l).next });
            let reg = node.reg();
            if filter(&reg) {
                // SAFETY: the node is linked, so its owner's context is alive (module docs).
                let ctx = unsafe { &*reg.ctx };
                if ctx
                    .state
                    .compare_exchange(WAITING, BUSY, Acquire, Relaxed)
                    .is_ok()
                {
                    // SAFETY: `node` is linked in this list.
                    unsafe { self.remove(node) };
                    return Some(Claim { reg });
                }
            }
            cur = next;
        }
        None
    }
}

impl Registration {
    /// True if the owning context can still be claimed. Only meaningful under the list lock.
    pub(crate) fn is_waiting(&self) -> bool {
        // SAFETY: called on registrations of linked nodes under the list lock: ctx is alive.
        unsafe { (*self.ctx).is_waiting() }
    }
}

/// A claimed waiter (its context is BUSY). The claimer may use the packet, then must
/// [`finish`](Claim::finish) it; until then the owner spins.
#[must_use = "a claimed waiter spins until the claim is finished"]
#[derive(Debug)]
pub(crate) struct Claim {
    reg: Registration,
}

impl Claim {
    /// The packet pointer the owner registered.
    pub(crate) fn packet(&self) -> *mut () {
        self.reg.packet
    }

    /// Decides the selection; the caller must [`Wake::wake`] the result (it may first release
    /// its lock; a [`Wakeups`] does that for it). The context stays BUSY until then.
    pub(crate) fn finish(self, kind: Kind) -> Wake {
        Wake {
            ctx: self.reg.ctx,
            selected: Selected::encode(self.reg.op, kind),
        }
    }
}

/// A claimed waiter whose selection is decided but not yet published: its owner is still held
/// in its frame by the BUSY state.
#[must_use = "a claimed waiter spins until it is woken"]
#[derive(Debug)]
pub(crate) struct Wake {
    ctx: *const Context,
    selected: usize,
}

impl Wake {
    /// Unparks the owner, then publishes the selection (module docs: the owner cannot leave
    /// before the store, so its frame unparker is valid for the unpark).
    pub(crate) fn wake(self) {
        // SAFETY: the context is BUSY (we hold the claim), so its owner is still waiting in its
        // frame and cannot leave until the store below.
        let ctx = unsafe { &*self.ctx };
        // SAFETY: as above: the owner is held in its wait until we store SELECTED.
        unsafe { ctx.unparker.unpark() };
        ctx.state.store(self.selected, Release);
        // From here on the owner may return and free the context: nothing of it is touched.
    }
}

/// Yields the calling fiber (the runtime's `yield_now` yields the OS thread outside a fiber)
/// while a claimer finishes.
fn yield_now() {
    #[cfg(not(loom))]
    filament_runtime::yield_now();
    #[cfg(loom)]
    filament_runtime::loom::thread::yield_now();
}

/// Wakes decided under a lock, to deliver after the lock is released (a wake may be a futex
/// syscall: it must not run under a spin lock other threads wait on). Holds one inline; more
/// (only broadcast-like operations produce several: `notify_all`, `WaitGroup`, a channel's
/// close) go into a vector, allocated only then.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Wakeups {
    first: Option<Wake>,
    rest: Vec<Wake>,
}

impl Wakeups {
    /// Nothing to wake yet.
    pub(crate) fn new() -> Wakeups {
        Wakeups {
            first: None,
            rest: Vec::new(),
        }
    }

    /// Remembers `w`, to wake it after the lock is released.
    pub(crate) fn push(&mut self, w: Wake) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }

    /// Wakes what is held. Call after releasing the lock (dropping does the same).
    pub(crate) fn wake(self) {
        drop(self)
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(w) = self.first.take() {
            w.wake();
        }
        self.rest.drain(..).for_each(Wake::wake);
    }
}
