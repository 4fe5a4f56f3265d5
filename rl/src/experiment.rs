//! The `noregret train` experiment file: one struct per TOML section, every key documented,
//! unknown keys refused. Defaults are the seed's RL settings (rank-2 LoRA on every linear
//! layer, α = 32, constant LR, GRPO-style group advantages).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `noregret train CONFIG`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub model: ModelSection,
    #[serde(default)]
    pub adapter: AdapterSection,
    #[serde(default)]
    pub env: envs::EnvConfig,
    /// `[[reward]]` terms; none: the env's own reward (the math verifier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reward: Vec<rewards::RewardSpec>,
    #[serde(default)]
    pub rollout: RolloutSection,
    #[serde(default)]
    pub rl: RlSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub run: RunSection,
}

/// `[model]`: a Hugging Face checkpoint directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Relative paths are taken from the current directory (and written absolute into the run).
    pub path: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// `float32`, `bfloat16` or `float16`; default: the checkpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

fn default_device() -> String {
    "cpu".into()
}

/// A LoRA rank or `"full"` (every weight trained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rank {
    Lora(i64),
    Word(FullWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FullWord {
    Full,
}

impl Rank {
    /// The LoRA rank, or None for full fine-tuning.
    pub fn lora(self) -> Option<i64> {
        match self {
            Rank::Lora(r) => Some(r),
            Rank::Word(FullWord::Full) => None,
        }
    }
}

impl std::fmt::Display for Rank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lora() {
            Some(r) => write!(f, "{r}"),
            None => f.write_str("full"),
        }
    }
}

/// `[adapter]`: what is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSection {
    /// 1..=512, or `"full"` for full fine-tuning.
    #[serde(default = "default_rank")]
    pub rank: Rank,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// `all` (q, k, v, o, gate, up, down), `attn`, `mlp`, or HF module names, e.g. `"q_proj,v_proj"`.
    #[serde(default = "default_targets")]
    pub targets: String,
    /// Scale by α/√r instead of α/r.
    #[serde(default)]
    pub rslora: bool,
    /// Start from this PEFT adapter instead of a fresh one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

fn default_rank() -> Rank {
    Rank::Lora(2)
}
fn default_alpha() -> f64 {
    32.0
}
fn default_targets() -> String {
    "all".into()
}

impl Default for AdapterSection {
    fn default() -> Self {
        AdapterSection { rank: default_rank(), alpha: default_alpha(), targets: default_targets(), rslora: false, init: None }
    }
}

/// `auto` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Fixed(usize),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    Auto,
}

impl Count {
    pub fn or(self, auto: usize) -> usize {
        match self {
            Count::Fixed(n) => n,
            Count::Word(AutoWord::Auto) => auto,
        }
    }
}

const AUTO: Count = Count::Word(AutoWord::Auto);

/// What a sampler does with its KV cache when it takes a new adapter version mid-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOnSwap {
    /// Recompute it with the new version: exact behaviour log-probs for every version.
    #[default]
    Recompute,
    /// Keep it: cheaper; tokens after a swap attend to keys and values of the older version.
    Keep,
}

