//! The fiber a worker runs in its first slice, before the registry has it: what
//! `Runtime::dump` lists for it (see `sched::registry` for why registration waits for the first
//! suspension).

use std::panic::Location;
use std::ptr;

use crate::loom::{AtomicPtr, AtomicU64, Ordering::*};

/// The fiber a worker runs in its first slice, before it is registered (module docs): its id
/// and spawn site, for `Runtime::dump`. Written only by the thread serving the worker's slot.
///
/// Protocol (a sequence check): the worker stores the site, then the id (both Release); it
/// clears the id to 0 (no fiber) when the fiber suspends or finishes. A reader loads the id
/// (Acquire), the site (Acquire), and the id again: if both ids are equal and non-zero, the site
/// belongs to that id. Ids are never reused (`FiberId`), so a slot cleared and refilled between
/// the two id loads shows a different id and the pair is dropped. Fiber ids start at 1.
pub(crate) struct FirstRunSlot {
    id: AtomicU64,
    site: AtomicPtr<Location<'static>>,
}

impl FirstRunSlot {
    pub(crate) fn new() -> Self {
        FirstRunSlot {
            id: AtomicU64::new(0),
            site: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Announces that fiber `id`, spawned at `site`, runs its first slice on this worker.
    pub(crate) fn publish(&self, id: u64, site: &'static Location<'static>) {
        self.site.store(ptr::from_ref(site).cast_mut(), Release);
        self.id.store(id, Release);
    }

    /// The fiber has suspended (and is registered) or finished.
    pub(crate) fn clear(&self) {
        self.id.store(0, Release);
    }

    /// The announced fiber, if any: its id and spawn site.
    pub(crate) fn read(&self) -> Option<(u64, &'static Location<'static>)> {
        let id = self.id.load(Acquire);
        if id == 0 {
            return None;
        }
        let site = self.site.load(Acquire);
        if self.id.load(Relaxed) != id {
            return None;
        }
        // SAFETY: `site` was stored from a `&'static Location` before `id` was published (Release
        // / Acquire), and the re-check shows the slot still announced that fiber after the
        // site load, so the site is that fiber's (protocol above); it is never null then.
        Some((id, unsafe { &*site }))
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! `RUSTFLAGS="--cfg loom" cargo test -p filament-runtime --lib sched::first_run`
    use super::*;
    use crate::loom::{thread, Arc};

    #[track_caller]
    fn here() -> &'static Location<'static> {
        Location::caller()
    }

    /// A reader racing a worker that announces fiber 1, moves on and announces fiber 2 never
    /// pairs an id with the other fiber's site.
    #[test]
    fn a_reader_never_pairs_an_id_with_another_fibers_site() {
        let sites = [here(), here()];
        loom::model(move || {
            let slot = Arc::new(FirstRunSlot::new());
            let writer = {
                let slot = slot.clone();
                thread::spawn(move || {
                    slot.publish(1, sites[0]);
                    slot.clear();
                    slot.publish(2, sites[1]);
                })
            };
            if let Some((id, site)) = slot.read() {
                assert!(ptr::eq(site, sites[id as usize - 1]), "fiber {id}: {site}");
            }
            writer.join().unwrap();
            let (id, site) = slot.read().expect("fiber 2 is announced");
            assert_eq!(id, 2);
            assert!(ptr::eq(site, sites[1]));
        });
    }
}
