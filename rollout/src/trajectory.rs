//! What samplers hand to the learner: groups of episodes of one problem, every token stamped
//! with the adapter version and behaviour log-prob it was sampled with.

use std::collections::BTreeMap;

use envs::Problem;
use policies::FinishReason;
use serde::{Deserialize, Serialize};

/// One episode: the whole token sequence (prompt, then every turn's actions and the env's
/// observations), and per token after the prompt what the learner needs to weigh it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub tokens: Vec<i64>,
    pub prompt_len: usize,
    /// Per token after the prompt: true when the policy sampled it (it is in the loss), false
    /// for observation tokens the env wrote.
    pub action: Vec<bool>,
    /// Per token after the prompt: the behaviour log-prob (under the tempered, truncated
    /// distribution it was drawn from); 0 for observation tokens.
    pub logprobs: Vec<f32>,
    /// Per token after the prompt: the adapter version in use when it was sampled or appended.
    pub versions: Vec<u64>,
    pub reward: f64,
    /// The env's and the reward's metrics for this episode.
    pub metrics: BTreeMap<String, f64>,
    /// How the last turn ended.
    pub finish_reason: FinishReason,
    pub turns: u32,
    /// Everything after the prompt as text (actions and observations), for transcripts.
    pub completion: String,
}

impl Episode {
    /// The oldest adapter version among the action tokens (None: the episode has no actions).
    pub fn oldest_version(&self) -> Option<u64> {
        self.action.iter().zip(&self.versions).filter(|(a, _)| **a).map(|(_, v)| *v).min()
    }

    pub fn newest_version(&self) -> Option<u64> {
        self.action.iter().zip(&self.versions).filter(|(a, _)| **a).map(|(_, v)| *v).max()
    }

    pub fn action_tokens(&self) -> usize {
        self.action.iter().filter(|a| **a).count()
    }
}

/// G episodes of one problem: the unit of group-relative advantages, and of transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryGroup {
    /// The group's sequence number in the training stream.
    pub id: u64,
    pub epoch: u64,
    pub problem: Problem,
    /// The prompt as plain text, for transcripts.
    pub prompt: String,
    pub episodes: Vec<Episode>,
    /// Which sampler made it.
    pub sampler: String,
    /// Set when the group could not be played (e.g. a prompt longer than the episode budget):
    /// it has no episodes, and the learner counts it as consumed without training on it.
    pub skipped: Option<String>,
}

impl TrajectoryGroup {
    /// The oldest adapter version of any action token in the group.
    pub fn oldest_version(&self) -> Option<u64> {
        self.episodes.iter().filter_map(Episode::oldest_version).min()
    }

    pub fn newest_version(&self) -> Option<u64> {
        self.episodes.iter().filter_map(Episode::newest_version).max()
    }

    pub fn rewards(&self) -> Vec<f64> {
        self.episodes.iter().map(|e| e.reward).collect()
    }
}
