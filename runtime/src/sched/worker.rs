//! A worker thread: its run queues, its scheduling loop, and the fiber-side entry points into the
//! scheduler (park, yield, wake).
//!
//! Per-thread state is found through the thread-local `CURRENT_WORKER` / `CURRENT_TASK`
//! pointers, read only through the `#[inline(never)]` accessors [`current`] and [`current_task`]:
//! after a fiber switch (and, in a migrating runtime, possibly a thread change), no thread-local
//! address computed before the switch is reused (DESIGN.md decision 7).
//!
//! The worker loop never holds a borrow of its `Local` queues while a fiber runs: fiber code
//! (spawn, wake) reaches the same queues through `current()`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic;
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use crate::fiber::{RawFiber, Resumed};
use crate::loom::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::{arch, stack};

use super::first_run::FirstRunSlot;
use super::idle::WorkerParker;
use super::state::{Lifecycle, ParkOutcome};
use super::task::{take_parked_ref, Body, Cancelled, Task, NO_HOME};
use super::task_ref::TaskRef;
use super::worker_idle::SpinBudget;
use super::Shared;

/// How many times in a row the LIFO slot may be taken before the queue gets a turn.
pub(crate) const LIFO_STREAK: u32 = 3;
/// Every this many scheduling decisions the injector, the timers and the reactor are checked
/// first.
const GLOBAL_INTERVAL: u32 = 61;
/// How long a spare worker stays idle before its thread exits.
pub(super) const SPARE_IDLE: Duration = Duration::from_millis(100);

/// Values a fiber suspends with.
const SUSPEND_YIELD: usize = 1;
const SUSPEND_PARK: usize = 2;
/// A spawner waits for the fibers it queued (see [`spawn_backpressure`]).
const SUSPEND_BACKPRESSURE: usize = 3;

/// Slot status of a worker.
pub(crate) const SLOT_UNUSED: usize = 0;
pub(crate) const SLOT_RUNNING: usize = 1;

/// The part of a worker other threads see.
pub(crate) struct WorkerShared {
    pub(crate) stealer: Stealer<TaskRef>,
    /// Pinned fibers woken by other threads.
    pub(crate) inbox: Injector<TaskRef>,
    pub(crate) parker: WorkerParker,
    /// The deque's owner half, kept here while no thread serves this slot.
    pub(crate) queue: Mutex<Option<Worker<TaskRef>>>,
    /// SLOT_UNUSED or SLOT_RUNNING.
    pub(crate) status: AtomicUsize,
    /// Incremented every time this worker resumes a fiber (the monitor watches it).
    pub(crate) tick: AtomicU64,
    /// True while the worker runs a fiber.
    pub(crate) busy: AtomicBool,
    /// The fiber it runs in that fiber's first slice, before it is registered (for the dump).
    pub(crate) first_run: FirstRunSlot,
    /// Live fibers that started on this worker (a spare may exit only when it has none).
    pub(crate) homed: HomedCount,
    /// Counters bumped by this worker's thread (see `Shared::bump_at`).
    pub(crate) counters: CachePadded<super::Counters>,
}

impl WorkerShared {
    pub(crate) fn new() -> Self {
        let queue = Worker::new_fifo();
        WorkerShared {
            stealer: queue.stealer(),
            inbox: Injector::new(),
            parker: WorkerParker::new(),
            queue: Mutex::new(Some(queue)),
            status: AtomicUsize::new(SLOT_UNUSED),
            tick: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            first_run: FirstRunSlot::new(),
            homed: HomedCount::default(),
            counters: CachePadded::new(super::Counters::default()),
        }
    }
}

/// The number of live fibers homed on a worker, kept in two words so that the changes the
/// worker makes itself (one at a fiber's first run, one at its end) are a load and a store, not
/// locked read-modify-writes: `own` is written only by the thread serving the worker's slot
/// (one at a time, like its `Counters`), `others` by any other thread (a hand-over from
/// [`placement`](super::placement), the end of a fiber seen elsewhere). The count is their
/// wrapping sum; a reader racing a change may see it one off, which the heuristics reading it
/// tolerate (it never goes below zero for long: see [`HomedCount::get`]).
#[derive(Default)]
pub(crate) struct HomedCount {
    own: AtomicUsize,
    others: AtomicUsize,
}

