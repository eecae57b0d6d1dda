//! The memory syscalls behind the stack allocator: the page size, mapping an arena, installing
//! a guard page, and errors that explain `ENOMEM`.
//!
//! Guard pages are `madvise(addr, page, MADV_GUARD_INSTALL)` markers (Linux 6.13+): the page
//! table entry faults on any access, the VMA is not split, and the marker survives
//! `MADV_DONTNEED`. When the kernel answers `EINVAL` (older kernel, or a VMA the kernel will not
//! guard, e.g. an `mlock`ed one) the guard is made with `mprotect(PROT_NONE)` instead, which
//! splits the VMA (two more kernel mappings per stack), and every later guard uses `mprotect`
//! directly: the fallback is remembered process-wide in [`USE_MPROTECT`].

use std::fmt::Write as _;
use std::io;
use std::ptr;

use crate::loom::{AtomicBool, AtomicUsize, Ordering};

/// `madvise` advice that installs guard markers (Linux 6.13+, `include/uapi/asm-generic/mman-common.h`).
/// The libc crate does not define it yet.
pub(super) const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Set once `MADV_GUARD_INSTALL` has failed with `EINVAL`: every later guard uses `mprotect`.
static USE_MPROTECT: AtomicBool = AtomicBool::new(false);

/// The page size, read once (0 until then).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system page size.
#[inline]
pub(super) fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => init_page_size(),
        page => page,
    }
}

#[cold]
fn init_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as usize } else { 4096 };
    assert!(
        page.is_power_of_two(),
        "page size {page} is not a power of two"
    );
    // Racing initialisations store the same value.
    PAGE_SIZE.store(page, Ordering::Relaxed);
    page
}

/// True once guards are made with `mprotect` (the kernel refused `MADV_GUARD_INSTALL`).
pub(super) fn guards_use_mprotect() -> bool {
    USE_MPROTECT.load(Ordering::Relaxed)
}

/// Makes every later guard use `mprotect`, as after an `EINVAL` (tests of the fallback).
#[cfg(test)]
pub(super) fn force_mprotect_fallback() {
    USE_MPROTECT.store(true, Ordering::Relaxed);
}

/// Maps `len` bytes (a multiple of the page size) of private, lazily committed, read-write
/// memory for an arena and returns its base address. Arenas are never unmapped.
pub(super) fn map_arena(len: usize) -> io::Result<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
    // existing memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(explain(
            "cannot map a fiber stack arena",
            io::Error::last_os_error(),
        ));
    }
    // Stacks are small and touched sparsely: a huge page would commit 2 MiB for the first byte.
    // Failure (a kernel without THP) is harmless, so it is ignored.
    // SAFETY: [base, base + len) is the mapping just made, which nothing else uses yet.
    unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
    Ok(base as usize)
}

/// Makes `[addr, addr + len)` (page-aligned, inside an arena or a mapping of ours) fault on
/// every access.
///
/// # Safety
/// The range must be whole pages of a mapping owned by the caller that holds nothing anyone
/// will read or write again (it becomes inaccessible).
pub(super) unsafe fn install_guard(addr: usize, len: usize) -> io::Result<()> {
    if !USE_MPROTECT.load(Ordering::Relaxed) {
        loop {
            // SAFETY: the caller guarantees the range is ours and unused; a guard marker only
            // makes it inaccessible.
            let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) };
            if rc == 0 {
                // SAFETY: the range was just made a guard (or, if the "success" was a no-op,
                // is still our unused memory); the probe only reads it through a syscall.
                if GUARD_VERIFIED.load(Ordering::Relaxed) || unsafe { guard_blocks_access(addr) } {
                    GUARD_VERIFIED.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                // An emulator (qemu-user ignores unknown madvise advice and returns 0) accepted
                // the call without installing anything: fall back to mprotect for good.
                USE_MPROTECT.store(true, Ordering::Relaxed);
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The kernel retries internally; it may still report a pending signal or a
                // page-table race.
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                Some(libc::EINVAL) => {
                    USE_MPROTECT.store(true, Ordering::Relaxed);
                    break;
                }
                _ => return Err(explain("cannot install a fiber stack guard page", err)),
            }
        }
    }
    // SAFETY: as above; PROT_NONE only makes the caller's unused range inaccessible.
    let rc = unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) };
    if rc != 0 {
        return Err(explain(
            "cannot protect a fiber stack guard page",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Set once a guard installed with `MADV_GUARD_INSTALL` was seen to block access.
static GUARD_VERIFIED: AtomicBool = AtomicBool::new(false);

/// True if reading the page at `addr` fails with `EFAULT`: the kernel copies one byte from it
/// into a pipe, which reports a bad address instead of faulting the process.
///
/// # Safety
/// `addr` must be a page of a mapping owned by the caller (it is only read).
unsafe fn guard_blocks_access(addr: usize) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        // Cannot probe: trust the kernel's answer.
        return true;
    }
    // SAFETY: writes at most one byte read from `addr` (ours) into our pipe.
    let rc = unsafe { libc::write(fds[1], addr as *const libc::c_void, 1) };
    let blocked = rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT);
    // SAFETY: both descriptors are ours and used no more.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    blocked
}

