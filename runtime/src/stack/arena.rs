//! Arenas and the process-wide free list.
//!
//! All shared state of the allocator lives in [`GLOBAL`], one [`Mutex`]: for each stack size a
//! free list, the arena being carved and a count of its arenas; and the totals behind
//! [`super::stats`]. The lock is taken only off the fast path (a thread pool miss or overflow,
//! thread exit, a dropped `Stack`, `stats`), and held for a few vector operations, plus at most
//! one `mmap` and one `madvise` when a slot must be carved.
//!
//! # Arena sizes
//!
//! The `n`-th arena (from 0) of a stack size holds `FIRST_ARENA_BYTES << n` bytes of slots
//! (4 MiB, 8 MiB, 16 MiB, ...), capped at [`MAX_ARENA_BYTES`] (1 GiB), and always at least one
//! slot. Doubling keeps the number of mappings logarithmic while a size class grows (200,000
//! stacks of 16 KiB take 11 arenas), and a program with a few fibers reserves a few MiB of
//! address space. The address space is only reserved (`MAP_NORESERVE`); memory is committed as
//! fibers touch it. Arenas are never unmapped: they live for the process, like Go's stack spans.
//!
//! # Address order of the free list
//!
//! Stacks come back from every worker in the order their fibers ended, so after a few
//! generations of fibers a plain LIFO free list hands out addresses in random order. Fibers
//! spawned one after another (a ring, a tree, a batch of sleepers) then sit on unrelated pages,
//! and a pass over them misses the page-walk caches and the prefetchers on every fiber. The
//! chain benchmark's ring on 2 workers went from 440 to 650–750 ns per hop over 20 rings in one
//! process this way, and a 1-worker runtime started afterwards ran at 400 instead of 120–200.
//! So a long free list is re-sorted by address (lowest handed out first) once a quarter of it
//! has arrived since the last sort. The
//! sort is a stable merge sort, which finds the sorted prefix as one run, so it costs about one
//! merge pass plus sorting the new part: a few nanoseconds per returned stack, paid only by lists
//! of at least [`SORT_MIN`] stacks (a few hundred fibers ending together), never by a steady
//! spawn-and-finish loop, whose free list stays short.

use std::io;
use std::num::NonZeroUsize;

use super::guard;
use crate::loom::Mutex;

/// Bytes of slots in the first arena of a stack size.
const FIRST_ARENA_BYTES: usize = 4 << 20;

/// Bytes of slots in an arena, at most (an arena has at least one slot).
const MAX_ARENA_BYTES: usize = 1 << 30;

/// Free lists shorter than this are never sorted (see "Address order of the free list").
const SORT_MIN: usize = 512;

/// The allocator's shared state.
static GLOBAL: Mutex<Global> = Mutex::new(Global {
    classes: Vec::new(),
    regions: Vec::new(),
    totals: Totals {
        carved: 0,
        free: 0,
        arenas: 0,
        reserved_bytes: 0,
    },
});

/// Process-wide counters (under [`GLOBAL`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Totals {
    /// Slots ever carved (each has a guard page and is either in use or pooled).
    pub(super) carved: usize,
    /// Slots in the global free lists.
    pub(super) free: usize,
    /// Arenas mapped.
    pub(super) arenas: usize,
    /// Bytes of all arenas.
    pub(super) reserved_bytes: usize,
}

struct Global {
    /// One entry per stack size ever requested; few in practice, so a linear search.
    classes: Vec<SizeClass>,
    /// Every arena mapped, as (base, length): what [`committed_bytes`] inspects.
    regions: Vec<(usize, usize)>,
    totals: Totals,
}

/// The free list and arenas of one stack size.
struct SizeClass {
    size: usize,
    /// Bottoms of free stacks, taken from the end. The first `free.len() - unsorted` are in
    /// descending address order; the rest arrived since, most recent last (warmest).
    free: Vec<NonZeroUsize>,
    /// Stacks pushed onto `free` since it was last sorted (at most `free.len()`).
    unsorted: usize,
    /// The arena being carved, if any.
    carving: Option<Arena>,
    /// Arenas mapped for this size so far (sets the next arena's size).
    arenas: usize,
}