/// `[rollout]`: the samplers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Episodes per problem (G). Same as `[env] group_size`; set one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    /// Groups per optimiser batch.
    #[serde(default = "default_groups_per_step")]
    pub groups_per_step: usize,
    /// Sampler threads (default: one per core at max_staleness 0, when sampling and learning
    /// take turns; half the cores otherwise; 1 on CUDA).
    #[serde(default = "auto")]
    pub samplers: Count,
    /// CPU threads inside each sampler (default 1; see rl/src/plan.rs for why).
    #[serde(default = "auto")]
    pub sampler_threads: Count,
    /// Sequences each sampler generates side by side (default: its share of a batch).
    #[serde(default = "auto")]
    pub slots: Count,
    /// Tokens per micro-turn: how often finished sequences leave, new ones join and a new
    /// adapter version is taken.
    #[serde(default = "default_micro_turn")]
    pub micro_turn_tokens: usize,
    /// How many versions behind the learner a trained group may be (0: synchronous, on-policy,
    /// reproducible).
    #[serde(default)]
    pub max_staleness: u64,
    #[serde(default = "one")]
    pub temperature: f64,
    #[serde(default = "one")]
    pub top_p: f64,
    #[serde(default)]
    pub top_k: i64,
    /// Tokens per turn.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: i64,
    /// Prompt plus all turns and observations of an episode.
    #[serde(default = "default_max_episode_tokens")]
    pub max_episode_tokens: usize,
    #[serde(default)]
    pub kv_on_swap: KvOnSwap,
    /// Threads that run env steps and rewards.
    #[serde(default = "auto")]
    pub reward_workers: Count,
    /// Finished groups that may wait for the learner (default: two batches); through Redis,
    /// also the most groups released to samplers and not finished yet.
    #[serde(default = "auto")]
    pub queue: Count,
    /// Where samplers run: omitted, threads of this process; `redis://HOST:PORT/DB`, sampler
    /// processes (`noregret sampler`) on any machine, meeting the learner on that Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The Redis password. Never written into the run's config.toml: a resumed run reads it
    /// from the variable named by `redis_password_env`.
    #[serde(default, skip_serializing)]
    pub redis_password: Option<String>,
    /// The environment variable that holds the Redis password when `redis_password` is unset.
    #[serde(default = "default_password_env", skip_serializing_if = "is_default_password_env")]
    pub redis_password_env: String,
    /// Key prefix on the server (runs that share a server and database need their own).
    #[serde(default = "default_redis_prefix", skip_serializing_if = "is_default_redis_prefix")]
    pub redis_prefix: String,
    /// Seconds a sampler may hold work without renewing it before another sampler takes it over
    /// (a killed sampler's episodes start again elsewhere after this long).
    #[serde(default = "default_claim_seconds", skip_serializing_if = "is_default_claim_seconds")]
    pub redis_claim_seconds: f64,
    /// Most finished groups kept on the server; beyond it the oldest are trimmed and counted
    /// (`transport_trimmed` in metrics.jsonl).
    #[serde(default = "default_redis_max_groups", skip_serializing_if = "is_default_redis_max_groups")]
    pub redis_max_groups: usize,
    /// Seconds to keep retrying, with backoff, when the server goes away mid-run.
    #[serde(default = "default_retry_seconds", skip_serializing_if = "is_default_retry_seconds")]
    pub redis_retry_seconds: f64,
}

pub const DEFAULT_PASSWORD_ENV: &str = "NOREGRET_REDIS_PASSWORD";

fn default_password_env() -> String {
    DEFAULT_PASSWORD_ENV.into()
}
fn is_default_password_env(v: &str) -> bool {
    v == DEFAULT_PASSWORD_ENV
}
fn default_redis_prefix() -> String {
    "noregret".into()
}
fn is_default_redis_prefix(v: &str) -> bool {
    v == "noregret"
}
fn default_claim_seconds() -> f64 {
    30.0
}
fn is_default_claim_seconds(v: &f64) -> bool {
    *v == default_claim_seconds()
}
fn default_redis_max_groups() -> usize {
    10_000
}
fn is_default_redis_max_groups(v: &usize) -> bool {
    *v == default_redis_max_groups()
}
fn default_retry_seconds() -> f64 {
    30.0
}
fn is_default_retry_seconds(v: &f64) -> bool {
    *v == default_retry_seconds()
}

fn auto() -> Count {
    AUTO
}
fn one() -> f64 {
    1.0
}
fn default_groups_per_step() -> usize {
    16
}
fn default_micro_turn() -> usize {
    8
}
fn default_max_new_tokens() -> i64 {
    64
}
fn default_max_episode_tokens() -> usize {
    4096
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            group_size: None,
            groups_per_step: default_groups_per_step(),
            samplers: AUTO,
            sampler_threads: AUTO,
            slots: AUTO,
            micro_turn_tokens: default_micro_turn(),
            max_staleness: 0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: default_max_new_tokens(),
            max_episode_tokens: default_max_episode_tokens(),
            kv_on_swap: KvOnSwap::Recompute,
            reward_workers: AUTO,
            queue: AUTO,
            transport: None,
            redis_password: None,
            redis_password_env: default_password_env(),
            redis_prefix: default_redis_prefix(),
            redis_claim_seconds: default_claim_seconds(),
            redis_max_groups: default_redis_max_groups(),
            redis_retry_seconds: default_retry_seconds(),
        }
    }
}

/// The policy-gradient loss (named as tinker names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// REINFORCE with the importance ratio to the sampling policy.
    #[default]
    ImportanceSampling,
    /// PPO's clipped ratio, with separate low and high ε (DAPO's clip-higher).
    Ppo,
    /// A clipped, stop-gradient importance weight times the log-prob (CISPO).
    Cispo,
}

/// How per-token losses are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Every action token of the batch weighs the same.
    #[default]
    TokenMean,
    /// Each sequence's mean, then the mean over sequences (GRPO).
    SequenceMean,
    /// Each sequence's sum over a constant, then the mean over sequences (Dr. GRPO).
    Constant,
}