/// How close to `vm.max_map_count` the process must be for the map count to be the cause.
const MAP_COUNT_SLACK: usize = 64;

/// Wraps a failed syscall's error with `what` and, for `ENOMEM`, the likely cause: when the
/// process is at or near `vm.max_map_count` that is named as the cause, otherwise both causes
/// are named with the limit's current value.
pub(super) fn explain(what: &str, err: io::Error) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return io::Error::new(err.kind(), format!("{what}: {err}"));
    }
    let mut msg = String::from(what);
    match (read_max_map_count(), count_maps()) {
        (Some(limit), Some(maps)) if maps + MAP_COUNT_SLACK >= limit => {
            let _ = write!(
                msg,
                ": vm.max_map_count ({limit}) reached ({maps} mappings in this process; \
                 raise it with `sysctl -w vm.max_map_count=N`)"
            );
            if guards_use_mprotect() {
                msg.push_str(
                    "; this kernel has no MADV_GUARD_INSTALL, so each guard page is an \
                     mprotect that costs two mappings",
                );
            }
        }
        (Some(limit), _) => {
            let _ = write!(msg, ": out of memory or vm.max_map_count ({limit}) reached");
        }
        (None, _) => msg.push_str(": out of memory"),
    }
    let _ = write!(msg, ": {err}");
    io::Error::new(io::ErrorKind::OutOfMemory, msg)
}

/// The current value of `/proc/sys/vm/max_map_count`.
fn read_max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The number of mappings of this process (lines of `/proc/self/maps`).
fn count_maps() -> Option<usize> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert!(page_size() >= 4096);
        assert_eq!(page_size(), page_size());
    }

    #[test]
    fn enomem_names_the_map_count_limit() {
        let err = explain(
            "cannot map a fiber stack arena",
            io::Error::from_raw_os_error(libc::ENOMEM),
        );
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        let msg = err.to_string();
        let limit = read_max_map_count().expect("/proc/sys/vm/max_map_count is readable");
        assert!(
            msg.starts_with(&format!(
                "cannot map a fiber stack arena: out of memory or vm.max_map_count ({limit}) \
                 reached: "
            )),
            "{msg}"
        );
    }

    #[test]
    fn other_errors_keep_their_kind() {
        let err = explain("cannot x", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().starts_with("cannot x: "), "{err}");
    }

    #[test]
    fn guard_install_uses_the_marker_on_this_kernel() {
        let page = page_size();
        let base = map_arena(4 * page).unwrap();
        // SAFETY: the second page of our fresh mapping holds nothing.
        unsafe { install_guard(base + page, page).unwrap() };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let lines = maps
            .lines()
            .filter(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let (lo, hi) = (
                    usize::from_str_radix(lo, 16).unwrap(),
                    usize::from_str_radix(hi, 16).unwrap(),
                );
                lo < base + 4 * page && hi > base
            })
            .count();
        if guards_use_mprotect() {
            // An old kernel (or a test forced the fallback): the VMA was split.
            assert!(lines >= 2, "{maps}");
        } else {
            // The marker does not split the mapping.
            assert_eq!(lines, 1, "{maps}");
        }
    }
}