impl HomedCount {
    /// The count (a snapshot). A transiently negative sum reads as zero.
    pub(crate) fn get(&self) -> usize {
        let sum = self
            .own
            .load(Relaxed)
            .wrapping_add(self.others.load(Relaxed));
        (sum as isize).max(0) as usize
    }

    /// Adds `delta` as the thread serving this worker's slot.
    fn add_own(&self, delta: isize) {
        let own = self.own.load(Relaxed);
        self.own.store(own.wrapping_add_signed(delta), Relaxed);
    }

    /// Adds `delta` from any other thread.
    pub(super) fn add_other(&self, delta: isize) {
        self.others.fetch_add(delta as usize, Relaxed);
    }
}

/// Queues only the worker's own thread touches.
pub(super) struct Local {
    pub(super) queue: Worker<TaskRef>,
    pub(super) lifo: Option<TaskRef>,
    lifo_streak: u32,
    pub(super) pinned: VecDeque<TaskRef>,
    tick: u32,
    pub(super) rng: u64,
    pub(super) searching: bool,
    pub(super) spin: SpinBudget,
    /// A fiber held back by spawn backpressure, and the tick at which it was held.
    pub(super) spawner: Option<(TaskRef, u32)>,
    /// The rest of this worker's block of fiber ids: `next..end`.
    ids: (u64, u64),
    /// The worker this one is giving unstarted fibers to (see `placement`).
    pub(super) handing_over_to: Option<usize>,
}

impl Local {
    /// The next number of this worker's xorshift generator (victim and target choices).
    pub(super) fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// The worker running on this thread.
pub(crate) struct WorkerContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
    pub(super) local: RefCell<Local>,
}

thread_local! {
    static CURRENT_WORKER: Cell<*const WorkerContext> = const { Cell::new(std::ptr::null()) };
    static CURRENT_TASK: Cell<Option<NonNull<Task<dyn Body>>>> = const { Cell::new(None) };
}

/// The worker context of this thread, if it is a worker. Never inlined (see the module docs).
/// The reference must not be kept across a blocking point of a fiber.
#[inline(never)]
pub(crate) fn current() -> Option<&'static WorkerContext> {
    let ptr = CURRENT_WORKER.with(Cell::get);
    // SAFETY: the pointer is set by `run_worker` to a context that lives on the worker thread's
    // stack until it is cleared again, and is read only on this thread.
    unsafe { ptr.as_ref() }
}

/// The task whose fiber is running on this thread. Never inlined (see the module docs).
#[inline(never)]
pub(crate) fn current_task() -> Option<NonNull<Task<dyn Body>>> {
    CURRENT_TASK.with(Cell::get)
}

/// A counted reference to a scheduled fiber: what an `Unparker` of a fiber holds.
#[derive(Clone)]
pub struct FiberRef(pub(crate) TaskRef);

impl FiberRef {
    pub(crate) fn ptr_eq(&self, other: &FiberRef) -> bool {
        TaskRef::ptr_eq(&self.0, &other.0)
    }
    pub(crate) fn id(&self) -> u64 {
        self.0.header.id
    }
}

/// A counted reference to the running task.
pub(crate) fn current_task_ref() -> Option<TaskRef> {
    // SAFETY: the pointer is the running task's.
    current_task().map(|ptr| unsafe { counted(ptr) })
}

pub(crate) fn current_fiber_ref() -> Option<FiberRef> {
    // SAFETY: the pointer is the running task's.
    current_task_ptr().map(|ptr| FiberRef(unsafe { counted(ptr) }))
}

/// A new counted reference to the task running on this thread.
///
/// # Safety
///
/// `ptr` is the running task (from [`current_task`]).
unsafe fn counted(ptr: TaskPtr) -> TaskRef {
    // SAFETY: the running task is kept alive by the worker running it (it holds a `TaskRef`
    // for the whole run); we add one count for the new reference.
    unsafe { TaskRef::clone_from_ptr(ptr) }
}

/// Wakes a fiber (sets its token; queues it if it was parked).
pub(crate) fn unpark_fiber(fiber: &FiberRef) {
    wake_task(&fiber.0);
}

