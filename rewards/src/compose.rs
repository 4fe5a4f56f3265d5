//! Reward configuration and weighted sums.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::builtin::{FormatReward, LengthPenalty, MathReward};
use crate::extract::ExtractMode;
use crate::plugin::PluginReward;
use crate::verify::VerifierConfig;
use crate::{Episode, Reward, Score};

fn one() -> f64 {
    1.0
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One term of the reward, as written in a config (`[[reward]]` tables, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardSpec {
    /// 1/0 from the verifier. `modes`: extraction modes in order (default: all).
    Math {
        #[serde(default = "one")]
        weight: f64,
        #[serde(default)]
        modes: Option<Vec<ExtractMode>>,
    },
    /// 1 when the answer is in the expected form. `modes` default: `["boxed"]`.
    Format {
        #[serde(default = "one")]
        weight: f64,
        #[serde(default)]
        modes: Option<Vec<ExtractMode>>,
    },
    /// 0 up to `target_chars`, linearly down to -1 at `max_chars`.
    LengthPenalty {
        #[serde(default = "one")]
        weight: f64,
        target_chars: usize,
        max_chars: usize,
    },
    /// An external executable speaking JSON lines (see the plugin module).
    Plugin {
        #[serde(default = "one")]
        weight: f64,
        command: Vec<String>,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        #[serde(default)]
        name: Option<String>,
    },
}

impl RewardSpec {
    pub fn weight(&self) -> f64 {
        match self {
            RewardSpec::Math { weight, .. }
            | RewardSpec::Format { weight, .. }
            | RewardSpec::LengthPenalty { weight, .. }
            | RewardSpec::Plugin { weight, .. } => *weight,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("no reward configured")]
    Empty,
    #[error("reward {index} ({kind}): {message}")]
    Invalid { index: usize, kind: &'static str, message: String },
}

/// `Σ weight · reward`. Metrics: each term's reward under its name, and each term's metrics
/// as `name/metric`.
pub struct WeightedSum {
    parts: Vec<(String, f64, Box<dyn Reward>)>,
}

impl WeightedSum {
    pub fn new(parts: Vec<(f64, Box<dyn Reward>)>) -> WeightedSum {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let parts = parts
            .into_iter()
            .map(|(w, r)| {
                let count = seen.entry(r.name().to_string()).or_insert(0);
                *count += 1;
                // Two plugins may share a name; keep their metrics apart.
                let label = if *count == 1 { r.name().to_string() } else { format!("{}_{}", r.name(), count) };
                (label, w, r)
            })
            .collect();
        WeightedSum { parts }
    }

    fn combine(&self, scores: Vec<Score>) -> Score {
        let mut total = Score::default();
        for ((label, weight, _), score) in self.parts.iter().zip(scores) {
            total.reward += weight * score.reward;
            total.metrics.insert(label.clone(), score.reward);
            for (k, v) in score.metrics {
                total.metrics.insert(format!("{label}/{k}"), v);
            }
        }
        total
    }
}

impl Reward for WeightedSum {
    fn name(&self) -> &str {
        "reward"
    }

    fn score(&self, episode: &Episode<'_>) -> Score {
        self.combine(self.parts.iter().map(|(_, _, r)| r.score(episode)).collect())
    }

    fn score_batch(&self, episodes: &[Episode<'_>]) -> Vec<Score> {
        let per_part: Vec<Vec<Score>> = self.parts.iter().map(|(_, _, r)| r.score_batch(episodes)).collect();
        (0..episodes.len())
            .map(|i| self.combine(per_part.iter().map(|scores| scores.get(i).cloned().unwrap_or_default()).collect()))
            .collect()
    }
}

fn verifier_config(modes: &Option<Vec<ExtractMode>>) -> VerifierConfig {
    match modes {
        Some(m) => VerifierConfig { modes: m.clone() },
        None => VerifierConfig::default(),
    }
}

/// Builds the weighted sum of the configured rewards. Plugins are started here.
pub fn build(specs: &[RewardSpec]) -> Result<Box<dyn Reward>, BuildError> {
    if specs.is_empty() {
        return Err(BuildError::Empty);
    }
    let mut parts: Vec<(f64, Box<dyn Reward>)> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let invalid = |kind: &'static str, message: String| BuildError::Invalid { index, kind, message };
        if !spec.weight().is_finite() {
            return Err(invalid("weight", format!("weight {} is not finite", spec.weight())));
        }
        let reward: Box<dyn Reward> = match spec {
            RewardSpec::Math { modes, .. } => {
                if modes.as_ref().is_some_and(Vec::is_empty) {
                    return Err(invalid("math", "modes is empty".into()));
                }
                Box::new(MathReward::new(verifier_config(modes)))
            }
            RewardSpec::Format { modes, .. } => {
                let modes = modes.clone().unwrap_or_else(|| vec![ExtractMode::Boxed]);
                if modes.is_empty() {
                    return Err(invalid("format", "modes is empty".into()));
                }
                Box::new(FormatReward::new(modes))
            }
            RewardSpec::LengthPenalty { target_chars, max_chars, .. } => {
                if max_chars <= target_chars {
                    return Err(invalid("length_penalty", "max_chars must be above target_chars".into()));
                }
                Box::new(LengthPenalty { target_chars: *target_chars, max_chars: *max_chars })
            }
            RewardSpec::Plugin { command, timeout_ms, name, .. } => {
                if *timeout_ms == 0 {
                    return Err(invalid("plugin", "timeout_ms must be positive".into()));
                }
                let name = name.clone().unwrap_or_else(|| "plugin".to_string());
                let plugin = PluginReward::start(name, command.clone(), Duration::from_millis(*timeout_ms))
                    .map_err(|e| invalid("plugin", e))?;
                Box::new(plugin)
            }
        };
        parts.push((spec.weight(), reward));
    }
    Ok(Box::new(WeightedSum::new(parts)))
}
