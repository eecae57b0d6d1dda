//! What a fiber waits on, for `Runtime::dump`: written only by the fiber itself, on every
//! blocking call that really parks; read, rarely, by whichever thread takes a dump.
//!
//! The writer is on the hot path (every contended lock, every channel wait), so the record is a
//! sequence lock over three atomic words instead of a mutex: a write is five plain stores and
//! no read-modify-write. Protocol (one writer at a time — the fiber runs on one thread at a
//! time, and a fiber moving to another worker is handed over through its task state, which
//! orders its earlier writes before its later ones):
//!
//! * the writer makes the sequence odd, issues a release fence, stores the words, and makes the
//!   sequence even again (release);
//! * a reader loads the sequence (acquire), the words, issues an acquire fence and loads the
//!   sequence again; if it was even and unchanged, the words came from one write (a word stored
//!   after the writer's fence would have made the second load see a newer sequence), else it
//!   retries.
//!
//! The words are a `&'static str` (pointer and length) and a `&'static Location`, so a
//! consistent read is a valid pair of references; the reader only rebuilds them after the check.

use std::panic::Location;

use crate::loom::{fence, AtomicPtr, AtomicUsize, Ordering::*};

/// The wait record of one fiber.
pub(crate) struct WaitSlot {
    seq: AtomicUsize,
    what_ptr: AtomicPtr<u8>,
    what_len: AtomicUsize,
    /// Null while the fiber waits on nothing recorded.
    at: AtomicPtr<Location<'static>>,
}

impl WaitSlot {
    pub(crate) fn new() -> Self {
        WaitSlot {
            seq: AtomicUsize::new(0),
            what_ptr: AtomicPtr::new(std::ptr::null_mut()),
            what_len: AtomicUsize::new(0),
            at: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Records `what` at `at`. Only the fiber owning the slot calls this (single writer).
    pub(crate) fn set(&self, what: &'static str, at: &'static Location<'static>) {
        self.write(what, at as *const Location<'static> as *mut _);
    }

    /// Clears the record. Only the fiber owning the slot calls this (single writer).
    pub(crate) fn clear(&self) {
        self.write("", std::ptr::null_mut());
    }

    fn write(&self, what: &'static str, at: *mut Location<'static>) {
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        self.what_ptr.store(what.as_ptr() as *mut u8, Relaxed);
        self.what_len.store(what.len(), Relaxed);
        self.at.store(at, Relaxed);
        self.seq.store(seq.wrapping_add(2), Release);
    }

    /// The current record, if any.
    pub(crate) fn get(&self) -> Option<(&'static str, &'static Location<'static>)> {
        loop {
            let before = self.seq.load(Acquire);
            if before & 1 == 0 {
                let ptr = self.what_ptr.load(Relaxed);
                let len = self.what_len.load(Relaxed);
                let at = self.at.load(Relaxed);
                fence(Acquire);
                if self.seq.load(Relaxed) == before {
                    if at.is_null() {
                        return None;
                    }
                    // SAFETY: the sequence was even and unchanged around the three loads, so
                    // they come from one `write` (module docs), which stored the parts of a
                    // `&'static str` and a `&'static Location`: both are valid for 'static.
                    return Some(unsafe {
                        (
                            std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)),
                            &*at,
                        )
                    });
                }
            }
            // A write is in progress on another thread (a handful of stores): retry.
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            std::hint::spin_loop();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear() {
        let slot = WaitSlot::new();
        assert_eq!(slot.get(), None);
        let here = Location::caller();
        slot.set("channel recv", here);
        assert_eq!(slot.get(), Some(("channel recv", here)));
        slot.clear();
        assert_eq!(slot.get(), None);
    }

    /// A reader racing a writer never sees a record mixed from two writes. The writer keeps
    /// writing until the reader has read 100,000 times and has seen both records, so the two
    /// really overlapped (bounded at 10 s).
    #[test]
    fn a_reader_never_sees_a_torn_record() {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        const READS: usize = 100_000;
        let slot = std::sync::Arc::new(WaitSlot::new());
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let a = Location::caller();
        let b = Location::caller();
        let writer = {
            let (slot, done) = (slot.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if done.load(Relaxed) {
                        break;
                    }
                    match i % 3 {
                        0 => slot.set("mutex lock", a),
                        1 => slot.set("sleep", b),
                        _ => slot.clear(),
                    }
                }
            })
        };
        // Start reading once the writer has written.
        while slot.get().is_none() {
            std::hint::spin_loop();
        }
        let mut seen = [0usize; 3];
        let start = std::time::Instant::now();
        while seen.iter().sum::<usize>() < READS || seen[0] == 0 || seen[1] == 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the reader never saw both records: {seen:?}"
            );
            match slot.get() {
                None => seen[2] += 1,
                Some(("mutex lock", at)) => {
                    assert_eq!(at, a);
                    seen[0] += 1;
                }
                Some(("sleep", at)) => {
                    assert_eq!(at, b);
                    seen[1] += 1;
                }
                Some(other) => panic!("torn record {other:?}"),
            }
        }
        done.store(true, Relaxed);
        writer.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{thread, Arc};

    #[test]
    fn reader_sees_whole_records_only() {
        loom::model(|| {
            let slot = Arc::new(WaitSlot::new());
            let a: &'static Location<'static> = Location::caller();
            let writer = {
                let slot = slot.clone();
                thread::spawn(move || {
                    slot.set("lock", a);
                    slot.clear();
                })
            };
            match slot.get() {
                None => {}
                Some((what, at)) => {
                    assert_eq!(what, "lock");
                    assert_eq!(at, a);
                }
            }
            writer.join().unwrap();
        });
    }
}
