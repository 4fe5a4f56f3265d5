//! Starting and stopping the samplers and the reward pool. The learner (in `rl`) talks to the
//! engine only through the transport (groups in) and the version slot (adapters out).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::control::{panic_message, Control};
use crate::sampler::{Sampler, SamplerConfig, SamplerStats, Shared};
use crate::scorer::ScorerPool;
use crate::transport::Transport;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub samplers: usize,
    pub sampler: SamplerConfig,
    /// Threads that run env steps and rewards.
    pub reward_workers: usize,
}

/// Totals over all samplers at one moment (a trainer differences two of these).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub sampled_tokens: u64,
    pub prompt_tokens: u64,
    pub busy_seconds: f64,
    pub swaps: u64,
    pub swap_latency_seconds: f64,
    pub swap_latency_max_seconds: f64,
    pub groups: u64,
    pub skipped_groups: u64,
    pub recomputed_tokens: u64,
    pub scoring_seconds: f64,
}

pub struct Engine {
    control: Arc<Control>,
    samplers: Vec<JoinHandle<()>>,
    scorer: Option<ScorerPool>,
    stats: Vec<Arc<SamplerStats>>,
    transport: Arc<dyn Transport>,
}

impl Engine {
    /// Start `config.samplers` sampler threads (named `{name}-{i}`) and the reward pool.
    pub fn start(config: EngineConfig, name: &str, shared: Shared) -> Engine {
        let control = shared.control.clone();
        let transport = shared.transport.clone();
        let scorer = ScorerPool::start(config.reward_workers, control.clone());
        let mut samplers = Vec::new();
        let mut stats = Vec::new();
        for id in 0..config.samplers.max(1) {
            let stat = Arc::new(SamplerStats::default());
            stats.push(stat.clone());
            let sampler = Sampler::new(id, format!("{name}-{id}"), shared.clone(), scorer.submitter(), config.sampler.clone(), stat);
            let control = control.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sampler-{id}"))
                .spawn(move || {
                    // A sampler's error or panic stops the run with its message.
                    match catch_unwind(AssertUnwindSafe(|| sampler.run())) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => control.fail(format!("sampler {id}: {e}")),
                        Err(payload) => control.fail(format!("sampler {id} panicked: {}", panic_message(&*payload))),
                    }
                })
                .expect("spawning a sampler thread");
            samplers.push(handle);
        }
        Engine { control, samplers, scorer: Some(scorer), stats, transport }
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Why the engine stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.control.failure()
    }

    pub fn totals(&self) -> Totals {
        self.stats().totals()
    }

    /// A handle on the samplers' counters that outlives borrows of the engine (readable from
    /// any thread).
    pub fn stats(&self) -> StatsReader {
        StatsReader(self.stats.clone())
    }

    /// Stop every worker and wait for them. Groups already in the transport stay there.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.control.stop();
        // Wake samplers blocked on a full queue.
        self.transport.close();
        for h in self.samplers.drain(..) {
            let _ = h.join();
        }
        if let Some(scorer) = self.scorer.take() {
            scorer.shutdown();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads the samplers' counters from any thread.
#[derive(Clone)]
pub struct StatsReader(Vec<Arc<SamplerStats>>);

impl StatsReader {
    /// Version swaps so far, over all samplers.
    pub fn swaps(&self) -> u64 {
        self.0.iter().map(|s| s.swaps.load(Ordering::Relaxed)).sum()
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.0 {
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            t.sampled_tokens += get(&s.sampled_tokens);
            t.prompt_tokens += get(&s.prompt_tokens);
            t.busy_seconds += get(&s.busy_ns) as f64 * 1e-9;
            t.swaps += get(&s.swaps);
            t.swap_latency_seconds += get(&s.swap_latency_ns) as f64 * 1e-9;
            t.swap_latency_max_seconds = t.swap_latency_max_seconds.max(get(&s.swap_latency_max_ns) as f64 * 1e-9);
            t.groups += get(&s.groups);
            t.skipped_groups += get(&s.skipped_groups);
            t.recomputed_tokens += get(&s.recomputed_tokens);
            t.scoring_seconds += get(&s.scoring_ns) as f64 * 1e-9;
        }
        t
    }
}