/// `[rl]`: the learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlSection {
    #[serde(default)]
    pub loss: LossKind,
    /// Optimiser steps (= published versions) to train for.
    #[serde(default = "default_steps")]
    pub steps: u64,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Linear warmup from 0 over this many steps, then constant.
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    #[serde(default)]
    pub max_grad_norm: f64,
    /// Optimiser steps per batch of groups.
    #[serde(default = "one_u64")]
    pub updates_per_batch: u64,
    /// Padded tokens per forward/backward pass; a batch larger than this accumulates gradients.
    #[serde(default = "default_micro_batch_tokens")]
    pub micro_batch_tokens: usize,
    /// Divide advantages by the group's reward standard deviation (GRPO); off: Dr. GRPO.
    #[serde(default)]
    pub advantage_std: bool,
    #[serde(default)]
    pub normalization: Normalization,
    /// The constant of `normalization = "constant"` (default: max_new_tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalizer: Option<f64>,
    /// Drop groups whose rewards are all equal (no signal); they are counted.
    #[serde(default = "yes")]
    pub drop_uniform_groups: bool,
    /// Cap of the truncated importance weight between the sampler's policy and the learner's.
    #[serde(default = "default_is_cap")]
    pub is_cap: f64,
    /// Clip range of ppo and cispo: ratio in [1 - clip_low, 1 + clip_high].
    #[serde(default = "default_clip_low")]
    pub clip_low: f64,
    #[serde(default = "default_clip_high")]
    pub clip_high: f64,
    /// Weight of a KL penalty to the base model (the same model with the adapter off); 0: none.
    #[serde(default)]
    pub kl_coef: f64,
}

fn default_steps() -> u64 {
    200
}
fn default_lr() -> f64 {
    1e-4
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_eps() -> f64 {
    1e-8
}
fn one_u64() -> u64 {
    1
}
fn default_micro_batch_tokens() -> usize {
    8192
}
fn yes() -> bool {
    true
}
fn default_is_cap() -> f64 {
    2.0
}
fn default_clip_low() -> f64 {
    0.2
}
fn default_clip_high() -> f64 {
    0.28
}

impl Default for RlSection {
    fn default() -> Self {
        toml::from_str("").expect("every [rl] key has a default")
    }
}

/// `[eval]`: held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate every this many steps (always at the start and the end; 0: only then).
    #[serde(default = "default_eval_every")]
    pub every: u64,
    /// Held-out problems to use (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<usize>,
    /// Samples per problem for pass@k at the rollout temperature (0: greedy only).
    #[serde(default)]
    pub samples: usize,
}

fn default_eval_every() -> u64 {
    50
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { every: default_eval_every(), problems: None, samples: 0 }
    }
}

/// `[run]`: where and how the run is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// The run directory (default: `runs/` and the config file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Seeds the adapter's initialisation, the data order's shuffles and every sampling stream.
    #[serde(default)]
    pub seed: u64,
    /// Checkpoint every this many steps (and always at the end); 0: only at the end.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Keep this many checkpoints (0: all).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Write sampled transcripts every this many steps (0: never).
    #[serde(default = "default_samples_every")]
    pub samples_every: u64,
}

fn default_checkpoint_every() -> u64 {
    50
}
fn default_keep() -> usize {
    3
}
fn default_samples_every() -> u64 {
    10
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { out: None, seed: 0, checkpoint_every: default_checkpoint_every(), keep_checkpoints: default_keep(), samples_every: default_samples_every() }
    }
}

