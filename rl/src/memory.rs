//! Allocator settings for the process. glibc's malloc serves large blocks with mmap and gives
//! them back on free, so a training step that frees its activations and allocates them again
//! the next step page-faults every page back in (1.7% of a small-preset learner step in `perf`,
//! more on tiny models). Keeping freed memory in the heap avoids that at the cost of RSS that
//! stays at its peak.

/// Serve blocks up to 32 MiB (glibc's maximum for this knob) from the heap and never trim it.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        // Safety: mallopt only changes malloc's tuning; called first thing, before threads exist.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
