//! `noregret bench rollout`: the rollout engine's sampled tokens/s with micro-turns and a new
//! adapter version every micro-turn, against whole-sequence `generate` with a fixed adapter, on
//! the same prompts and lengths in the same process; and the swap latency (a version published →
//! the first token sampled with it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use envs::{Env, EnvGroup, Observation, Problem, Step};
use policies::{Adapter, Model, SamplingParams, TextTokenizer};
use rollout::{Control, Engine, EngineConfig, InProcess, SamplerConfig, Shared, Snapshot, Transport, VersionSlot, WorkSource};

/// Plays one turn and scores 0: the benchmark measures sampling, not rewards.
struct OneTurn(Arc<Problem>);

impl Env for OneTurn {
    fn initial_observation(&self) -> Observation {
        Observation::Text(self.0.question.clone())
    }
    fn stop_strings(&self) -> &[String] {
        &[]
    }
    fn step(&mut self, _action: &str) -> Step {
        Step::Done { reward: 0.0, metrics: BTreeMap::new() }
    }
    fn problem(&self) -> &Arc<Problem> {
        &self.0
    }
}

struct Prompts(Mutex<VecDeque<EnvGroup>>);

impl WorkSource for Prompts {
    fn take(&self, _sampler: usize, _version: u64) -> Option<EnvGroup> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

pub struct RolloutRun {
    pub seconds: f64,
    pub tokens: u64,
    pub swaps: u64,
    pub swap_latency_mean_s: f64,
    pub swap_latency_max_s: f64,
}

/// Sample every prompt once (exactly `new_tokens` each) through the engine, publishing a new
/// version each time a sampler has taken the last one (`publish`), or never.
#[allow(clippy::too_many_arguments)]
pub fn engine_run(
    model: Arc<Model>,
    tokenizer: Arc<TextTokenizer>,
    adapter: &Adapter,
    prompts: &[String],
    params: &SamplingParams,
    micro_turn_tokens: usize,
    samplers: usize,
    threads: usize,
    recompute_on_swap: bool,
    publish: bool,
) -> Result<RolloutRun> {
    let groups: VecDeque<EnvGroup> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let problem = Arc::new(Problem { id: i.to_string(), question: p.clone(), answer: String::new() });
            EnvGroup { id: i as u64, epoch: 0, problem: problem.clone(), envs: vec![Box::new(OneTurn(problem)) as Box<dyn Env>] }
        })
        .collect();
    let n = groups.len();
    let versions = Arc::new(VersionSlot::new(Snapshot::new(0, Some(adapter.snapshot()))));
    let transport: Arc<dyn Transport> = Arc::new(InProcess::new(n));
    let control = Arc::new(Control::new());
    let config = EngineConfig {
        samplers,
        sampler: SamplerConfig {
            slots: n.div_ceil(samplers),
            micro_turn_tokens,
            sampling: params.clone(),
            max_episode_tokens: 1 << 20,
            threads,
            deterministic: false,
            recompute_on_swap,
        },
        reward_workers: 1,
    };
    let started = Instant::now();
    let work = Arc::new(Prompts(Mutex::new(groups)));
    let engine = Engine::start(config, "bench", Shared { model, tokenizer, versions: versions.clone(), work, transport: transport.clone(), control });
    // The learner's part: a new version whenever the samplers have swapped to the last one.
    let done = Arc::new(AtomicBool::new(false));
    let publisher = publish.then(|| {
        let (versions, done, adapter) = (versions.clone(), done.clone(), adapter.snapshot());
        let stats = engine.stats();
        std::thread::spawn(move || {
            let mut version = 0;
            while !done.load(Ordering::SeqCst) {
                if stats.swaps() >= version * samplers as u64 {
                    version += 1;
                    versions.publish(Snapshot::new(version, Some(adapter.snapshot())));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    });
    let mut received = 0;
    let mut tokens = 0u64;
    while received < n {
        if let Some(f) = engine.failure() {
            return Err(anyhow!("{f}"));
        }
        if let Some(d) = transport.recv(Duration::from_millis(20)).map_err(|e| anyhow!("{e}"))? {
            received += 1;
            tokens += d.group.episodes.iter().map(|e| e.action_tokens() as u64).sum::<u64>();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    if let Some(p) = publisher {
        let _ = p.join();
    }
    let totals = engine.totals();
    engine.stop();
    Ok(RolloutRun {
        seconds,
        tokens,
        swaps: totals.swaps,
        swap_latency_mean_s: if totals.swaps > 0 { totals.swap_latency_seconds / totals.swaps as f64 } else { 0.0 },
        swap_latency_max_s: totals.swap_latency_max_seconds,
    })
}
