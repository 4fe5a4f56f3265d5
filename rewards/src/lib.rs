//! Rewards: the math-answer verifier, the [`Reward`] trait, built-in rewards and external plugins.
//!
//! The interface below is fixed (other crates depend on it). Behind it, one module per job:
//! [`extract`] finds the final answer, [`lex`] and [`parse`] read it into an [`expr::Expr`],
//! [`answer`] gives it a shape (set, tuple, interval…), [`equiv`] compares, [`verify`] ties
//! them together; [`calc`] is a bounded calculator on the same parser; [`builtin`],
//! [`plugin`] and [`compose`] are rewards; [`cli`] is the body of `noregret verify`.
//! The rules are documented in the crate's README.

use std::collections::BTreeMap;

pub mod answer;
pub mod builtin;
pub mod calc;
pub mod cli;
pub mod complex;
pub mod compose;
pub mod equiv;
pub mod expr;
pub mod extract;
pub mod fallback;
pub mod lex;
pub mod number;
pub mod parse;
pub mod plugin;
pub mod unicode;
pub mod units;
pub mod verify;
pub mod words;

pub use compose::{build, BuildError, RewardSpec, WeightedSum};
pub use extract::{ExtractMode, Extraction};
pub use verify::{verify, Verdict, Verifier, VerifierConfig};

/// One finished episode, as the reward side sees it.
#[derive(Debug, Clone, Copy)]
pub struct Episode<'a> {
    /// The prompt text the model saw (rendered, without special tokens).
    pub prompt: &'a str,
    /// Everything the model wrote (all turns' actions, observations excluded where the env
    /// chooses so).
    pub completion: &'a str,
    /// The reference (gold) answer, as text.
    pub reference: &'a str,
}

/// What a reward says about an episode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub reward: f64,
    /// Named side metrics (averaged per step by the trainer), e.g. `format_ok`, `plugin_error`.
    pub metrics: BTreeMap<String, f64>,
}

/// A reward function. Implementations must be cheap to call from many threads.
pub trait Reward: Send + Sync {
    /// Short name used as a metric prefix.
    fn name(&self) -> &str;
    /// Score one episode. Never panics; failures score 0 and say so in `metrics`.
    fn score(&self, episode: &Episode<'_>) -> Score;
    /// Score many episodes; plugins override this to pipeline requests.
    fn score_batch(&self, episodes: &[Episode<'_>]) -> Vec<Score> {
        episodes.iter().map(|e| self.score(e)).collect()
    }
}