/// An uncounted pointer to a task (what a `FrameUnparker` of a fiber holds).
pub(crate) type TaskPtr = NonNull<Task<dyn Body>>;

/// The running fiber's task, when called on a fiber's stack.
#[inline]
pub(crate) fn current_task_ptr() -> Option<TaskPtr> {
    if !crate::fiber::in_fiber_stack() {
        return None;
    }
    current_task()
}

/// Wakes the fiber of `task` (as [`unpark_fiber`]).
///
/// # Safety
///
/// The task must be alive for the whole call (the caller knows its fiber cannot finish
/// meanwhile: it is blocked in a wait the caller holds it in).
pub(crate) unsafe fn unpark_task(task: TaskPtr) {
    // SAFETY: alive for this call (caller's contract).
    wake_task(unsafe { task.as_ref() });
}

fn wake_task(task: &Task<dyn Body>) {
    let shared = &task.header.shared;
    let here = shared.here();
    shared.bump_at(here, |c| &c.unparks);
    if task.header.state.unpark() {
        // SAFETY: our `unpark` moved the task out of PARKED; it is alive (callers).
        shared.schedule_at(here, unsafe { take_parked_ref(task) });
    }
}

/// Unwinds the current fiber if it was cancelled (once: destructors that block while unwinding
/// then block normally).
#[inline]
fn check_cancelled(task: &Task<dyn Body>) {
    if task.header.state.is_cancelled() {
        deliver_cancel(task);
    }
}

#[cold]
#[inline(never)]
fn deliver_cancel(task: &Task<dyn Body>) {
    if !task.header.cancel_shield.load(Relaxed)
        && !thread::panicking()
        && !task.header.cancel_delivered.swap(true, Relaxed)
    {
        panic::resume_unwind(Box::new(Cancelled));
    }
}

/// While alive, the running fiber's blocking points do not unwind on cancellation (used where a
/// wait must not be abandoned, e.g. `blocking`, whose closure borrows the fiber's stack).
pub(crate) struct CancelShield(Option<TaskRef>);

impl CancelShield {
    pub(crate) fn new() -> Self {
        let task = current_task_ref();
        if let Some(t) = &task {
            t.header.cancel_shield.store(true, Relaxed);
        }
        CancelShield(task)
    }
}

impl Drop for CancelShield {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.header.cancel_shield.store(false, Relaxed);
        }
    }
}

#[inline]
fn running_task() -> &'static Task<dyn Body> {
    let ptr = current_task().expect("called from a filament fiber");
    // SAFETY: the running task is kept alive by its worker for the whole run, which outlasts
    // every use of this reference (it is not kept across a suspension by the callers below).
    unsafe { &*ptr.as_ptr() }
}

/// Parks the running fiber (see `crate::park`). Returns true if `deadline` passed.
///
/// Inlined, with the switch, into its caller (and `park`/`park_until` into theirs): after a
/// switch the CPU's return-stack predictor is out of step, so every `ret` into a frame older
/// than the switch mispredicts; the fewer such frames, the cheaper a park (see `yield_fiber`).
#[inline]
pub(crate) fn park_fiber(deadline: Option<Instant>) -> bool {
    park_fiber_with(deadline, false)
}

/// [`park_fiber`] for a deadline the caller knows is in the future (`sleep` computed it from
/// the clock it just read), which saves reading the clock again before the switch.
#[inline]
pub(crate) fn park_fiber_until_future(deadline: Instant) -> bool {
    park_fiber_with(Some(deadline), true)
}

#[inline]
fn park_fiber_with(deadline: Option<Instant>, deadline_is_future: bool) -> bool {
    park_task(running_task(), deadline, deadline_is_future)
}

/// [`park_fiber`] for a caller that already knows the running fiber's task (a waiter that
/// captured it in its `FrameUnparker`), which saves the thread-local lookups.
///
/// # Safety
///
/// `task` is the task of the fiber running this call.
#[inline]
pub(crate) unsafe fn park_running_task(task: TaskPtr, deadline: Option<Instant>) -> bool {
    // SAFETY: the running fiber's task is alive while it runs (the caller's contract names it).
    park_task(unsafe { task.as_ref() }, deadline, false)
}

