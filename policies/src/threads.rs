//! CPU thread budgets per OS thread. libtorch's `set_num_threads` is process-wide; samplers and
//! the learner running side by side each need their own share of the cores instead.

extern "C" {
    fn nr_set_thread_budget(threads: i32);
    fn nr_thread_budget() -> i32;
}

/// Hold the calling thread's libtorch ops (OpenMP loops, our kernels, MKL products) to `threads`
/// threads. Other threads keep theirs.
pub fn set_thread_budget(threads: usize) {
    unsafe { nr_set_thread_budget(threads.clamp(1, i32::MAX as usize) as i32) }
}

/// The calling thread's current budget.
pub fn thread_budget() -> usize {
    unsafe { nr_thread_budget() }.max(1) as usize
}

/// Cores this process may run on (the affinity mask, else the machine's count).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
