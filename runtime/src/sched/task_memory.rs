//! Recycled memory for task objects: per-thread magazines over a process-wide depot.
//!
//! Every spawn allocates one task object and every finished fiber frees one, usually on another
//! thread: the spawner's worker allocates, whichever worker ran the fiber (or stole it) frees.
//! With the system allocator that is a cross-thread free into the spawner's arena, taken under
//! the arena's lock while the spawner allocates from it; in the `spawn` benchmark on two workers
//! that lock's futex traffic was about a third of all CPU time. This module keeps task memory
//! out of the global allocator in steady state.
//!
//! # Layout
//!
//! Memory is handed out in blocks of a *size class*: a multiple of [`GRAIN`] bytes (64, a cache
//! line), up to [`CLASSES`] grains, aligned to [`GRAIN`]. A layout that is larger or more aligned
//! than that goes straight to the global allocator. A block of class `c` always has the layout
//! `(c * GRAIN, GRAIN)`, whichever thread allocated it, so any block may be returned to the global
//! allocator from anywhere. (Block alignment to a cache line also keeps two tasks that run on
//! different workers from sharing a line.)
//!
//! # Magazines and the depot
//!
//! A *magazine* is an intrusive singly linked list of free blocks of one class, with its length
//! (the link is written into the free block itself). Each thread owns two magazines per class,
//! `loaded` and `spare`, in a thread-local; only that thread touches them, so allocation and free
//! are a pop and a push without atomics:
//!
//! * free: push onto `loaded`; if it is full, it becomes `spare`, and a full `spare` goes to the
//!   depot first;
//! * allocate: pop from `loaded`; if it is empty, swap in `spare`, else take a full magazine
//!   from the depot, else ask the global allocator.
//!
//! The depot holds full magazines per class under a lock taken once per [`MAGAZINE`] blocks
//! moved. It keeps at most [`DEPOT_MAGAZINES`] per class; beyond that, blocks go back to the
//! global allocator, so memory held here is bounded (a few MiB per class in use). A thread's
//! magazines go to the depot when the thread exits.
//!
//! Under loom the module is a pass-through to the global allocator: the models test the task
//! state machines, not this cache.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

/// Size-class granularity and block alignment, in bytes.
pub(crate) const GRAIN: usize = 64;
/// Number of size classes: blocks of 1..=CLASSES grains.
pub(crate) const CLASSES: usize = 16;
/// Blocks per full magazine.
const MAGAZINE: usize = 64;
/// Full magazines the depot keeps per class.
const DEPOT_MAGAZINES: usize = 256;

/// The size class of `layout` (1-based), or `None` if it is not pooled.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > GRAIN || layout.size() == 0 {
        return None;
    }
    let class = layout.size().div_ceil(GRAIN);
    (class <= CLASSES).then_some(class)
}

/// The layout of every block of `class`.
fn block_layout(class: usize) -> Layout {
    // Cannot fail: GRAIN is a power of two and class * GRAIN is far below isize::MAX.
    Layout::from_size_align(class * GRAIN, GRAIN).expect("block layout")
}

/// Allocates memory for `layout`.
///
/// Returns `None` when the global allocator fails.
pub(crate) fn allocate(layout: Layout) -> Option<NonNull<u8>> {
    let Some(class) = class_of(layout) else {
        return global_alloc(layout);
    };
    #[cfg(not(loom))]
    if let Some(block) = cache::pop(class) {
        return Some(block);
    }
    global_alloc(block_layout(class))
}

/// Frees memory from [`allocate`].
///
/// # Safety
///
/// `block` came from `allocate(layout)` with this same `layout`, and is not used afterwards.
pub(crate) unsafe fn free(block: NonNull<u8>, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: unpooled layouts were allocated by the global allocator with `layout`.
        unsafe { alloc::dealloc(block.as_ptr(), layout) };
        return;
    };
    #[cfg(not(loom))]
    // SAFETY: the caller hands over a free block of `class` (allocated with its block layout).
    let block = match unsafe { cache::push(class, block) } {
        None => return,
        Some(block) => block,
    };
    // SAFETY: pooled blocks are allocated with `block_layout(class)`.
    unsafe { alloc::dealloc(block.as_ptr(), block_layout(class)) };
}

fn global_alloc(layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() == 0 {
        return Some(NonNull::<u8>::dangling().cast());
    }
    // SAFETY: the size is non-zero.
    NonNull::new(unsafe { alloc::alloc(layout) })
}

/// A free block's link.
struct FreeBlock {
    next: *mut FreeBlock,
}

/// A list of free blocks of one class.
struct Magazine {
    head: *mut FreeBlock,
    len: usize,
}

// SAFETY: a magazine owns its free blocks (no one else references them); moving it to another
// thread (through the depot) moves that ownership.
unsafe impl Send for Magazine {}

impl Magazine {
    const EMPTY: Magazine = Magazine {
        head: ptr::null_mut(),
        len: 0,
    };

    fn pop(&mut self) -> Option<NonNull<u8>> {
        let block = NonNull::new(self.head)?;
        // SAFETY: blocks in a magazine are free, at least GRAIN bytes, aligned, and hold a link.
        self.head = unsafe { (*block.as_ptr()).next };
        self.len -= 1;
        Some(block.cast())
    }

    /// # Safety
    ///
    /// `block` is a free block of this magazine's class, owned by the caller.
    unsafe fn push(&mut self, block: NonNull<u8>) {
        let block = block.cast::<FreeBlock>();
        // SAFETY: the block is free, big and aligned enough for the link (GRAIN >= its size).
        unsafe { block.as_ptr().write(FreeBlock { next: self.head }) };
        self.head = block.as_ptr();
        self.len += 1;
    }

