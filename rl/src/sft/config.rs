//! The `noregret sft` experiment file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::experiment::{absolute, AdapterSection, Rank, RunSection};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftExperiment {
    pub model: SftModel,
    /// What is trained (default: every weight, as a model trained from scratch needs).
    #[serde(default = "full_adapter")]
    pub adapter: AdapterSection,
    pub data: SftData,
    #[serde(default)]
    pub sft: SftSection,
    #[serde(default)]
    pub eval: SftEval,
    #[serde(default)]
    pub run: RunSection,
}

fn full_adapter() -> AdapterSection {
    AdapterSection { rank: Rank::Word(crate::experiment::FullWord::Full), ..Default::default() }
}

/// `[model]`: a checkpoint to start from, or `[model.init]` to start from random weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
    #[serde(default = "cpu")]
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

fn cpu() -> String {
    "cpu".into()
}

/// A Llama-architecture decoder with the character tokenizer, from random weights: a preset
/// (`arith`, `tiny`, `small`) with any of its sizes overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    #[serde(default = "arith")]
    pub preset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    /// Standard deviation of the initial weights.
    #[serde(default = "init_std")]
    pub init_std: f64,
}

fn arith() -> String {
    "arith".into()
}
fn init_std() -> f64 {
    0.02
}

impl InitSpec {
    /// The size fields for `policies::init::write_random_checkpoint`.
    pub fn shape(&self) -> Result<Value> {
        let mut shape = policies::init::preset(&self.preset)?;
        let overrides = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("intermediate_size", self.intermediate_size),
            ("head_dim", self.head_dim),
        ];
        for (k, v) in overrides {
            if let Some(v) = v {
                if v < 1 {
                    bail!("[model.init] {k} must be positive");
                }
                shape[k] = json!(v);
            }
        }
        if self.hidden_size.is_some() && self.head_dim.is_none() {
            shape["head_dim"] = json!(shape["hidden_size"].as_i64().unwrap_or(1) / shape["num_attention_heads"].as_i64().unwrap_or(1).max(1));
        }
        let heads = shape["num_attention_heads"].as_i64().unwrap_or(1);
        if heads % shape["num_key_value_heads"].as_i64().unwrap_or(1).max(1) != 0 {
            bail!("[model.init] num_attention_heads must be a multiple of num_key_value_heads");
        }
        Ok(shape)
    }
}

/// `[data]`: either problems (the arithmetic curriculum or a math dataset, `[data.problems]`
/// as in `[env.problems]`), whose gold answers are the completions, or a JSONL file whose lines
/// are `{"prompt": ..., "completion": ...}` or `{"messages": [...]}` (the last, an assistant
/// message, is the completion; the rest is rendered with the model's chat template).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<envs::ProblemsConfig>,
    /// How problems become prompts (as `[env] template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<envs::Template>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// Without a test file: the share of `train` held out.
    #[serde(default = "test_fraction")]
    pub test_fraction: f64,
    /// Seeds the held-out split and the per-epoch shuffle of JSONL data.
    #[serde(default)]
    pub seed: u64,
}

fn test_fraction() -> f64 {
    0.05
}

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Cosine from lr down to min_lr at the last step.
    Cosine,
}

/// `[sft]`: the optimiser and the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftSection {
    #[serde(default = "steps")]
    pub steps: u64,
    /// Examples per step.
    #[serde(default = "batch")]
    pub batch_size: usize,
    #[serde(default = "lr")]
    pub lr: f64,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0: off).
    #[serde(default = "one")]
    pub max_grad_norm: f64,
    #[serde(default = "micro")]
    pub micro_batch_tokens: usize,
}

fn steps() -> u64 {
    1000
}
fn batch() -> usize {
    64
}
fn lr() -> f64 {
    1e-4
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.98
}
fn eps() -> f64 {
    1e-8
}
fn one() -> f64 {
    1.0
}
fn micro() -> usize {
    8192
}

impl Default for SftSection {
    fn default() -> Self {
        toml::from_str("").expect("every [sft] key has a default")
    }
}

/// `[eval]`: held-out log loss (and, for problems, greedy accuracy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftEval {
    /// Every this many steps (and at the start and the end).
    #[serde(default = "every")]
    pub every: u64,
    /// Held-out examples for the log loss.
    #[serde(default = "loss_examples")]
    pub loss_examples: usize,
    /// Held-out problems for the accuracy (problems data only; 0: none).
    #[serde(default = "accuracy_problems")]
    pub accuracy_problems: usize,
    #[serde(default = "max_new_tokens")]
    pub max_new_tokens: i64,
}

fn every() -> u64 {
    100
}
fn loss_examples() -> usize {
    500
}
fn accuracy_problems() -> usize {
    500
}
fn max_new_tokens() -> i64 {
    64
}

impl Default for SftEval {
    fn default() -> Self {
        toml::from_str("").expect("every [eval] key has a default")
    }
}

impl SftExperiment {
    pub fn load(path: &Path, overrides: &[String]) -> Result<SftExperiment> {
        let mut exp: SftExperiment = crate::config::load(path, overrides)?;
        if exp.run.out.is_none() {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sft".into());
            exp.run.out = Some(PathBuf::from("runs").join(stem));
        }
        exp.run.out = exp.run.out.as_deref().map(absolute);
        exp.model.path = exp.model.path.as_deref().map(absolute);
        exp.data.train = exp.data.train.as_deref().map(absolute);
        exp.data.test = exp.data.test.as_deref().map(absolute);
        if let Some(envs::ProblemsConfig::Jsonl(d)) = &mut exp.data.problems {
            d.resolve_paths(&std::env::current_dir().unwrap_or_default());
        }
        exp.check()?;
        Ok(exp)
    }

    fn check(&self) -> Result<()> {
        match (&self.model.path, &self.model.init) {
            (Some(_), Some(_)) => bail!("[model]: give path or init, not both"),
            (None, None) => bail!("[model]: give path (a checkpoint) or [model.init] (random weights)"),
            (None, Some(_)) if self.adapter.rank.lora().is_some() => {
                bail!("[adapter] rank = \"full\" is needed to train a model from random weights")
            }
            _ => {}
        }
        match (&self.data.problems, &self.data.train) {
            (Some(_), Some(_)) => bail!("[data]: give problems or train (a JSONL file), not both"),
            (None, None) => bail!("[data]: give [data.problems] or train = \"file.jsonl\""),
            _ => {}
        }
        if !(0.0..1.0).contains(&self.data.test_fraction) {
            bail!("[data] test_fraction must be in [0, 1)");
        }
        let s = &self.sft;
        if s.batch_size == 0 || s.steps == 0 || s.lr.is_nan() || s.lr <= 0.0 || s.micro_batch_tokens == 0 {
            bail!("[sft]: steps, batch_size, lr and micro_batch_tokens must be positive");
        }
        Ok(())
    }

    pub fn out_dir(&self) -> &Path {
        self.run.out.as_deref().expect("resolved")
    }
}
