//! [`TaskRef`]: the counted reference to a task object.
//!
//! It works like `Arc<Task<dyn Body>>` (a strong count in the object, the object dropped and its
//! memory freed when the last reference goes), with two differences:
//!
//! * the memory comes from [`super::task_memory`], which recycles task objects per thread instead
//!   of freeing them into the spawning thread's malloc arena from another thread;
//! * the count lives in the task's [`Header`](super::task::Header) (`refs`), so a bare task
//!   pointer (what a parked fiber's waker or the running-task thread-local holds) can be turned
//!   back into a counted reference without knowing where an `Arc`'s counts would sit.
//!
//! The count follows `Arc`'s protocol: increments are Relaxed (a new reference is made from an
//! existing one, which keeps the object alive); a decrement is Release, and the one that reaches
//! zero does an Acquire fence before dropping the object, so every use of the object through
//! other references happens before its destruction.
//!
//! One shortcut: a drop that reads the count as 1 (Acquire) holds the only reference and frees
//! the object without the locked decrement (a fiber whose handle was dropped, or joined, before
//! it finished: the worker's reference is then the last). Nobody can add a count meanwhile: a
//! count is only made from another one (a clone), or from a bare pointer whose task some count
//! keeps alive and that only the fiber itself or its worker uses while the fiber runs
//! (`worker::current_task_ref`, a park's timer). Neither exists once the fiber finished and
//! only this reference is left. The Acquire load reads the last Release decrement, so it orders
//! every use through the other references before the destruction, like the fence.

use std::alloc::Layout;
use std::ops::Deref;
use std::ptr::NonNull;

use crate::loom::{fence, Ordering::*};

use super::task::{Body, Task};
use super::task_memory;

/// A counted reference to a task (see the module docs).
pub(crate) struct TaskRef {
    ptr: NonNull<Task<dyn Body>>,
}

// SAFETY: a task is `Send + Sync` (its fields are atomics, locks, or touched by one owner at a
// time, see `task`), and the count is atomic, so references may be sent and shared like `Arc`s.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

/// More references than this means a leak in a loop; abort like `Arc` does.
const MAX_REFS: usize = isize::MAX as usize;

impl TaskRef {
    /// Moves `task` into recycled task memory, with a count of one.
    ///
    /// # Safety
    ///
    /// `task.header.refs` is 1. Nothing the body borrows for `'a` is used after `'a` ends: the
    /// caller makes sure the body no longer holds data borrowing `'a` by then (the object itself
    /// may live on; see `task::new_task_unchecked`).
    pub(crate) unsafe fn new<'a, B: Body + 'a>(task: Task<B>) -> TaskRef {
        let layout = Layout::new::<Task<B>>();
        let Some(memory) = task_memory::allocate(layout) else {
            std::alloc::handle_alloc_error(layout)
        };
        let typed = memory.cast::<Task<B>>();
        // SAFETY: `memory` is fresh, and big and aligned enough for `Task<B>`.
        unsafe { typed.as_ptr().write(task) };
        let erased: *mut Task<dyn Body + 'a> = typed.as_ptr();
        // SAFETY: only the trait object's lifetime bound changes (same pointer, same vtable);
        // the caller guarantees nothing borrowed for 'a is used after 'a.
        let erased: *mut Task<dyn Body> = unsafe { std::mem::transmute(erased) };
        TaskRef {
            // SAFETY: derived from a non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(erased) },
        }
    }

    /// Gives up this reference without decrementing: its count now belongs to the pointer,
    /// to be taken back by [`TaskRef::from_raw`].
    pub(crate) fn into_raw(self) -> NonNull<Task<dyn Body>> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// Takes back a count given up by [`TaskRef::into_raw`] (or owned by a protocol, such as a
    /// parked state's reference).
    ///
    /// # Safety
    ///
    /// `ptr` points at a live task, and the caller owns one of its counts that no `TaskRef`
    /// holds.
    pub(crate) unsafe fn from_raw(ptr: NonNull<Task<dyn Body>>) -> TaskRef {
        TaskRef { ptr }
    }

    /// A new counted reference to the task at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` points at a task that some other reference keeps alive for the duration of the call.
    pub(crate) unsafe fn clone_from_ptr(ptr: NonNull<Task<dyn Body>>) -> TaskRef {
        // SAFETY: the caller guarantees the task is alive, which is all `increment` needs.
        unsafe { Self::increment(ptr) };
        TaskRef { ptr }
    }

    /// Whether two references point at the same task.
    pub(crate) fn ptr_eq(a: &TaskRef, b: &TaskRef) -> bool {
        std::ptr::addr_eq(a.ptr.as_ptr(), b.ptr.as_ptr())
    }

    /// The number of references (a snapshot: other threads may change it at once).
    pub(crate) fn count(&self) -> usize {
        self.header.refs.load(Relaxed)
    }

    /// # Safety
    ///
    /// `ptr` points at a live task.
    unsafe fn increment(ptr: NonNull<Task<dyn Body>>) {
        // SAFETY: the task is alive (caller).
        let old = unsafe { ptr.as_ref() }.header.refs.fetch_add(1, Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
    }

    /// A second reference to a task that no other thread can reach yet, made with a plain load
    /// and store of the count instead of a locked increment (what a spawn saves: the queue's
    /// reference and the join handle's are both made before the task is published).
    ///
    /// # Safety
    /// `self` must be the only reference to the task and the task must not have been published
    /// to another thread (no queue, waker or registry holds it): nobody else may touch `refs`
    /// until the new reference is handed on, which publishes the count with it.
    pub(crate) unsafe fn clone_unshared(&self) -> TaskRef {
        let refs = &self.header.refs;
        refs.store(refs.load(Relaxed) + 1, Relaxed);
        TaskRef { ptr: self.ptr }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        // SAFETY: `self` keeps the task alive.
        unsafe { Self::clone_from_ptr(self.ptr) }
    }
}

impl Deref for TaskRef {
    type Target = Task<dyn Body>;

    fn deref(&self) -> &Task<dyn Body> {
        // SAFETY: this reference's count keeps the task alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        let refs = &self.header.refs;
        // The only reference left: no decrement needed (see the module docs).
        if refs.load(Acquire) != 1 {
            if refs.fetch_sub(1, Release) != 1 {
                return;
            }
            // Pairs with the Release decrements of every other reference (module docs).
            fence(Acquire);
        }
        let ptr = self.ptr.as_ptr();
        // SAFETY: the count reached zero, so this was the last reference: nobody else can reach
        // the task. It was written by `new` into memory from `task_memory::allocate` with the
        // layout of its concrete type, which `for_value` recovers through the vtable.
        unsafe {
            let layout = Layout::for_value(&*ptr);
            std::ptr::drop_in_place(ptr);
            task_memory::free(NonNull::new_unchecked(ptr).cast(), layout);
        }
    }
}
