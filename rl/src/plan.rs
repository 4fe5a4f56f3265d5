//! How an experiment's work maps onto the machine's threads, so that samplers, the learner and
//! the reward pool together never ask for more cores than there are.
//!
//! On the CPU each sampler thread gets one core: libtorch's OpenMP pools spin only briefly once
//! a process has more pool threads than cores, so a second thread inside a sampler mostly waits
//! on wake-ups (measured: a tiny model sampled 5× slower with two threads than with one, the
//! small preset no faster; docs/performance.md). With `max_staleness = 0` sampling and learning
//! take turns, so there is one sampler per core and the learner has every core too; with a lag
//! budget they overlap, so the samplers take half the cores and the learner the rest. On CUDA
//! the device does the work; each thread needs one core to feed it. The reward pool runs env
//! steps and rewards, which take microseconds for the verifier, so two threads suffice unless
//! configured otherwise.

use policies::threads::available_cores;

use crate::experiment::RolloutSection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    pub samplers: usize,
    pub sampler_threads: usize,
    pub learner_threads: usize,
    pub reward_workers: usize,
    /// Sequences per sampler.
    pub slots: usize,
    pub queue: usize,
}

impl ThreadPlan {
    /// `cores`: the budget (`--threads`, else the cores this process may use).
    pub fn new(r: &RolloutSection, group_size: usize, cuda: bool, cores: usize) -> ThreadPlan {
        let cores = cores.max(1);
        let (samplers, sampler_threads, learner_threads) = if cuda {
            (r.samplers.or(1), r.sampler_threads.or(1), 1)
        } else if r.max_staleness == 0 {
            (r.samplers.or(cores), r.sampler_threads.or(1), cores)
        } else {
            let samplers = r.samplers.or((cores / 2).max(1)).max(1);
            let each = r.sampler_threads.or(1);
            (samplers, each, cores.saturating_sub(each * samplers).max(1))
        };
        let samplers = samplers.max(1);
        let batch = group_size * r.groups_per_step;
        let share = batch.div_ceil(samplers);
        // Whole groups per sampler.
        let slots = r.slots.or(share.div_ceil(group_size).max(1) * group_size);
        ThreadPlan {
            samplers,
            sampler_threads: sampler_threads.max(1),
            learner_threads,
            reward_workers: r.reward_workers.or(2).max(1),
            slots: slots.max(1),
            queue: r.queue.or(2 * r.groups_per_step).max(1),
        }
    }

    /// Cores the budget comes from: `--threads` if given, else what this process may use.
    pub fn cores(threads_flag: Option<i32>) -> usize {
        threads_flag.map(|n| n.max(1) as usize).unwrap_or_else(available_cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Count, RolloutSection};

    #[test]
    fn synchronous_runs_give_every_core_to_each_side() {
        let r = RolloutSection::default();
        let p = ThreadPlan::new(&r, 8, false, 2);
        assert_eq!((p.samplers, p.sampler_threads, p.learner_threads), (2, 1, 2));
        // 16 groups of 8 over two samplers.
        assert_eq!(p.slots, 64);
    }

    #[test]
    fn overlapping_runs_split_the_cores() {
        let r = RolloutSection { max_staleness: 1, ..Default::default() };
        let p = ThreadPlan::new(&r, 8, false, 2);
        assert_eq!((p.samplers * p.sampler_threads, p.learner_threads), (1, 1));
        let p = ThreadPlan::new(&r, 8, false, 16);
        assert_eq!((p.samplers, p.sampler_threads, p.learner_threads), (8, 1, 8));
        let p = ThreadPlan::new(&RolloutSection { max_staleness: 2, samplers: Count::Fixed(4), ..Default::default() }, 8, false, 16);
        assert_eq!((p.samplers, p.learner_threads), (4, 12));
        assert_eq!(p.slots, 32);
    }

    #[test]
    fn a_gpu_gets_one_sampler() {
        let p = ThreadPlan::new(&RolloutSection::default(), 8, true, 16);
        assert_eq!((p.samplers, p.sampler_threads, p.learner_threads), (1, 1, 1));
    }
}