/// An arena being carved into slots, lowest address first.
struct Arena {
    base: usize,
    slots: usize,
    /// Index of the next slot to carve.
    next: usize,
}

impl SizeClass {
    /// Sorts the free list by descending address when it is long and a quarter of it is new,
    /// so that stacks taken one after another are neighbours in memory.
    fn keep_in_address_order(&mut self) {
        if self.free.len() >= SORT_MIN && self.unsorted * 4 >= self.free.len() {
            self.free.sort_by(|a, b| b.cmp(a));
            self.unsorted = 0;
        }
    }

    /// Takes one free stack and moves up to `extra` more into `batch` (all from the end of the
    /// list, where the unsorted ones are); `None` when the list is empty.
    fn take(&mut self, extra: usize, batch: &mut Vec<NonZeroUsize>) -> Option<NonZeroUsize> {
        self.keep_in_address_order();
        let one = self.free.pop()?;
        let more = extra.min(self.free.len());
        let from = self.free.len() - more;
        batch.extend(self.free.drain(from..));
        self.unsorted = self.unsorted.saturating_sub(1 + more);
        Some(one)
    }
}

impl Global {
    fn class(&mut self, size: usize) -> &mut SizeClass {
        let index = match self.classes.iter().position(|c| c.size == size) {
            Some(index) => index,
            None => {
                self.classes.push(SizeClass {
                    size,
                    free: Vec::new(),
                    unsorted: 0,
                    carving: None,
                    arenas: 0,
                });
                self.classes.len() - 1
            }
        };
        &mut self.classes[index]
    }
}

/// Slots in the `nth` arena (from 0) for slots of `slot_size` bytes.
fn arena_slots(slot_size: usize, nth: usize) -> usize {
    // The shift is bounded so the byte count cannot overflow before the cap applies.
    let bytes = (FIRST_ARENA_BYTES << nth.min(16)).min(MAX_ARENA_BYTES);
    (bytes / slot_size).max(1)
}

/// Takes one free stack of `size` (a rounded size), moving up to `extra` more free ones into
/// `batch`; carves a new slot (mapping a new arena if needed) when none is free.
pub(super) fn take(
    size: usize,
    extra: usize,
    batch: &mut Vec<NonZeroUsize>,
) -> io::Result<NonZeroUsize> {
    let mut locked = GLOBAL.lock();
    let global = &mut *locked;
    let class = global.class(size);
    let before = batch.len();
    if let Some(one) = class.take(extra, batch) {
        global.totals.free -= 1 + batch.len() - before;
        return Ok(one);
    }
    carve(global, size)
}

/// Carves the next slot of `size`'s arena, mapping a new arena when there is none or it is full.
fn carve(global: &mut Global, size: usize) -> io::Result<NonZeroUsize> {
    let page = guard::page_size();
    let slot_size = page + size;
    let class = global.class(size);
    let full = match &class.carving {
        Some(arena) => arena.next == arena.slots,
        None => true,
    };
    let mut mapped = None;
    if full {
        let slots = arena_slots(slot_size, class.arenas);
        let len = slots * slot_size;
        let base = guard::map_arena(len)?;
        class.carving = Some(Arena {
            base,
            slots,
            next: 0,
        });
        class.arenas += 1;
        mapped = Some((base, len));
    }
    let arena = class.carving.as_mut().expect("an arena is being carved");
    let slot = arena.base + arena.next * slot_size;
    // SAFETY: the first page of a slot never carved before lies in our arena and holds
    // nothing; it becomes the guard below the stack.
    let guarded = unsafe { guard::install_guard(slot, page) };
    if let Some((base, len)) = mapped {
        global.regions.push((base, len));
        global.totals.arenas += 1;
        global.totals.reserved_bytes += len;
    }
    guarded?;
    let arena = global
        .class(size)
        .carving
        .as_mut()
        .expect("an arena is being carved");
    arena.next += 1;
    global.totals.carved += 1;
    Ok(NonZeroUsize::new(slot + page).expect("a mapping is not at address 0"))
}

/// Puts stacks of `size` back on the global free list. They must have come from [`take`] with
/// the same `size`, and their owner must not use them any more.
pub(super) fn give_back(size: usize, stacks: impl IntoIterator<Item = NonZeroUsize>) {
    let mut global = GLOBAL.lock();
    let class = global.class(size);
    let before = class.free.len();
    class.free.extend(stacks);
    let added = class.free.len() - before;
    class.unsorted += added;
    global.totals.free += added;
}

