//! The environment config: plain structs that the `rl` crate deserialises from the `[env]`
//! table of an experiment's TOML file, and turns into a [`GroupSource`].
//!
//! ```toml
//! [env]
//! kind = "single_turn"          # or "calc"
//! group_size = 8
//! # template = { format = "Question: {question}\nAnswer:" }
//! # template = { chat = { system = "Reason step by step." } }
//! # stop = ["\nQuestion:"]
//!
//! [env.problems]
//! source = "arith"              # or "jsonl"
//! level = "addsub2"
//! ```

use std::path::Path;
use std::sync::Arc;

use rewards::Reward;
use serde::{Deserialize, Serialize};

use crate::arith::ArithConfig;
use crate::calc_env::{
    CalcEnvFactory, CALC_FORMAT_TEMPLATE, CALC_SYSTEM_PROMPT, DEFAULT_MAX_TURNS,
};
use crate::dataset::DatasetConfig;
use crate::env::EnvFactory;
use crate::error::EnvError;
use crate::group::{GroupSource, ProblemSource};
use crate::math_env::MathEnvFactory;
use crate::template::Template;

/// Where problems come from (TOML: `[env.problems]` with a `source` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ProblemsConfig {
    /// The built-in arithmetic curriculum.
    Arith(ArithConfig),
    /// A JSONL math dataset (GSM8K, MATH or any field map).
    Jsonl(DatasetConfig),
}

impl Default for ProblemsConfig {
    fn default() -> Self {
        ProblemsConfig::Arith(ArithConfig::default())
    }
}

/// How an episode is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvKind {
    /// One prompt, one answer.
    #[default]
    SingleTurn,
    /// The calculator tool env (`<calc>...</calc>`), multi-turn.
    Calc,
}

/// The `[env]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Problem source; default: the arithmetic curriculum at level `addsub2`.
    #[serde(default)]
    pub problems: ProblemsConfig,
    #[serde(default)]
    pub kind: EnvKind,
    /// Episodes per problem (G for group-relative advantages).
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Prompt template. Default: `{question}` for arithmetic, `Question: {question}\nAnswer:`
    /// for JSONL datasets, a prompt that explains the calculator for `kind = "calc"`.
    #[serde(default)]
    pub template: Option<Template>,
    /// Extra stop strings that end a turn (besides EOS, and `</calc>` for the calculator).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Calculator env only: turns per episode, calls plus the final answer (default 5).
    #[serde(default)]
    pub max_turns: Option<usize>,
}

fn default_group_size() -> usize {
    8
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            problems: ProblemsConfig::default(),
            kind: EnvKind::default(),
            group_size: default_group_size(),
            template: None,
            stop: Vec::new(),
            max_turns: None,
        }
    }
}

impl EnvConfig {
    /// Make relative dataset paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let ProblemsConfig::Jsonl(d) = &mut self.problems {
            d.resolve_paths(base);
        }
    }

    /// The template in effect (explicit, or the default for this source and kind).
    pub fn effective_template(&self) -> Template {
        if let Some(t) = &self.template {
            return t.clone();
        }
        match (self.kind, &self.problems) {
            (EnvKind::Calc, _) => Template::Format(CALC_FORMAT_TEMPLATE.into()),
            (EnvKind::SingleTurn, ProblemsConfig::Arith(_)) => Template::question_only(),
            (EnvKind::SingleTurn, ProblemsConfig::Jsonl(_)) => Template::question_answer(),
        }
    }

    /// The problem source alone (loads files / builds the test set).
    pub fn build_problems(&self) -> Result<Arc<dyn ProblemSource>, EnvError> {
        Ok(match &self.problems {
            ProblemsConfig::Arith(a) => Arc::new(a.build()?),
            ProblemsConfig::Jsonl(d) => Arc::new(d.build()?),
        })
    }

    /// The env factory alone. `reward` scores final answers; `None` means the math verifier.
    pub fn build_factory(
        &self,
        reward: Option<Arc<dyn Reward>>,
    ) -> Result<Arc<dyn EnvFactory>, EnvError> {
        let reward = reward.unwrap_or_else(|| Arc::new(rewards::builtin::MathReward::default()));
        let prompter = self.effective_template().compile()?;
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(EnvError::Config {
                field: "stop",
                why: "stop strings must not be empty".into(),
            });
        }
        Ok(match self.kind {
            EnvKind::SingleTurn => {
                if self.max_turns.is_some() {
                    return Err(EnvError::Config {
                        field: "max_turns",
                        why: "only applies to kind = \"calc\"".into(),
                    });
                }
                Arc::new(MathEnvFactory::new(prompter, self.stop.clone(), reward))
            }
            EnvKind::Calc => {
                let max_turns = self.max_turns.unwrap_or(DEFAULT_MAX_TURNS);
                if max_turns < 1 {
                    return Err(EnvError::Config {
                        field: "max_turns",
                        why: "must be at least 1".into(),
                    });
                }
                Arc::new(CalcEnvFactory::new(
                    prompter,
                    self.stop.clone(),
                    reward,
                    max_turns,
                ))
            }
        })
    }

    /// Problems, factory and group size together: what the trainer pulls groups from.
    pub fn build(&self, reward: Option<Arc<dyn Reward>>) -> Result<GroupSource, EnvError> {
        let factory = self.build_factory(reward)?;
        let problems = self.build_problems()?;
        GroupSource::new(problems, factory, self.group_size)
    }
}

/// A chat template that explains the calculator (for `kind = "calc"` with a chat model).
pub fn calc_chat_template() -> Template {
    Template::Chat {
        system: Some(CALC_SYSTEM_PROMPT.into()),
        user: "{question}".into(),
    }
}
