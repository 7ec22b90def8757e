//! glibc malloc tuned for a VMM: one arena for all threads. By default glibc gives each thread
//! that allocates while another holds the main arena's lock an arena of its own (up to 8 per
//! core), each a 64 MiB reservation of which the first touched pages stay resident; the VMM's
//! threads (vCPUs, device workers, console writers, signals) allocate little and seldom, so
//! one shared arena costs no measurable contention and keeps their memory in one heap
//! (docs/vmm.md, "Memory").

/// Arenas glibc may create (`M_ARENA_MAX`).
const ARENAS: libc::c_int = 1;

/// Limits glibc to `ARENAS` malloc arenas. Call first thing in `main`, before any thread
/// starts; returns whether glibc took the setting.
pub fn limit_arenas() -> bool {
    // SAFETY: mallopt takes malloc's own lock and only changes a tuning parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_arena_limit() {
        assert!(super::limit_arenas());
    }
}