/// The process-wide counters.
pub(super) fn totals() -> Totals {
    GLOBAL.lock().totals
}

/// Bytes of stack memory resident in RAM across all arenas (guard pages included, which are
/// never resident), found with `mincore` page by page. Costs about a byte of scratch and a few
/// nanoseconds per reserved page, so it stays well under a millisecond for 100,000 small stacks.
pub(super) fn committed_bytes() -> usize {
    let regions = GLOBAL.lock().regions.clone();
    let page = guard::page_size();
    let mut resident = 0;
    let mut vec = Vec::new();
    for (base, len) in regions {
        vec.clear();
        vec.resize(len.div_ceil(page), 0u8);
        // SAFETY: `base..base + len` is one of our arenas, mapped for the life of the process
        // (arenas are never unmapped), and `vec` holds one byte per page of it.
        let rc = unsafe { libc::mincore(base as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc == 0 {
            resident += vec.iter().filter(|&&b| b & 1 != 0).count() * page;
        }
    }
    resident
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_grow_geometrically_up_to_the_cap() {
        let slot = 4096 + 16 * 1024;
        assert_eq!(arena_slots(slot, 0), (4 << 20) / slot);
        assert_eq!(arena_slots(slot, 1), (8 << 20) / slot);
        assert_eq!(arena_slots(slot, 8), (1 << 30) / slot);
        assert_eq!(arena_slots(slot, 9), (1 << 30) / slot);
        assert_eq!(arena_slots(slot, usize::MAX), (1 << 30) / slot);
        // Huge stacks get one slot per arena.
        assert_eq!(arena_slots(4096 + (1 << 30), 0), 1);
        assert_eq!(arena_slots(4096 + (1 << 30), 40), 1);
        // 200,000 stacks of 16 KiB need 11 arenas.
        let (mut total, mut arenas) = (0, 0);
        while total < 200_000 {
            total += arena_slots(slot, arenas);
            arenas += 1;
        }
        assert_eq!(arenas, 11);
    }

    #[test]
    fn a_long_shuffled_free_list_is_handed_out_in_address_order() {
        let size = 5 * 4096; // a size no other test uses (20 KiB)
        let n = SORT_MIN * 2;
        let mut batch = Vec::new();
        let mut stacks: Vec<_> = (0..n).map(|_| take(size, 0, &mut batch).unwrap()).collect();
        // Give them back in a scrambled order (a fixed permutation: stride coprime to n).
        let stride = 389;
        assert!(
            n.is_power_of_two() && stride % 2 == 1,
            "odd stride, power-of-two n: a permutation"
        );
        let scrambled: Vec<_> = (0..n).map(|i| stacks[(i * stride) % n]).collect();
        give_back(size, scrambled);
        let again: Vec<_> = (0..n).map(|_| take(size, 0, &mut batch).unwrap()).collect();
        assert!(
            again.windows(2).all(|w| w[0] < w[1]),
            "stacks taken one after another are neighbours, lowest first"
        );
        stacks.sort();
        let mut sorted_again = again.clone();
        sorted_again.sort();
        assert_eq!(stacks, sorted_again, "the same stacks came back");
        // A short list is not sorted: the most recently returned stack comes out first.
        give_back(size, again[..2].iter().copied());
        assert_eq!(take(size, 0, &mut batch).unwrap(), again[1]);
        give_back(size, again[2..].iter().copied().chain([again[1]]));
    }

    #[test]
    fn taken_stacks_are_distinct_and_given_back() {
        let size = 7 * 4096 * 4; // a size no other test uses (112 KiB)
        let mut batch = Vec::new();
        let a = take(size, 0, &mut batch).unwrap();
        let b = take(size, 0, &mut batch).unwrap();
        assert_ne!(a, b);
        assert!(a.get().abs_diff(b.get()) >= size + guard::page_size());
        give_back(size, [a, b]);
        let c = take(size, 4, &mut batch).unwrap();
        assert!(c == a || c == b);
        assert!(batch.len() <= 1);
        give_back(size, batch.drain(..).chain([c]));
    }
}
