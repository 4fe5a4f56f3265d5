//! Built-in rewards: `math` (the verifier), `format` (an answer in the expected form) and
//! `length_penalty`.

use std::collections::BTreeMap;

use crate::extract::{extract, is_hedged, ExtractMode, Extraction};
use crate::verify::{Verifier, VerifierConfig};
use crate::{Episode, Reward, Score};

/// 1 when the verifier finds the completion's answer equivalent to the reference, else 0.
/// Metrics: `correct`, `answer_found`.
#[derive(Debug, Clone, Default)]
pub struct MathReward {
    verifier: Verifier,
}

impl MathReward {
    pub fn new(config: VerifierConfig) -> MathReward {
        MathReward { verifier: Verifier::new(config) }
    }
}

impl Reward for MathReward {
    fn name(&self) -> &str {
        "math"
    }

    fn score(&self, episode: &Episode<'_>) -> Score {
        let verdict = self.verifier.verify(episode.reference, episode.completion);
        let correct = if verdict.correct { 1.0 } else { 0.0 };
        let found = if verdict.extracted.is_some() { 1.0 } else { 0.0 };
        Score {
            reward: correct,
            metrics: BTreeMap::from([("correct".to_string(), correct), ("answer_found".to_string(), found)]),
        }
    }
}

/// 1 when the completion states a single (not hedged) answer in one of the expected forms
/// (by default `\boxed{…}`), else 0. Metric: `format_ok`.
#[derive(Debug, Clone)]
pub struct FormatReward {
    modes: Vec<ExtractMode>,
}

impl Default for FormatReward {
    fn default() -> Self {
        FormatReward { modes: vec![ExtractMode::Boxed] }
    }
}

impl FormatReward {
    pub fn new(modes: Vec<ExtractMode>) -> FormatReward {
        FormatReward { modes }
    }
}

impl Reward for FormatReward {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, episode: &Episode<'_>) -> Score {
        let ok = match extract(episode.completion, &self.modes) {
            Extraction::Found { answer, .. } => !is_hedged(&answer),
            Extraction::NotAnswer(_) => false,
        };
        let reward = if ok { 1.0 } else { 0.0 };
        Score { reward, metrics: BTreeMap::from([("format_ok".to_string(), reward)]) }
    }
}

/// 0 up to `target_chars` characters of completion, then falling linearly to -1 at
/// `max_chars` and staying there. Metric: `chars`.
#[derive(Debug, Clone)]
pub struct LengthPenalty {
    pub target_chars: usize,
    pub max_chars: usize,
}

impl LengthPenalty {
    pub fn penalty(&self, chars: usize) -> f64 {
        if chars <= self.target_chars {
            return 0.0;
        }
        let span = self.max_chars.saturating_sub(self.target_chars).max(1) as f64;
        -((chars - self.target_chars) as f64 / span).min(1.0)
    }
}

impl Reward for LengthPenalty {
    fn name(&self) -> &str {
        "length_penalty"
    }

    fn score(&self, episode: &Episode<'_>) -> Score {
        let chars = episode.completion.chars().count();
        Score { reward: self.penalty(chars), metrics: BTreeMap::from([("chars".to_string(), chars as f64)]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep<'a>(completion: &'a str, reference: &'a str) -> Episode<'a> {
        Episode { prompt: "q", completion, reference }
    }

    #[test]
    fn math_and_format() {
        let m = MathReward::default();
        assert_eq!(m.score(&ep("so \\boxed{1/2}", "0.5")).reward, 1.0);
        assert_eq!(m.score(&ep("so \\boxed{1/3}", "0.5")).reward, 0.0);
        let f = FormatReward::default();
        assert_eq!(f.score(&ep("so \\boxed{7}", "1")).reward, 1.0);
        assert_eq!(f.score(&ep("so 7", "7")).reward, 0.0);
        assert_eq!(f.score(&ep("\\boxed{3} or \\boxed{4}", "3")).reward, 0.0);
    }

    #[test]
    fn length() {
        let l = LengthPenalty { target_chars: 10, max_chars: 20 };
        assert_eq!(l.penalty(5), 0.0);
        assert_eq!(l.penalty(15), -0.5);
        assert_eq!(l.penalty(1000), -1.0);
    }
}
