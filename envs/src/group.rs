//! Groups of episodes and the stream that hands them out.
//!
//! Group-relative advantages (GRPO and friends) compare G samples of the *same* problem, so the
//! unit the trainer asks for is an [`EnvGroup`]: G fresh episodes of one problem, with an id the
//! rollout side carries through to the learner. A [`ProblemSource`] says *which* problems come
//! in which order (deterministic for a seed, reshuffled per epoch, random-access so a resumed run
//! continues exactly where it stopped); an [`EnvFactory`] says *how* an episode on a problem is
//! played. [`GroupSource`] joins the two.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::env::{Env, EnvFactory, Problem};
use crate::error::EnvError;

/// Where problems come from: a JSONL dataset, the arithmetic generator, or a user type.
///
/// Implementations must be deterministic: `train_problem(e, i)` returns the same problem for
/// the same seed every time it is called, in any order, from any thread.
pub trait ProblemSource: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// Training problems per epoch, or `None` for an endless generator (which never changes
    /// epoch).
    fn epoch_len(&self) -> Option<u64>;
    /// Training problem number `index` of epoch `epoch`; `None` past the end of the epoch.
    fn train_problem(&self, epoch: u64, index: u64) -> Option<Arc<Problem>>;
    /// The held-out problems for evaluation, in a fixed order. Never overlaps training.
    fn test_set(&self) -> &[Arc<Problem>];
}

/// G episodes of the same problem.
pub struct EnvGroup {
    /// Unique within a run: the sequence number of the group (training) or the test-set index
    /// (evaluation).
    pub id: u64,
    /// Training epoch the problem was drawn in (0 for endless sources and for test groups).
    pub epoch: u64,
    pub problem: Arc<Problem>,
    pub envs: Vec<Box<dyn Env>>,
}

impl std::fmt::Debug for EnvGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvGroup")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("problem", &self.problem)
            .field("envs", &self.envs.len())
            .finish()
    }
}

/// Position in the training stream; save it in checkpoints and restore it with
/// [`GroupSource::set_cursor`] to resume with exactly the same problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Next problem index within `epoch`.
    pub index: u64,
    /// Number of groups handed out so far (the next group's id).
    pub groups: u64,
}

/// Hands out training groups in order, and test groups for evaluation.
#[derive(Clone)]
pub struct GroupSource {
    problems: Arc<dyn ProblemSource>,
    factory: Arc<dyn EnvFactory>,
    group_size: usize,
    cursor: Cursor,
}

impl std::fmt::Debug for GroupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSource")
            .field("problems", &self.problems.name())
            .field("factory", &self.factory.name())
            .field("group_size", &self.group_size)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl GroupSource {
    /// `group_size` is G, the number of episodes per problem (at least 1).
    pub fn new(
        problems: Arc<dyn ProblemSource>,
        factory: Arc<dyn EnvFactory>,
        group_size: usize,
    ) -> Result<Self, EnvError> {
        if group_size == 0 {
            return Err(EnvError::Config {
                field: "group_size",
                why: "must be at least 1".into(),
            });
        }
        Ok(GroupSource {
            problems,
            factory,
            group_size,
            cursor: Cursor::default(),
        })
    }

    pub fn group_size(&self) -> usize {
        self.group_size
    }

    pub fn problems(&self) -> &Arc<dyn ProblemSource> {
        &self.problems
    }

    pub fn factory(&self) -> &Arc<dyn EnvFactory> {
        &self.factory
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    pub fn set_cursor(&mut self, cursor: Cursor) {
        self.cursor = cursor;
    }

    /// The next training problem, advancing the cursor (and the epoch at the end of one).
    /// `None` only if the source has no training problems at all.
    pub fn next_problem(&mut self) -> Option<(u64, Arc<Problem>)> {
        // Two tries: the current epoch, then (if it just ended) the start of the next one.
        for _ in 0..2 {
            if let Some(p) = self
                .problems
                .train_problem(self.cursor.epoch, self.cursor.index)
            {
                let epoch = self.cursor.epoch;
                self.cursor.index += 1;
                return Some((epoch, p));
            }
            if self.cursor.index == 0 {
                return None;
            }
            self.cursor.epoch += 1;
            self.cursor.index = 0;
        }
        None
    }

    /// The next training group of [`group_size`](Self::group_size) episodes.
    pub fn next_group(&mut self) -> Option<EnvGroup> {
        let (epoch, problem) = self.next_problem()?;
        let id = self.cursor.groups;
        self.cursor.groups += 1;
        Some(self.group_for(id, epoch, problem, self.group_size))
    }

    /// `n` training groups (fewer only if the source is empty).
    pub fn next_groups(&mut self, n: usize) -> Vec<EnvGroup> {
        (0..n).map_while(|_| self.next_group()).collect()
    }

    /// One group per test problem, `samples` episodes each (1 for greedy evaluation), in
    /// test-set order; group ids are test-set indices.
    pub fn test_groups(&self, samples: usize) -> Vec<EnvGroup> {
        self.problems
            .test_set()
            .iter()
            .enumerate()
            .map(|(i, p)| self.group_for(i as u64, 0, p.clone(), samples.max(1)))
            .collect()
    }

    /// A group of `n` episodes of any problem (e.g. one typed in by a user).
    pub fn group_for(&self, id: u64, epoch: u64, problem: Arc<Problem>, n: usize) -> EnvGroup {
        let envs = (0..n).map(|_| self.factory.make(problem.clone())).collect();
        EnvGroup {
            id,
            epoch,
            problem,
            envs,
        }
    }
}

/// A fixed list of problems as a source: shuffled per epoch with `seed`, with an explicit test
/// set. Handy for tests and for callers that build problems in code.
pub struct ListSource {
    name: String,
    train: Vec<Arc<Problem>>,
    test: Vec<Arc<Problem>>,
    shuffle: crate::shuffle::EpochShuffle,
}

impl ListSource {
    pub fn new(
        name: impl Into<String>,
        train: Vec<Problem>,
        test: Vec<Problem>,
        seed: u64,
    ) -> Self {
        let train: Vec<Arc<Problem>> = train.into_iter().map(Arc::new).collect();
        let shuffle = crate::shuffle::EpochShuffle::new(train.len(), seed);
        ListSource {
            name: name.into(),
            train,
            test: test.into_iter().map(Arc::new).collect(),
            shuffle,
        }
    }
}

impl ProblemSource for ListSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn epoch_len(&self) -> Option<u64> {
        Some(self.train.len() as u64)
    }
    fn train_problem(&self, epoch: u64, index: u64) -> Option<Arc<Problem>> {
        let i = self.shuffle.get(epoch, index)?;
        self.train.get(i).cloned()
    }
    fn test_set(&self) -> &[Arc<Problem>] {
        &self.test
    }
}
