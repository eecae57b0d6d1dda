//! `/proc/self/status` fields, shared by the scheduler bench and the tour example (each
//! includes this file with `#[path]`).

/// A field of `/proc/self/status` (e.g. `VmHWM`), in KiB; `None` where there is no procfs.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