    /// Gives every block back to the global allocator.
    fn release(mut self, class: usize) {
        while let Some(block) = self.pop() {
            // SAFETY: pooled blocks are allocated with `block_layout(class)`.
            unsafe { alloc::dealloc(block.as_ptr(), block_layout(class)) };
        }
    }
}

#[cfg(not(loom))]
mod cache {
    use std::cell::RefCell;
    use std::ptr::NonNull;
    use std::sync::Mutex;

    use super::{Magazine, CLASSES, DEPOT_MAGAZINES, MAGAZINE};

    /// Full magazines per class (index `class - 1`).
    static DEPOT: [Mutex<Vec<Magazine>>; CLASSES] = [const { Mutex::new(Vec::new()) }; CLASSES];

    /// One thread's magazines per class (index `class - 1`).
    struct ThreadMagazines {
        loaded: [Magazine; CLASSES],
        spare: [Magazine; CLASSES],
    }

    impl Drop for ThreadMagazines {
        fn drop(&mut self) {
            for i in 0..CLASSES {
                for magazine in [&mut self.loaded[i], &mut self.spare[i]] {
                    let magazine = std::mem::replace(magazine, Magazine::EMPTY);
                    if magazine.len > 0 {
                        to_depot(i + 1, magazine);
                    }
                }
            }
        }
    }

    thread_local! {
        static MAGAZINES: RefCell<ThreadMagazines> = const {
            RefCell::new(ThreadMagazines {
                loaded: [const { Magazine::EMPTY }; CLASSES],
                spare: [const { Magazine::EMPTY }; CLASSES],
            })
        };
    }

    /// A full magazine from the depot.
    fn from_depot(class: usize) -> Option<Magazine> {
        DEPOT[class - 1]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    /// Stores a magazine in the depot, or frees its blocks if the depot is full.
    fn to_depot(class: usize, magazine: Magazine) {
        let mut depot = DEPOT[class - 1].lock().unwrap_or_else(|e| e.into_inner());
        if depot.len() < DEPOT_MAGAZINES {
            depot.push(magazine);
        } else {
            drop(depot);
            magazine.release(class);
        }
    }

    /// A free block of `class` from this thread's magazines or the depot.
    pub(super) fn pop(class: usize) -> Option<NonNull<u8>> {
        MAGAZINES
            .try_with(|m| {
                let mut m = m.try_borrow_mut().ok()?;
                let m = &mut *m;
                let i = class - 1;
                if let Some(block) = m.loaded[i].pop() {
                    return Some(block);
                }
                if m.spare[i].len > 0 {
                    std::mem::swap(&mut m.loaded[i], &mut m.spare[i]);
                } else {
                    m.loaded[i] = from_depot(class)?;
                }
                m.loaded[i].pop()
            })
            .ok()
            .flatten()
    }

    /// Keeps a free block of `class`; gives it back if this thread cannot keep it (its
    /// thread-locals are being destroyed).
    ///
    /// # Safety
    ///
    /// `block` is a free block of `class`, owned by the caller.
    pub(super) unsafe fn push(class: usize, block: NonNull<u8>) -> Option<NonNull<u8>> {
        let kept = MAGAZINES.try_with(|m| {
            let Ok(mut m) = m.try_borrow_mut() else {
                return false;
            };
            let m = &mut *m;
            let i = class - 1;
            if m.loaded[i].len == MAGAZINE {
                let full = std::mem::replace(&mut m.loaded[i], Magazine::EMPTY);
                let old_spare = std::mem::replace(&mut m.spare[i], full);
                if old_spare.len > 0 {
                    to_depot(class, old_spare);
                }
            }
            // SAFETY: the caller hands the block over.
            unsafe { m.loaded[i].push(block) };
            true
        });
        if kept == Ok(true) {
            None
        } else {
            Some(block)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn layouts_map_to_classes() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(l(1, 1)), Some(1));
        assert_eq!(class_of(l(64, 8)), Some(1));
        assert_eq!(class_of(l(65, 8)), Some(2));
        assert_eq!(class_of(l(CLASSES * GRAIN, 64)), Some(CLASSES));
        assert_eq!(class_of(l(CLASSES * GRAIN + 1, 8)), None);
        assert_eq!(class_of(l(64, 128)), None);
        assert_eq!(class_of(l(0, 1)), None);
    }

    /// Blocks freed on one thread are reused by another (through the depot), are aligned, and
    /// never handed out twice while in use.
    #[test]
    fn blocks_move_between_threads_and_are_not_handed_out_twice() {
        // The largest class: task objects of the tests running alongside are smaller.
        let layout = Layout::from_size_align(CLASSES * GRAIN - 8, 8).unwrap();
        let blocks: Vec<usize> = (0..MAGAZINE * 4)
            .map(|_| allocate(layout).unwrap().as_ptr() as usize)
            .collect();
        assert!(blocks.iter().all(|b| b % GRAIN == 0));
        let freed = blocks.clone();
        std::thread::spawn(move || {
            for b in freed {
                // SAFETY: allocated above with `layout`, not used again.
                unsafe { free(NonNull::new(b as *mut u8).unwrap(), layout) };
            }
        })
        .join()
        .unwrap();
        let mut again: Vec<usize> = (0..MAGAZINE * 4)
            .map(|_| allocate(layout).unwrap().as_ptr() as usize)
            .collect();
        let reused = again.iter().filter(|b| blocks.contains(b)).count();
        assert!(reused >= MAGAZINE, "only {reused} blocks came back");
        again.sort_unstable();
        again.dedup();
        assert_eq!(again.len(), MAGAZINE * 4, "a block was handed out twice");
        for b in again {
            // SAFETY: allocated above with `layout`, not used again.
            unsafe { free(NonNull::new(b as *mut u8).unwrap(), layout) };
        }
    }
}
