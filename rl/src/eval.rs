//! Held-out evaluation: pass@1 with greedy decoding and, optionally, pass@k from k samples per
//! problem, played through the same rollout engine as training (so multi-turn envs work the
//! same way).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use envs::{EnvGroup, GroupSource};
use policies::{Model, SamplingParams, TextTokenizer};
use rollout::{Control, Engine, EngineConfig, InProcess, SamplerConfig, Shared, Snapshot, Transport, TrajectoryGroup, VersionSlot, WorkSource};
use serde::Serialize;

/// A fixed list of groups, handed out in order whatever the version.
struct ListWork(Mutex<VecDeque<EnvGroup>>);

impl WorkSource for ListWork {
    fn take(&self, _sampler: usize, _version: u64) -> Option<EnvGroup> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// Use the first N held-out problems (None: all).
    pub problems: Option<usize>,
    /// Samples per problem for pass@k (0: greedy only).
    pub samples: usize,
    /// Temperature, top-k/p and max_new_tokens of the sampled pass; greedy uses the same budget.
    pub sampling: SamplingParams,
    pub max_episode_tokens: usize,
    pub threads: usize,
    pub slots: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemResult {
    pub prompt: String,
    pub gold: String,
    pub response: String,
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub problems: usize,
    pub greedy_accuracy: f64,
    /// k and pass@k (a problem counts if any of its k samples is right), when sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<f64>,
    /// The mean accuracy of all samples (an unbiased pass@1 at the sampling temperature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_accuracy: Option<f64>,
    pub seconds: f64,
    #[serde(skip)]
    pub rows: Vec<ProblemResult>,
}

/// Whether an episode counts as right: the verifier's `correct` metric (also under a reward
/// term's prefix, `math/correct`), else a reward of at least 1.
pub fn is_correct(e: &rollout::Episode) -> bool {
    let metric = e.metrics.iter().find(|(k, _)| *k == "correct" || k.ends_with("/correct")).map(|(_, v)| *v);
    match metric {
        Some(v) => v >= 0.5,
        None => e.reward >= 1.0 - 1e-9,
    }
}

/// Evaluate `snapshot` (the base model, an adapter, or a fully fine-tuned model) on the
/// held-out problems of `source`.
pub fn evaluate(model: Arc<Model>, tokenizer: Arc<TextTokenizer>, snapshot: Snapshot, source: &GroupSource, spec: &EvalSpec) -> Result<EvalResult> {
    let started = std::time::Instant::now();
    let versions = Arc::new(VersionSlot::new(snapshot));
    let greedy = SamplingParams { temperature: 0.0, ..spec.sampling.clone() };
    let greedy_groups = play(model.clone(), tokenizer.clone(), versions.clone(), source, 1, greedy, spec)?;
    let mut rows = Vec::new();
    let mut right = 0usize;
    for g in &greedy_groups {
        let e = &g.episodes[0];
        let correct = is_correct(e);
        right += correct as usize;
        rows.push(ProblemResult { prompt: g.prompt.clone(), gold: g.problem.answer.clone(), response: e.completion.clone(), correct });
    }
    let n = greedy_groups.len().max(1) as f64;
    let mut result = EvalResult {
        problems: greedy_groups.len(),
        greedy_accuracy: right as f64 / n,
        k: None,
        pass_at_k: None,
        sampled_accuracy: None,
        seconds: 0.0,
        rows,
    };
    if spec.samples > 0 {
        let sampled = play(model, tokenizer, versions, source, spec.samples, spec.sampling.clone(), spec)?;
        let any = sampled.iter().filter(|g| g.episodes.iter().any(is_correct)).count();
        let all: usize = sampled.iter().map(|g| g.episodes.len()).sum();
        let right: usize = sampled.iter().map(|g| g.episodes.iter().filter(|e| is_correct(e)).count()).sum();
        result.k = Some(spec.samples);
        result.pass_at_k = Some(any as f64 / sampled.len().max(1) as f64);
        result.sampled_accuracy = Some(right as f64 / all.max(1) as f64);
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

/// Play `samples` episodes of every held-out problem; groups come back in test-set order.
fn play(
    model: Arc<Model>,
    tokenizer: Arc<TextTokenizer>,
    versions: Arc<VersionSlot>,
    source: &GroupSource,
    samples: usize,
    sampling: SamplingParams,
    spec: &EvalSpec,
) -> Result<Vec<TrajectoryGroup>> {
    let mut groups = source.test_groups(samples);
    if let Some(limit) = spec.problems {
        groups.truncate(limit);
    }
    let expected = groups.len();
    if expected == 0 {
        return Ok(Vec::new());
    }
    let work = Arc::new(ListWork(Mutex::new(groups.into())));
    let transport = Arc::new(InProcess::new(expected));
    let control = Arc::new(Control::new());
    let config = EngineConfig {
        samplers: 1,
        sampler: SamplerConfig {
            slots: spec.slots.max(samples),
            micro_turn_tokens: 16,
            sampling,
            max_episode_tokens: spec.max_episode_tokens,
            threads: spec.threads,
            deterministic: true,
            recompute_on_swap: false,
        },
        reward_workers: 1,
    };
    let engine = Engine::start(config, "eval", Shared { model, tokenizer, versions, work, transport: transport.clone(), control });
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        if let Some(failure) = engine.failure() {
            return Err(anyhow!("evaluation failed: {failure}"));
        }
        if let Some(d) = transport.recv(Duration::from_millis(50)).map_err(|e| anyhow!("evaluation: {e}"))? {
            out.push(d.group);
        }
    }
    engine.stop();
    out.sort_by_key(|g| g.id);
    Ok(out)
}
