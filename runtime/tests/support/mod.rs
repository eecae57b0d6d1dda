//! Helpers shared by the runtime's integration tests.

/// Number of memory mappings of this process (lines of `/proc/self/maps`).
pub fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps is readable")
        .lines()
        .count()
}