/// Parks the running fiber, whose task is `task` (every caller passes the running fiber's own).
#[inline]
fn park_task(task: &Task<dyn Body>, deadline: Option<Instant>, deadline_is_future: bool) -> bool {
    if let Some(early) = prepare_park(task, deadline, deadline_is_future) {
        return early;
    }
    crate::fiber::suspend(SUSPEND_PARK);
    // Resumed, possibly on another thread: `task` is the same object (the heap), but every
    // thread-local is re-read through the accessors.
    check_cancelled(task);
    let by_token = take_token(task);
    // Without a token only the park's own timer can have resumed the fiber, and a timer fires
    // only once the clock has passed its tick, which is at or after the deadline: no need to
    // read the clock to know the deadline passed.
    deadline.is_some_and(|d| !by_token || Instant::now() >= d)
}

/// The part of a park before the switch: cancellation, a pending token, an expired deadline
/// (`Some(result)`: do not switch), else the timer. Out of line: it returns before the switch.
#[inline(never)]
fn prepare_park(
    task: &Task<dyn Body>,
    deadline: Option<Instant>,
    deadline_is_future: bool,
) -> Option<bool> {
    check_cancelled(task);
    if take_token(task) {
        return Some(false);
    }
    if let Some(d) = deadline {
        if !deadline_is_future && d <= Instant::now() {
            return Some(true);
        }
        let shared = &task.header.shared;
        // SAFETY: `task` is the running fiber's (see `park_task`), which its worker keeps alive;
        // no second thread-local lookup is needed to count a reference to it.
        let me = unsafe { counted(NonNull::from(task)) };
        // The timer shard of the fiber's home worker: where a started fiber runs unless the
        // runtime migrates fibers (any shard is correct; this one is usually local).
        let home = task.header.home.load(Relaxed);
        if shared
            .timers
            .add(d, me, task.header.state.generation(), home)
        {
            shared.reactor.wake();
        }
    }
    None
}

/// Consumes the running fiber's park token: the one its worker took out of the state word when
/// it resumed the fiber (`TaskState::start_running`), else the state word's own.
#[inline]
fn take_token(task: &Task<dyn Body>) -> bool {
    if task.header.token.load(Relaxed) {
        task.header.token.store(false, Relaxed);
        return true;
    }
    task.header.state.take_token()
}

/// Yields the running fiber to the back of the queue.
#[inline]
pub(crate) fn yield_fiber() {
    let task = running_task();
    check_cancelled(task);
    crate::fiber::suspend(SUSPEND_YIELD);
    check_cancelled(task);
}

/// Fibers queued on one worker beyond which a fiber that spawns yields (see
/// [`spawn_backpressure`]).
pub(crate) const SPAWN_BACKLOG: usize = 256;

/// Called after a fiber spawned another on its own worker: once the worker's queue holds more
/// than [`SPAWN_BACKLOG`] fibers, the spawner steps aside so the fibers it made run (and free
/// their memory) before it makes more. A loop spawning a million short fibers then needs memory
/// for a few hundred at a time, not a million (Go bounds its local run queue the same way, at
/// 256). The yield never unwinds: `spawn` is not a cancellation point.
///
/// The spawner does not go to the back of the worker's queues (behind every fiber woken
/// meanwhile, e.g. thousands whose timers fired): it waits in a slot of its own and runs again
/// as soon as the queue it filled has drained to half, or after [`SPAWNER_PATIENCE`] scheduling
/// decisions, whichever comes first, so it can never be starved by others refilling the queue.
pub(crate) fn spawn_backpressure(here: Option<&WorkerContext>) {
    let Some(ctx) = here else { return };
    if ctx.local.borrow().queue.len() <= SPAWN_BACKLOG || !crate::fiber::in_fiber_stack() {
        return;
    }
    crate::fiber::suspend(SUSPEND_BACKPRESSURE);
}

/// Pinned queue length from which [`pop_pinned`] fetches ahead: about where the fibers' hot
/// lines (a task header and the top of a stack, roughly 1 KiB per fiber) outgrow a core's L2
/// cache. Below it the fibers are still cached when their turn comes, and the prefetches only
/// cost instructions (yield on 1,000 fibers: 11.4 -> 12.7 ns).
const PREFETCH_QUEUE_MIN: usize = 1024;

