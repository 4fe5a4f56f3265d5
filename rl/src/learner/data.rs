//! From trajectory groups to what the learner computes on: pure functions, no tensors.
//!
//! Each episode becomes a [`Sequence`]: its tokens, and for every position after the first the
//! facts about the token there (is it an action, its behaviour log-prob and version), its
//! advantage, and its weight in the batch's loss (which carries the normalisation, so that
//! micro-batches accumulate to exactly the whole batch's gradient).

use rollout::TrajectoryGroup;

use super::advantages::{group_advantages, is_uniform};
use crate::experiment::Normalization;

#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub group: u64,
    pub tokens: Vec<i64>,
    /// Per target position i (token i + 1): whether it is an action token (in the loss).
    pub action: Vec<bool>,
    pub behaviour: Vec<f32>,
    pub versions: Vec<u64>,
    pub advantage: f64,
    /// Each action token's weight in the batch loss.
    pub token_weight: f64,
}

impl Sequence {
    pub fn action_tokens(&self) -> usize {
        self.action.iter().filter(|a| **a).count()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prepared {
    /// Groups whose rewards were all equal, left out.
    pub uniform_groups: usize,
    pub action_tokens: usize,
}

/// The batch's sequences, in group then episode order. Groups with no episodes (skipped by a
/// sampler) contribute nothing; uniform groups are left out when `drop_uniform`.
pub fn sequences(
    groups: &[TrajectoryGroup],
    std: bool,
    drop_uniform: bool,
    normalization: Normalization,
    normalizer: f64,
) -> (Vec<Sequence>, Prepared) {
    let mut out = Vec::new();
    let mut prepared = Prepared::default();
    for g in groups {
        let rewards = g.rewards();
        if rewards.is_empty() {
            continue;
        }
        if drop_uniform && is_uniform(&rewards) {
            prepared.uniform_groups += 1;
            continue;
        }
        for (episode, advantage) in g.episodes.iter().zip(group_advantages(&rewards, std)) {
            let n = episode.tokens.len();
            let mut action = vec![false; n.saturating_sub(1)];
            let mut behaviour = vec![0f32; n.saturating_sub(1)];
            let mut versions = vec![0u64; n.saturating_sub(1)];
            for (i, p) in (episode.prompt_len..n).enumerate() {
                // Token p is predicted at target position p - 1.
                action[p - 1] = episode.action[i];
                behaviour[p - 1] = episode.logprobs[i];
                versions[p - 1] = episode.versions[i];
            }
            out.push(Sequence { group: g.id, tokens: episode.tokens.clone(), action, behaviour, versions, advantage, token_weight: 0.0 });
        }
    }
    let total_tokens: usize = out.iter().map(Sequence::action_tokens).sum();
    let n_seq = out.len().max(1) as f64;
    for s in &mut out {
        let own = s.action_tokens().max(1) as f64;
        s.token_weight = match normalization {
            Normalization::TokenMean => 1.0 / total_tokens.max(1) as f64,
            Normalization::SequenceMean => 1.0 / (n_seq * own),
            Normalization::Constant => 1.0 / (n_seq * normalizer),
        };
    }
    prepared.action_tokens = total_tokens;
    (out, prepared)
}

/// Consecutive runs of sequences (of these lengths) whose padded size, rows × longest, stays
/// within `max_tokens`; a single longer sequence still gets a run of its own.
pub fn micro_batches(lengths: &[usize], max_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let longer = longest.max(len);
        if i > start && longer * (i + 1 - start) > max_tokens {
            out.push(start..i);
            start = i;
            longest = len;
        } else {
            longest = longer;
        }
    }
    if start < lengths.len() {
        out.push(start..lengths.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use policies::FinishReason;
    use rollout::Episode;

    fn episode(prompt: &[i64], actions: &[i64], reward: f64) -> Episode {
        let mut tokens = prompt.to_vec();
        tokens.extend(actions);
        Episode {
            tokens,
            prompt_len: prompt.len(),
            action: vec![true; actions.len()],
            logprobs: actions.iter().map(|&a| -(a as f32)).collect(),
            versions: vec![3; actions.len()],
            reward,
            metrics: Default::default(),
            finish_reason: FinishReason::Eos,
            turns: 1,
            completion: String::new(),
        }
    }

    fn group(id: u64, episodes: Vec<Episode>) -> TrajectoryGroup {
        TrajectoryGroup {
            id,
            epoch: 0,
            problem: envs::Problem { id: "p".into(), question: "q".into(), answer: "a".into() },
            prompt: String::new(),
            episodes,
            sampler: "s".into(),
            skipped: None,
        }
    }

    #[test]
    fn targets_line_up_with_the_tokens_they_predict() {
        let g = group(0, vec![episode(&[1, 5, 6], &[7, 8], 1.0), episode(&[1, 5, 6], &[9], 0.0)]);
        let (seqs, prep) = sequences(&[g], false, true, Normalization::TokenMean, 1.0);
        // Tokens 1 5 6 7 8: targets 5 6 7 8; actions are 7 and 8 (targets 2 and 3).
        assert_eq!(seqs[0].action, vec![false, false, true, true]);
        assert_eq!(seqs[0].behaviour, vec![0.0, 0.0, -7.0, -8.0]);
        assert_eq!(seqs[0].versions, vec![0, 0, 3, 3]);
        assert_eq!((seqs[0].advantage, seqs[1].advantage), (0.5, -0.5));
        assert_eq!(prep.action_tokens, 3);
        // Token mean: every action token weighs 1/3.
        assert!(seqs.iter().all(|s| (s.token_weight - 1.0 / 3.0).abs() < 1e-12));
    }

    #[test]
    fn normalisations_by_hand() {
        let g = || group(0, vec![episode(&[1], &[2, 3, 4], 1.0), episode(&[1], &[2], 0.0)]);
        // Sequence mean: 1/(2 sequences × own length).
        let (s, _) = sequences(&[g()], false, true, Normalization::SequenceMean, 1.0);
        assert!((s[0].token_weight - 1.0 / 6.0).abs() < 1e-12 && (s[1].token_weight - 0.5).abs() < 1e-12);
        // Constant 10: 1/(2 × 10) for every token.
        let (s, _) = sequences(&[g()], false, true, Normalization::Constant, 10.0);
        assert!(s.iter().all(|s| (s.token_weight - 0.05).abs() < 1e-12));
    }

    #[test]
    fn uniform_and_skipped_groups() {
        let uniform = group(1, vec![episode(&[1], &[2], 1.0), episode(&[1], &[3], 1.0)]);
        let skipped = group(2, Vec::new());
        let (s, prep) = sequences(&[uniform.clone(), skipped.clone()], false, true, Normalization::TokenMean, 1.0);
        assert!(s.is_empty());
        assert_eq!(prep.uniform_groups, 1);
        // Kept when not dropping: advantages 0.
        let (s, prep) = sequences(&[uniform, skipped], false, false, Normalization::TokenMean, 1.0);
        assert_eq!(s.len(), 2);
        assert_eq!(prep.uniform_groups, 0);
        assert!(s.iter().all(|s| s.advantage == 0.0));
    }

    #[test]
    fn micro_batches_respect_the_token_budget() {
        let lengths = [4, 4, 6, 20, 2];
        // Budget 12: [4,4] (8), [6] (6; adding 20 -> 40), [20] alone, [2].
        assert_eq!(micro_batches(&lengths, 12), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(micro_batches(&lengths, 1000), vec![0..5]);
    }
}
