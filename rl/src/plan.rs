//! How an experiment's work maps onto the machine's threads, so that samplers, the learner and
//! the reward pool together never ask for more cores than there are.
//!
//! On the CPU with `max_staleness = 0`, sampling and learning take turns (the samplers wait for
//! the next version, the learner for the batch), so each may use every core. With a lag budget
//! they run at the same time: the samplers share half the cores, the learner has the rest. On
//! CUDA the device does the work; each thread needs one core to feed it. The reward pool runs
//! env steps and rewards, which take microseconds for the verifier, so two threads suffice
//! unless configured otherwise.

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
        let samplers = r.samplers.or(1).max(1);
        let (sampler_threads, learner_threads) = if cuda {
            (r.sampler_threads.or(1), 1)
        } else if r.max_staleness == 0 {
            (r.sampler_threads.or((cores / samplers).max(1)), cores)
        } else {
            let each = r.sampler_threads.or((cores / 2 / samplers).max(1));
            (each, cores.saturating_sub(each * samplers).max(1))
        };
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
        assert_eq!((p.samplers, p.sampler_threads, p.learner_threads), (1, 2, 2));
        assert_eq!(p.slots, 128);
    }

    #[test]
    fn overlapping_runs_split_the_cores() {
        let r = RolloutSection { max_staleness: 1, ..Default::default() };
        assert_eq!(ThreadPlan::new(&r, 8, false, 2).sampler_threads + ThreadPlan::new(&r, 8, false, 2).learner_threads, 2);
        let p = ThreadPlan::new(&RolloutSection { max_staleness: 2, samplers: Count::Fixed(4), ..Default::default() }, 8, false, 16);
        assert_eq!((p.sampler_threads, p.learner_threads), (2, 8));
        assert_eq!(p.slots, 32);
    }
}