/// Takes the next pinned fiber. Behind a long queue it also starts fetching the ones after it:
/// the stack of the next one (whose header the previous call fetched) and the header of the one
/// after. A worker with thousands of pinned fibers (10,000 sleepers woken by one timer tick)
/// resumes each one cold; this way the loads overlap with running the fibers before them.
fn pop_pinned(pinned: &mut VecDeque<TaskRef>) -> Option<TaskRef> {
    let task = pinned.pop_front()?;
    if pinned.len() < PREFETCH_QUEUE_MIN {
        return Some(task);
    }
    if let Some(next) = pinned.front() {
        prefetch_stack(next, true);
    }
    if let Some(after) = pinned.get(1) {
        prefetch_header(after);
    }
    Some(task)
}

/// Bytes of a task object fetched ahead of its run: the header's two hot lines (`Header`).
const PREFETCH_HEADER_BYTES: usize = 128;

/// Starts loading the task's header (a hint, see [`arch::prefetch`]).
fn prefetch_header(task: &TaskRef) {
    let start = &**task as *const Task<dyn Body> as *const u8;
    arch::prefetch_range(start, PREFETCH_HEADER_BYTES);
}

/// Starts loading what resuming the task's fiber touches first, if it has run before, and with
/// `park_frames` also where it will park next (only when fetching well ahead: see
/// [`crate::fiber::RawFiber::prefetch_park_frames`]).
fn prefetch_stack(task: &TaskRef, park_frames: bool) {
    // SAFETY: the task sits in (or is being put into) this worker's LIFO slot or pinned queue,
    // which no other thread pops, so no other thread touches its fiber now (module docs of
    // `task`); its last writer handed it here through the state word or a queue, which ordered
    // those writes before us.
    if let Some(fiber) = unsafe { &*task.header.fiber.get() } {
        fiber.prefetch_resume();
        if park_frames {
            fiber.prefetch_park_frames();
        }
    }
}

/// While a spawner is held back by backpressure, pinned (started) fibers go first on one
/// scheduling decision in this many; the queue the spawner filled gets the others.
///
/// A spawner held back waits for its own fibers to drain; pinned fibers woken meanwhile (a
/// timer tick waking thousands) would otherwise halve that drain, and every fiber not yet spawned
/// starts later. Giving the queue every turn would starve the woken fibers for as long as a
/// spawn loop lasts (they cannot run elsewhere); a share of one in four keeps them moving.
/// In-process A/B of the sleep benchmark (10,000 fibers spawned in a loop, then sleeping; 30
/// alternating pairs): one in four beat one in two in 22 of 30 pairs (12.7 -> 12.5 ms); the
/// queue always first lost to one in two in 20 of 30.
const HELD_SPAWNER_PINNED_TURN: u32 = 4;

/// Scheduling decisions after which a spawner held back by backpressure runs again even if its
/// worker's queue has not drained to half.
const SPAWNER_PATIENCE: u32 = 2 * SPAWN_BACKLOG as u32;

impl WorkerContext {
    /// The next id of this worker's block (see `Shared::next_fiber_id_at`).
    pub(crate) fn next_fiber_id(&self) -> u64 {
        let mut local = self.local.borrow_mut();
        let (next, end) = &mut local.ids;
        if *next == *end {
            *next = self.shared.next_id.fetch_add(super::ID_BLOCK, Relaxed);
            *end = *next + super::ID_BLOCK;
        }
        *next += 1;
        *next - 1
    }

    /// Queues a runnable fiber from this worker's thread (LIFO slot, or its home's inbox).
    pub(crate) fn schedule_local(&self, task: TaskRef) {
        let home = task.header.home.load(Acquire);
        if home != NO_HOME && home != self.index && !self.shared.config.migrate {
            self.shared.workers[home].inbox.push(task);
            self.shared.wake_worker(home);
            return;
        }
        if home != NO_HOME {
            // A woken fiber runs next (unless the streak is used up): fetch what its resume will
            // touch while the current fiber goes on to its next switch. (A new fiber has no stack
            // yet, and its spawner has just written its header.)
            prefetch_header(&task);
            prefetch_stack(&task, false);
        }
        let previous = self.local.borrow_mut().lifo.replace(task);
        if let Some(previous) = previous {
            self.push_back(previous);
        }
    }

