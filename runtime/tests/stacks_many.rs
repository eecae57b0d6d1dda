//! 200,000 fiber stacks held at once fit on a stock kernel (`vm.max_map_count` = 65530):
//! guard pages are `MADV_GUARD_INSTALL` markers that do not split the arenas' mappings, so the
//! number of kernel mappings grows by a handful, not by two per stack.
//!
//! On a kernel without `MADV_GUARD_INSTALL` (before 6.13) the allocator falls back to
//! `mprotect` guards, which cannot hold this many stacks under the default map count; the test
//! then checks that the error names `vm.max_map_count` and stops there.

use std::time::Instant;

use filament_runtime::stack::{self, round_stack_size, Stack, MIN_STACK_SIZE};

const STACKS: usize = 200_000;

mod support;
use support::map_count;

#[test]
fn two_hundred_thousand_stacks_fit_in_a_few_mappings() {
    let size = round_stack_size(MIN_STACK_SIZE).unwrap();
    let maps_before = map_count();
    let start = Instant::now();
    let mut stacks: Vec<Stack> = Vec::with_capacity(STACKS);
    for i in 0..STACKS {
        let stack = match stack::acquire(size) {
            Ok(stack) => stack,
            Err(err) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("vm.max_map_count"),
                    "stack {i} failed without naming the map count: {msg}"
                );
                eprintln!("no MADV_GUARD_INSTALL here; stopped at stack {i}: {msg}");
                return;
            }
        };
        // Touch the top page, as a fiber's first frame does.
        // SAFETY: we own the stack; the word lies just below its top.
        unsafe { ((stack.top() - 8) as *mut usize).write_volatile(i) };
        stacks.push(stack);
    }
    let acquired = start.elapsed();
    let maps_after = map_count();
    let stats = stack::stats();

    // Every stack is distinct and still holds what was written.
    for (i, stack) in stacks.iter().enumerate() {
        // SAFETY: as above.
        let word = unsafe { ((stack.top() - 8) as *const usize).read_volatile() };
        assert_eq!(word, i);
    }
    assert!(stats.in_use >= STACKS, "{stats:?}");
    assert!(stats.reserved_bytes >= STACKS * (size + 4096), "{stats:?}");
    let grown = maps_after.saturating_sub(maps_before);
    assert!(
        grown < 300,
        "{STACKS} stacks added {grown} mappings ({maps_before} -> {maps_after}); {stats:?}"
    );

    let start = Instant::now();
    stacks.into_iter().for_each(stack::release);
    let released = start.elapsed();
    let after = stack::stats();
    assert!(after.pooled >= STACKS, "{after:?}");
    eprintln!(
        "{STACKS} stacks of {size} bytes: acquired + touched in {acquired:?}, released in \
         {released:?}; mappings {maps_before} -> {maps_after}; {stats:?}"
    );
}