impl Experiment {
    /// Read and check a config file with `--set` overrides applied.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Experiment> {
        let mut exp: Experiment = crate::config::load(path, overrides)?;
        exp.resolve(path)?;
        Ok(exp)
    }

    /// Fill in what depends on other keys, make paths absolute, and check ranges.
    pub fn resolve(&mut self, config_path: &Path) -> Result<()> {
        if self.run.out.is_none() {
            let stem = config_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            self.run.out = Some(PathBuf::from("runs").join(stem));
        }
        self.model.path = absolute(&self.model.path);
        if let Some(init) = &self.adapter.init {
            self.adapter.init = Some(absolute(init));
        }
        if let Some(out) = &self.run.out {
            self.run.out = Some(absolute(out));
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        self.env.resolve_paths(&cwd);
        // One group size, in [rollout] (or [env], the older place).
        match self.rollout.group_size {
            Some(g) if g != self.env.group_size && self.env.group_size != envs::EnvConfig::default().group_size => {
                bail!("group_size is {g} in [rollout] but {} in [env]: set it in one place", self.env.group_size)
            }
            Some(g) => self.env.group_size = g,
            None => self.rollout.group_size = Some(self.env.group_size),
        }
        self.check()
    }

    fn check(&self) -> Result<()> {
        let r = &self.rollout;
        let rl = &self.rl;
        if let Some(rank) = self.adapter.rank.lora() {
            if !(1..=512).contains(&rank) {
                bail!("[adapter] rank must be 1..=512 or \"full\", got {rank}");
            }
        }
        policies::lora::parse_targets(&self.adapter.targets).map_err(|e| anyhow::anyhow!("[adapter] targets: {e}"))?;
        let checks: [(bool, &str); 14] = [
            (self.env.group_size >= 1, "[rollout] group_size must be at least 1"),
            (r.groups_per_step >= 1, "[rollout] groups_per_step must be at least 1"),
            (r.micro_turn_tokens >= 1, "[rollout] micro_turn_tokens must be at least 1"),
            (r.max_new_tokens >= 1, "[rollout] max_new_tokens must be at least 1"),
            (r.max_episode_tokens >= 2, "[rollout] max_episode_tokens must be at least 2"),
            (r.temperature.is_finite() && r.temperature >= 0.0, "[rollout] temperature must be >= 0"),
            (r.top_p > 0.0 && r.top_p <= 1.0, "[rollout] top_p must be in (0, 1]"),
            (r.top_k >= 0, "[rollout] top_k must be >= 0"),
            (rl.lr.is_finite() && rl.lr > 0.0, "[rl] lr must be positive"),
            (rl.updates_per_batch >= 1, "[rl] updates_per_batch must be at least 1"),
            (rl.micro_batch_tokens >= 1, "[rl] micro_batch_tokens must be at least 1"),
            (rl.is_cap >= 1.0, "[rl] is_cap must be at least 1"),
            (rl.clip_low > 0.0 && rl.clip_low < 1.0 && rl.clip_high > 0.0, "[rl] clip_low must be in (0, 1) and clip_high positive"),
            ((0.0..1.0).contains(&rl.beta1) && (0.0..1.0).contains(&rl.beta2), "[rl] beta1 and beta2 must be in [0, 1)"),
        ];
        for (ok, message) in checks {
            if !ok {
                bail!("{message}");
            }
        }
        if let Some(t) = &r.transport {
            crate::remote::check_url(t).map_err(|e| anyhow::anyhow!("[rollout] transport: {e}"))?;
            if self.adapter.rank.lora().is_none() {
                bail!("[rollout] transport: remote samplers take adapters only; full fine-tuning runs its samplers in-process");
            }
            // Trimming must only ever reach groups the learner has read.
            let queue = r.queue.or(2 * r.groups_per_step).max(r.groups_per_step);
            if r.redis_max_groups < 2 * queue {
                bail!("[rollout] redis_max_groups ({}) must be at least twice the queue ({queue}), or groups not yet read could be trimmed", r.redis_max_groups);
            }
        }
        let redis_checks: [(bool, &str); 4] = [
            (r.redis_claim_seconds.is_finite() && r.redis_claim_seconds > 0.0, "[rollout] redis_claim_seconds must be positive"),
            (r.redis_retry_seconds.is_finite() && r.redis_retry_seconds >= 0.0, "[rollout] redis_retry_seconds must be >= 0"),
            (r.redis_max_groups >= 2, "[rollout] redis_max_groups must be at least 2"),
            (!r.redis_prefix.is_empty(), "[rollout] redis_prefix must not be empty"),
        ];
        for (ok, message) in redis_checks {
            if !ok {
                bail!("{message}");
            }
        }
        if !rl.steps.is_multiple_of(rl.updates_per_batch) {
            bail!("[rl] steps ({}) must be a multiple of updates_per_batch ({})", rl.steps, rl.updates_per_batch);
        }
        Ok(())
    }

    pub fn out_dir(&self) -> &Path {
        self.run.out.as_deref().expect("resolved")
    }

    /// How samplers draw tokens (and so how the learner scores them).
    pub fn sampling(&self) -> policies::SamplingParams {
        let r = &self.rollout;
        policies::SamplingParams {
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            max_new_tokens: r.max_new_tokens,
            stop: Vec::new(),
            ignore_eos: false,
            seed: self.run.seed,
        }
    }

    pub fn group_size(&self) -> usize {
        self.env.group_size
    }
}

/// `path` from the current directory.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}