    /// Queues a fiber at the back of the right local queue.
    fn push_back(&self, task: TaskRef) {
        let stealable = self.shared.config.migrate || task.header.home.load(Relaxed) == NO_HOME;
        if stealable {
            let local = self.local.borrow();
            // Only a push into an empty deque notifies (module docs of `sched`).
            let was_empty = local.queue.is_empty();
            local.queue.push(task);
            drop(local);
            if was_empty {
                self.shared.notify_work();
            }
        } else {
            self.local.borrow_mut().pinned.push_back(task);
        }
    }

    fn next_task(&self) -> Option<TaskRef> {
        let shared = &self.shared;
        let me = &shared.workers[self.index];
        let mut local = self.local.borrow_mut();
        local.tick = local.tick.wrapping_add(1);
        if local.tick.is_multiple_of(GLOBAL_INTERVAL) {
            drop(local);
            self.maintenance();
            local = self.local.borrow_mut();
            if let Steal::Success(t) = shared.injector.steal_batch_and_pop(&local.queue) {
                return Some(t);
            }
            if let Some(t) = self.steal_to_balance(&mut local) {
                return Some(t);
            }
        }
        while !me.inbox.is_empty() {
            match me.inbox.steal() {
                Steal::Success(t) => local.pinned.push_back(t),
                Steal::Empty => break,
                Steal::Retry => {}
            }
        }
        if let Some((_, since)) = local.spawner {
            if local.queue.len() <= SPAWN_BACKLOG / 2
                || local.tick.wrapping_sub(since) > SPAWNER_PATIENCE
            {
                return local.spawner.take().map(|(t, _)| t);
            }
        }
        if local.lifo.is_some() {
            if local.lifo_streak < LIFO_STREAK {
                local.lifo_streak += 1;
                return local.lifo.take();
            }
            let t = local.lifo.take().expect("checked");
            drop(local);
            self.push_back(t);
            local = self.local.borrow_mut();
        }
        local.lifo_streak = 0;
        // Alternate between pinned and stealable work so neither starves the other; while a
        // spawner waits for its fibers to drain, they get three turns in four (see
        // `HELD_SPAWNER_PINNED_TURN`).
        let pinned_turn = if local.spawner.is_some() {
            HELD_SPAWNER_PINNED_TURN
        } else {
            2
        };
        let pinned_first = local.tick.is_multiple_of(pinned_turn);
        if pinned_first {
            if let Some(t) = pop_pinned(&mut local.pinned) {
                return Some(t);
            }
        }
        if let Some(t) = local.queue.pop() {
            return Some(t);
        }
        if let Some(t) = pop_pinned(&mut local.pinned) {
            return Some(t);
        }
        while !shared.injector.is_empty() {
            match shared.injector.steal_batch_and_pop(&local.queue) {
                Steal::Success(t) => return Some(t),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
        None
    }

    /// Periodic duties of a busy worker: due timers, and a non-blocking look at the reactor
    /// when no worker is blocked in it.
    fn maintenance(&self) {
        let shared = &self.shared;
        shared.fire_timers(Instant::now());
        if shared.idle.poller.load(Relaxed) == 0 {
            shared.poll_reactor_now();
        }
    }

    fn run_task(&self, task: TaskRef) {
        let shared = &self.shared;
        let header = &task.header;
        if header.state.lifecycle() == Lifecycle::Scheduled {
            if header.state.start_running() {
                header.token.store(true, Relaxed);
            }
        } else {
            // A pinned fiber that yielded stayed RUNNING (see the yield branch below).
            header.yielded.store(false, Relaxed);
        }
        let mut home = header.home.load(Acquire);
        if home == NO_HOME {
            // About to start here: or should it live on a less loaded worker? (`placement`)
            if let Some(target) = self.hand_over_target(&task) {
                header.home.store(target, Release);
                home = target;
            }
        }
        if home != NO_HOME && home != self.index && !shared.config.migrate {
            // A pinned fiber reached the wrong worker (e.g. through the injector), or is handed
            // over before it starts: send it home.
            header.state.yield_now();
            shared.workers[home].inbox.push(task);
            shared.wake_worker(home);
            return;
        }
        // SAFETY: we popped the task, so its state is RUNNING and we own its fiber slot until we
        // hand it back (queue it or publish PARKED/DONE). No other reference to the slot exists.
        let slot = unsafe { &mut *header.fiber.get() };
        // Every later run follows a suspension, which registered the fiber (`registry` module
        // docs); in its first run the dump finds it through `first_run`.
        let mut registered = slot.is_some();
        if !registered {
            // A runtime being dropped cancels the fibers that have not started yet here, however
            // late they were spawned (the shutdown loop only sees registered fibers).
            if header.state.is_cancelled() || shared.shutdown.load(Acquire) {
                self.end_unstarted(&task, home, Box::new(Cancelled));
                return;
            }
            let stack = match stack::acquire(header.stack_size) {
                Ok(stack) => stack,
                Err(error) => {
                    // Reported through `join` as a panic payload (a message, like a panic's).
                    let msg = format!("filament: cannot allocate a fiber stack: {error}");
                    self.end_unstarted(&task, home, Box::new(msg));
                    return;
                }
            };
            if home == NO_HOME {
                header.home.store(self.index, Release);
                self.count_homed(self.index, 1);
            }
            let body = BodyPtr(&task.body as *const dyn Body);
            *slot = Some(RawFiber::with_name(stack, header.name.clone(), move || {
                let body = body;
                // SAFETY: the task (and so its body) outlives its fiber: the running worker holds a
                // reference while it runs, and the registry from its first suspension until it
                // has finished (`registry` module docs).
                unsafe { (*body.0).run() }
            }));
        }
        let fiber = slot.as_mut().expect("created above");
        let me = &shared.workers[self.index];
        CURRENT_TASK.with(|c| c.set(Some(NonNull::from(&*task))));
        me.busy.store(true, Relaxed);
        if !registered {
            me.first_run.publish(header.id, header.spawned_at);
        }
        // Only this worker writes its tick: a load and a store, no locked read-modify-write.
        me.tick
            .store(me.tick.load(Relaxed).wrapping_add(1), Relaxed);
        let mut suspended_with = SUSPEND_YIELD;
        let outcome = loop {
            let resumed = fiber.resume();
            if !registered && matches!(resumed, Resumed::Suspended(_)) {
                // Still ours: the park is not published, the yield not queued.
                shared.registry.insert(self.index, &task);
                registered = true;
                me.first_run.clear();
            }
            match resumed {
                Resumed::Suspended(SUSPEND_PARK) => {
                    shared.bump_at(Some(self), |c| &c.parks);
                    match header.state.finish_park() {
                        // From here the task is not ours: a wake may already have queued it, and
                        // it may be running, or even be freed, elsewhere. Touch nothing of it.
                        ParkOutcome::Parked => break None,
                        ParkOutcome::Resume => continue,
                    }
                }
                Resumed::Suspended(value) => {
                    suspended_with = value;
                    break Some(false);
                }
                Resumed::Finished(_) => break Some(true),
            }
        };
        me.busy.store(false, Relaxed);
        if !registered {
            me.first_run.clear();
        }
        CURRENT_TASK.with(|c| c.set(None));
        match outcome {
            // PARKED now owns our reference; the wake that ends the park takes it over
            // (`take_parked_ref`). Giving it up touches nothing of the task.
            None => {
                task.into_raw();
            }
            Some(false) if suspended_with == SUSPEND_YIELD && !shared.config.migrate => {
                // A yielding pinned fiber goes to this worker's own pinned queue, which no other
                // thread pops, so it stays RUNNING ("owned by a worker that is about to decide
                // where it goes"): a wake or a timer meanwhile only leaves the token, exactly as
                // for SCHEDULED, and the two atomic read-modify-writes of SCHEDULED and back are
                // saved. `yielded` tells `Runtime::dump` it is runnable, not running.
                header.yielded.store(true, Relaxed);
                self.local.borrow_mut().pinned.push_back(task);
            }
            Some(false) => {
                header.state.yield_now();
                let mut local = self.local.borrow_mut();
                if suspended_with == SUSPEND_BACKPRESSURE && local.spawner.is_none() {
                    local.spawner = Some((task, local.tick));
                } else {
                    drop(local);
                    self.push_back(task);
                }
            }
            Some(true) => {
                let fiber = slot.take().expect("finished fiber");
                if let Ok(stack) = fiber.into_stack() {
                    stack::release(stack);
                }
                self.count_homed(header.home.load(Relaxed), -1);
                self.finish(&task);
            }
        }
    }

    /// Ends a fiber that never started (cancelled, or no stack could be had for it) with
    /// `payload` as its `join` error. A fiber handed over by `placement` was counted in its
    /// home's `homed` before it ran (`home` is set); that count is given back.
    fn end_unstarted(&self, task: &TaskRef, home: usize, payload: Box<dyn std::any::Any + Send>) {
        if home != NO_HOME {
            self.count_homed(home, -1);
        }
        task.body.fail_unstarted(payload);
        self.finish(task);
    }

    /// Adds `delta` to `worker`'s count of homed fibers, from this worker's thread.
    fn count_homed(&self, worker: usize, delta: isize) {
        let homed = &self.shared.workers[worker].homed;
        if worker == self.index {
            homed.add_own(delta);
        } else {
            homed.add_other(delta);
        }
    }

    fn finish(&self, task: &TaskRef) {
        // Counted before `join` can return, so a joiner never sees its fiber still live in the
        // metrics or a dump (`Shared::live_fibers`).
        self.shared.bump_at(Some(self), |c| &c.finished);
        if task.header.state.finish() {
            task.header.join.wake_joiners();
        }
        self.shared.registry.remove(task);
    }

    fn main_loop(&self) {
        loop {
            if let Some(task) = self.next_task() {
                self.found_work();
                self.run_task(task);
                continue;
            }
            if self.shared.stopping() {
                break;
            }
            if self.shared.fire_timers(Instant::now()) > 0 {
                continue;
            }
            // Already searching (e.g. woken by a notifier, which counted us) must be checked
            // first: counting ourselves a second time would leave the searching count stuck
            // above zero, and `notify_work` would then never wake a parked worker again.
            if self.is_searching()
                || self
                    .shared
                    .idle
                    .try_start_searching(self.shared.active_workers())
            {
                self.set_searching(true);
                if let Some(task) = self.search() {
                    self.found_work();
                    self.run_task(task);
                    continue;
                }
            }
            let idle_since = Instant::now();
            if self.spin_for_work(idle_since) {
                continue;
            }
            if !self.park(idle_since) {
                break;
            }
        }
        if self.is_searching() {
            self.set_searching(false);
            self.shared.idle.stop_searching();
        }
    }
}

#[derive(Clone, Copy)]
struct BodyPtr(*const dyn Body);
// SAFETY: the body is `Send + Sync`; the pointer is only dereferenced on the fiber while the task
// is alive (see `run_task`).
unsafe impl Send for BodyPtr {}

/// The thread body of worker slot `index`.
pub(crate) fn run_worker(shared: Arc<Shared>, index: usize) {
    let queue = shared.workers[index]
        .queue
        .lock()
        .take()
        .expect("a worker slot is served by one thread at a time");
    let ctx = WorkerContext {
        shared: shared.clone(),
        index,
        local: RefCell::new(Local {
            queue,
            lifo: None,
            lifo_streak: 0,
            pinned: VecDeque::new(),
            tick: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 17),
            searching: false,
            spin: SpinBudget::new(),
            spawner: None,
            ids: (0, 0),
            handing_over_to: None,
        }),
    };
    stack::overflow::ensure_altstack();
    let _reactor = crate::reactor::enter(shared.reactor.clone());
    CURRENT_WORKER.with(|c| c.set(&ctx));
    ctx.main_loop();
    CURRENT_WORKER.with(|c| c.set(std::ptr::null()));
    let local = ctx.local.into_inner();
    // Anything left (only on shutdown or by a spare with no homed fibers) goes back to the
    // injector so no runnable fiber is lost.
    if let Some(t) = local.lifo {
        shared.injector.push(t);
    }
    if let Some((t, _)) = local.spawner {
        shared.injector.push(t);
    }
    for t in local.pinned {
        shared.injector.push(t);
    }
    while let Some(t) = local.queue.pop() {
        shared.injector.push(t);
    }
    *shared.workers[index].queue.lock() = Some(local.queue);
    shared.workers[index].status.store(SLOT_UNUSED, SeqCst);
    if shared.has_stealable_work() {
        shared.notify_work();
    }
}
