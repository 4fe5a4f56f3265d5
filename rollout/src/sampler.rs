//! A sampler worker: continuous batching over a KV cache of slots, in micro-turns.
//!
//! Each micro-turn advances every generating row by up to `micro_turn_tokens` tokens. Between
//! micro-turns the sampler (1) takes the answers of env steps that came back (an observation to
//! append, or the episode's reward), (2) swaps in the newest adapter version by re-packing it,
//! never touching the base weights, and (3) admits new groups into free slots: one prefill per
//! distinct prompt, copied into the group's G slots. Turns that end (eos, a stop string, the
//! turn's token budget) go to the reward pool at once, while the other rows keep generating.
//!
//! A row's tokens that are not in the cache yet (the last sampled token; an observation) are fed
//! by the next forward pass, so appending an observation costs no separate call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use envs::{EnvGroup, Observation, Problem, Step};
use policies::rng::SplitMix;
use policies::sampling::{choose, SamplingParams};
use policies::{FinishReason, KvCache, LoraPacker, LoraRuntime, Model, TextTokenizer};
use tch::{Device, Kind, Tensor};

use crate::control::Control;
use crate::error::{Error, Result};
use crate::scorer::{EpisodeKey, StepDone, StepJob};
use crate::trajectory::{Episode, TrajectoryGroup};
use crate::transport::{Transport, TransportError};
use crate::versions::{Snapshot, VersionSlot};

/// Where samplers get groups to play (the dispenser, or a remote learner's work queue).
pub trait WorkSource: Send + Sync {
    /// The next group for `sampler`, if one may start while the newest version is `version`.
    fn take(&self, sampler: usize, version: u64) -> Option<EnvGroup>;
}

impl WorkSource for crate::work::Dispenser {
    fn take(&self, sampler: usize, version: u64) -> Option<EnvGroup> {
        crate::work::Dispenser::take(self, sampler, version)
    }
}

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Sequences generated side by side (at least one group's worth is always allowed).
    pub slots: usize,
    /// Tokens per micro-turn: how often finished rows leave, new ones join and versions swap.
    pub micro_turn_tokens: usize,
    /// Temperature, top-k/top-p, seed; `max_new_tokens` is per turn; `stop` adds to each env's.
    pub sampling: SamplingParams,
    /// Prompt plus every turn and observation; an episode reaching it ends with `length`.
    pub max_episode_tokens: usize,
    /// CPU threads this sampler's ops may use.
    pub threads: usize,
    /// Wait for every env step at each boundary, so the schedule (and with it every number)
    /// does not depend on thread timing.
    pub deterministic: bool,
    /// On a version swap, recompute the KV cache of the sequences in flight with the new
    /// adapter (one prefill), so every token's behaviour log-prob is exactly what its version
    /// gives it. Otherwise keep the cache: cheaper, and the recorded log-probs are still the
    /// distribution each token was really drawn from, but tokens after a swap were drawn with
    /// keys and values from the older version.
    pub recompute_on_swap: bool,
}

/// Counters a trainer reads (and differences) to report rates.
#[derive(Default)]
pub struct SamplerStats {
    pub sampled_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Time spent in forward passes and sampling.
    pub busy_ns: AtomicU64,
    pub swaps: AtomicU64,
    /// Published → first token sampled with it, summed over swaps, and the largest.
    pub swap_latency_ns: AtomicU64,
    pub swap_latency_max_ns: AtomicU64,
    pub groups: AtomicU64,
    pub skipped_groups: AtomicU64,
    /// Cached positions computed again after swaps.
    pub recomputed_tokens: AtomicU64,
    /// Time env steps and rewards took on the reward pool.
    pub scoring_ns: AtomicU64,
}

impl SamplerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct EpisodeRun {
    key: EpisodeKey,
    env: Option<Box<dyn envs::Env>>,
    stop: Vec<String>,
    rng: SplitMix,
    tokens: Vec<i64>,
    prompt_len: usize,
    action: Vec<bool>,
    logprobs: Vec<f32>,
    versions: Vec<u64>,
    /// Where the current turn's tokens start.
    turn_start: usize,
    turns: u32,
    finish: FinishReason,
    /// At the reward pool: not generating until its answer comes back.
    waiting: bool,
}

struct GroupInFlight {
    epoch: u64,
    problem: Arc<Problem>,
    prompt: String,
    episodes: Vec<Option<Episode>>,
    remaining: usize,
}

/// What every sampler of an engine shares: the base model and tokenizer, where adapter versions
/// come from, where work comes from and finished groups go, and the stop flag.
#[derive(Clone)]
pub struct Shared {
    pub model: Arc<Model>,
    pub tokenizer: Arc<TextTokenizer>,
    pub versions: Arc<VersionSlot>,
    pub work: Arc<dyn WorkSource>,
    pub transport: Arc<dyn Transport>,
    pub control: Arc<Control>,
}

pub struct Sampler {
    pub id: usize,
    name: String,
    shared: Shared,
    /// The model sampled with: the shared base, or a fully fine-tuned version's.
    model: Arc<Model>,
    scorer: Sender<StepJob>,
    config: SamplerConfig,
    stats: Arc<SamplerStats>,
    snapshot: Arc<Snapshot>,
    packer: Option<LoraPacker>,
    lora: Option<LoraRuntime>,
    /// Set by a swap until the first token sampled with the new version.
    swapped_at: Option<Instant>,
    cache: KvCache,
    /// Parallel to the cache's rows; None is a free slot.
    rows: Vec<Option<EpisodeRun>>,
    groups: HashMap<u64, GroupInFlight>,
    /// A group taken from the work source that did not fit yet.
    held: Option<EnvGroup>,
    results_tx: Sender<StepDone>,
    results: Receiver<StepDone>,
    outstanding: usize,
}

/// How long an idle sampler waits before looking again (stop flag, versions, results).
const IDLE_WAIT: Duration = Duration::from_millis(20);

impl Sampler {
    pub fn new(id: usize, name: String, shared: Shared, scorer: Sender<StepJob>, config: SamplerConfig, stats: Arc<SamplerStats>) -> Sampler {
        let (results_tx, results) = unbounded();
        let model = shared.model.clone();
        let cache = model.new_cache(0, 1);
        let snapshot = Arc::new(Snapshot::new(u64::MAX, None)); // replaced by the first swap
        Sampler {
            id, name, shared, model, scorer, config, stats, snapshot,
            packer: None, lora: None, swapped_at: None, cache, rows: Vec::new(), groups: HashMap::new(), held: None,
            results_tx, results, outstanding: 0,
        }
    }

    /// Generate until told to stop.
    pub fn run(mut self) -> Result<()> {
        policies::threads::set_thread_budget(self.config.threads);
        let _no_grad = tch::no_grad_guard();
        self.config.sampling.validate()?;
        self.swap()?;
        while !self.shared.control.stopped() {
            self.collect_results(self.config.deterministic)?;
            if self.shared.versions.version() != self.snapshot.version {
                self.swap()?;
            }
            let admitted = self.admit()?;
            if !admitted {
                self.compact()?;
            }
            if self.rows.iter().flatten().any(|r| !r.waiting) {
                self.micro_turn()?;
            } else if self.outstanding > 0 {
                match self.results.recv_timeout(IDLE_WAIT) {
                    Ok(done) => self.handle(done)?,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::msg("the reward pool is gone")),
                }
            } else {
                self.shared.versions.wait_newer(self.snapshot.version, IDLE_WAIT);
            }
        }
        Ok(())
    }

    /// Take the newest version: re-pack its adapter (a few tensor ops), keep the base weights.
    fn swap(&mut self) -> Result<()> {
        let snapshot = self.shared.versions.latest();
        if let Some(model) = &snapshot.model {
            self.model = model.clone();
        }
        self.lora = match &snapshot.adapter {
            Some(adapter) => {
                let fits = self.packer.as_ref().map(|p| p.pack(&[adapter], self.model.kind()));
                Some(match fits {
                    Some(Ok(lora)) => lora,
                    // First version, or a different layout: plan the packing again.
                    _ => {
                        let packer = LoraPacker::new(&self.model.config, &[adapter])?;
                        let lora = packer.pack(&[adapter], self.model.kind())?;
                        self.packer = Some(packer);
                        lora
                    }
                })
            }
            None => None,
        };
        if self.snapshot.version != u64::MAX {
            self.swapped_at = Some(snapshot.published);
            SamplerStats::add(&self.stats.swaps, 1);
        }
        self.snapshot = snapshot;
        if self.config.recompute_on_swap {
            self.recompute_cache()?;
        }
        Ok(())
    }

    /// Every row's cached positions again, under the current adapter: one prefill of the tokens
    /// already fed (free rows stay empty).
    fn recompute_cache(&mut self) -> Result<()> {
        let lens = self.cache.lens().to_vec();
        let width = lens.iter().copied().max().unwrap_or(0);
        if width == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let mut padded = vec![0i64; lens.len() * width as usize];
        for (r, run) in self.rows.iter().enumerate() {
            if let Some(run) = run {
                let n = lens[r] as usize;
                padded[r * width as usize..r * width as usize + n].copy_from_slice(&run.tokens[..n]);
            }
        }
        let mut cache = self.model.new_cache(lens.len() as i64, self.cache.capacity());
        let tokens = Tensor::from_slice(&padded).view([lens.len() as i64, width]).to_device(self.model.device());
        let _ = self.model.forward_cached(&tokens, &lens, &mut cache, self.lora.as_ref())?;
        self.cache = cache;
        SamplerStats::add(&self.stats.busy_ns, started.elapsed().as_nanos() as u64);
        SamplerStats::add(&self.stats.recomputed_tokens, lens.iter().sum::<i64>() as u64);
        Ok(())
    }

    /// Env answers that came back; with `wait`, every outstanding one.
    fn collect_results(&mut self, wait: bool) -> Result<()> {
        loop {
            let next = if wait && self.outstanding > 0 {
                match self.results.recv_timeout(IDLE_WAIT) {
                    Ok(done) => Some(done),
                    Err(RecvTimeoutError::Timeout) if self.shared.control.stopped() => return Ok(()),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::msg("the reward pool is gone")),
                }
            } else {
                self.results.try_recv().ok()
            };
            match next {
                Some(done) => self.handle(done)?,
                None => return Ok(()),
            }
        }
    }

    fn handle(&mut self, done: StepDone) -> Result<()> {
        self.outstanding -= 1;
        SamplerStats::add(&self.stats.scoring_ns, (done.seconds * 1e9) as u64);
        let Some(row) = self.rows.iter().position(|r| r.as_ref().is_some_and(|r| r.key == done.key)) else {
            return Err(Error::msg(format!("internal: an env answer for unknown episode {:?}", done.key)));
        };
        let run = self.rows[row].as_mut().expect("row found above");
        run.env = Some(done.env);
        run.waiting = false;
        match done.step {
            Step::Continue { observation } => {
                let observed = self.shared.tokenizer.encode(&observation, false)?;
                // The observation, then at least one more token, must fit.
                if run.tokens.len() + observed.len() + 1 > self.config.max_episode_tokens {
                    run.finish = FinishReason::Length;
                    run.turn_start = run.tokens.len();
                    return self.end_turn(row, String::new());
                }
                let version = self.snapshot.version;
                run.action.extend(std::iter::repeat_n(false, observed.len()));
                run.logprobs.extend(std::iter::repeat_n(0.0, observed.len()));
                run.versions.extend(std::iter::repeat_n(version, observed.len()));
                run.tokens.extend(observed);
                run.turn_start = run.tokens.len();
                run.turns += 1;
                Ok(())
            }
            Step::Done { reward, metrics } => {
                let run = self.rows[row].take().expect("row found above");
                self.cache.clear_rows(&[row]);
                let completion = self.shared.tokenizer.decode(&run.tokens[run.prompt_len..])?;
                let (group_id, index) = run.key;
                let episode = Episode {
                    prompt_len: run.prompt_len,
                    action: run.action,
                    logprobs: run.logprobs,
                    versions: run.versions,
                    tokens: run.tokens,
                    reward,
                    metrics,
                    finish_reason: run.finish,
                    turns: run.turns,
                    completion,
                };
                let group = self.groups.get_mut(&group_id).ok_or_else(|| Error::msg("internal: an episode of an unknown group"))?;
                group.episodes[index] = Some(episode);
                group.remaining -= 1;
                if group.remaining == 0 {
                    let group = self.groups.remove(&group_id).expect("present above");
                    let episodes = group.episodes.into_iter().map(|e| e.expect("every episode is done")).collect();
                    self.send(TrajectoryGroup {
                        id: group_id,
                        epoch: group.epoch,
                        problem: (*group.problem).clone(),
                        prompt: group.prompt,
                        episodes,
                        sampler: self.name.clone(),
                        skipped: None,
                    })?;
                }
                Ok(())
            }
        }
    }

    fn send(&mut self, group: TrajectoryGroup) -> Result<()> {
        SamplerStats::add(if group.skipped.is_some() { &self.stats.skipped_groups } else { &self.stats.groups }, 1);
        match self.shared.transport.send(group) {
            Ok(()) => Ok(()),
            // Closed because the run is stopping: nothing more to hand over.
            Err(TransportError::Closed) if self.shared.control.stopped() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn max_rows(&self) -> usize {
        self.config.slots.max(1)
    }

    /// Start as many groups as free slots allow; true if any started.
    fn admit(&mut self) -> Result<bool> {
        let mut room = self.rows.iter().filter(|r| r.is_none()).count() + self.max_rows().saturating_sub(self.rows.len());
        let mut taken: Vec<EnvGroup> = Vec::new();
        while !self.shared.control.stopped() {
            let group = match self.held.take() {
                Some(group) => group,
                None => match self.shared.work.take(self.id, self.snapshot.version) {
                    Some(group) => group,
                    None => break,
                },
            };
            let n = group.envs.len();
            // A group larger than all the slots still starts, alone, in an empty sampler.
            let alone = self.groups.is_empty() && taken.is_empty();
            if n > room && !alone {
                // Its turn comes at a later boundary, when slots are free.
                self.held = Some(group);
                break;
            }
            room = room.saturating_sub(n);
            taken.push(group);
            if room == 0 {
                break;
            }
        }
        self.start_groups(taken)
    }

    /// Prefill the groups' prompts (once per distinct prompt), sample each episode's first
    /// token, and place the episodes in slots.
    fn start_groups(&mut self, groups: Vec<EnvGroup>) -> Result<bool> {
        if groups.is_empty() {
            return Ok(false);
        }
        let limit = self.config.max_episode_tokens.min(self.model.max_positions() as usize);
        let mut prompts: Vec<Vec<i64>> = Vec::new();
        let mut episodes: Vec<Staged> = Vec::new();
        for group in groups {
            let EnvGroup { id, epoch, problem, envs } = group;
            let first = envs.first().map(|e| e.initial_observation());
            let prompt_text = first.as_ref().map(Observation::plain_text).unwrap_or_default();
            let mut rows_of_group: Vec<(Observation, usize)> = Vec::new();
            let mut problem_tokens: Option<String> = None;
            let mut staged = Vec::new();
            for (i, env) in envs.into_iter().enumerate() {
                let observation = env.initial_observation();
                let row = match rows_of_group.iter().find(|(o, _)| *o == observation) {
                    Some((_, row)) => *row,
                    None => {
                        let tokens = self.encode_observation(&observation)?;
                        if tokens.is_empty() || tokens.len() + 1 > limit {
                            problem_tokens = Some(format!(
                                "prompt of {} tokens leaves no room in the episode budget of {limit}",
                                tokens.len()
                            ));
                            break;
                        }
                        prompts.push(tokens);
                        rows_of_group.push((observation, prompts.len() - 1));
                        prompts.len() - 1
                    }
                };
                let mut stop: Vec<String> = env.stop_strings().to_vec();
                stop.extend(self.config.sampling.stop.iter().cloned());
                staged.push((id, i, env, row, stop));
            }
            if let Some(reason) = problem_tokens {
                // Unplayable: tell the learner, so the group counts as consumed.
                tracing::warn!(group = id, problem = %problem.id, "skipping a group: {reason}");
                prompts.truncate(prompts.len() - rows_of_group.len());
                self.send(TrajectoryGroup {
                    id, epoch, problem: (*problem).clone(), prompt: prompt_text, episodes: Vec::new(),
                    sampler: self.name.clone(), skipped: Some(reason),
                })?;
                continue;
            }
            self.groups.insert(id, GroupInFlight { epoch, problem, prompt: prompt_text, episodes: (0..staged.len()).map(|_| None).collect(), remaining: staged.len() });
            episodes.extend(staged);
        }
        if episodes.is_empty() {
            return Ok(true);
        }
        let started = Instant::now();
        // Prefill into a fresh cache: every row starts at 0, the fast causal path.
        let lens: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
        let width = *lens.iter().max().expect("some prompts");
        let mut prefill = self.model.new_cache(prompts.len() as i64, width);
        let padded: Vec<i64> = prompts.iter().flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(0, width as usize - p.len()))).collect();
        let device = self.model.device();
        let tokens = Tensor::from_slice(&padded).view([prompts.len() as i64, width]).to_device(device);
        let hidden = self.model.forward_cached(&tokens, &lens, &mut prefill, self.lora.as_ref())?;
        let last_index = Tensor::from_slice(&lens).to_device(device) - 1;
        let last = hidden.gather(1, &last_index.view([-1, 1, 1]).expand([-1, 1, hidden.size()[2]], false), false).squeeze_dim(1);
        let logits = self.model.logits(&last, self.lora.as_ref());
        let rows_index: Vec<i64> = episodes.iter().map(|e| e.3 as i64).collect();
        let per_episode = logits.index_select(0, &Tensor::from_slice(&rows_index).to_device(device));
        let mut rngs: Vec<SplitMix> = episodes
            .iter()
            .map(|(g, i, ..)| SplitMix::for_stream(self.config.sampling.seed, stream_of(*g, *i)))
            .collect();
        let (next, logp) = choose(&per_episode, &self.config.sampling, &mut rngs);
        let next = Vec::<i64>::try_from(&next.to_device(Device::Cpu))?;
        let logp = Vec::<f32>::try_from(&logp.to_kind(Kind::Float).to_device(Device::Cpu))?;

        // Slots: free ones first, then grow the cache (keeping the rows in use).
        let needed = episodes.len();
        let mut free: Vec<usize> = (0..self.rows.len()).filter(|&r| self.rows[r].is_none()).collect();
        let capacity = self.capacity_for(width + self.config.micro_turn_tokens as i64);
        if free.len() < needed || capacity > self.cache.capacity() {
            let keep: Vec<usize> = (0..self.rows.len()).filter(|&r| self.rows[r].is_some()).collect();
            let extra = needed.max(self.max_rows().saturating_sub(keep.len()));
            self.reshape(&keep, extra, capacity.max(self.cache.capacity()))?;
            free = (0..self.rows.len()).filter(|&r| self.rows[r].is_none()).collect();
        }
        let dst: Vec<usize> = free[..needed].to_vec();
        let src: Vec<usize> = rows_index.iter().map(|&r| r as usize).collect();
        self.cache.copy_rows_from(&prefill, &src, &dst)?;
        SamplerStats::add(&self.stats.prompt_tokens, prompts.iter().map(|p| p.len() as u64).sum());
        let version = self.snapshot.version;
        for (k, ((g, i, env, row, stop), rng)) in episodes.into_iter().zip(rngs).enumerate() {
            let mut tokens = prompts[row].clone();
            let prompt_len = tokens.len();
            tokens.push(next[k]);
            self.rows[dst[k]] = Some(EpisodeRun {
                key: (g, i), env: Some(env), stop, rng, tokens, prompt_len,
                action: vec![true], logprobs: vec![logp[k]], versions: vec![version],
                turn_start: prompt_len, turns: 1, finish: FinishReason::Length, waiting: false,
            });
        }
        self.note_sampled(needed as u64, started);
        for &r in &dst {
            self.check_turn_end(r)?;
        }
        Ok(true)
    }

    fn encode_observation(&self, observation: &Observation) -> Result<Vec<i64>> {
        Ok(match observation {
            Observation::Text(text) => self.shared.tokenizer.encode(text, true)?,
            Observation::Chat { messages, add_generation_prompt } => {
                let messages: Vec<policies::Message> =
                    messages.iter().map(|m| policies::Message::new(m.role.as_str(), &m.content)).collect();
                self.shared.tokenizer.encode_chat(&messages, *add_generation_prompt)?
            }
        })
    }

    /// A cache length for `need` positions: room for a turn more, rounded up.
    fn capacity_for(&self, need: i64) -> i64 {
        let want = need + self.config.sampling.max_new_tokens.max(1) + self.config.micro_turn_tokens as i64;
        (want + 63) / 64 * 64
    }

    /// A new cache of `keep.len() + extra` rows and `capacity` positions, holding the rows
    /// `keep` (in that order) and `extra` free slots after them.
    fn reshape(&mut self, keep: &[usize], extra: usize, capacity: i64) -> Result<()> {
        let mut cache = self.model.new_cache((keep.len() + extra) as i64, capacity);
        let dst: Vec<usize> = (0..keep.len()).collect();
        cache.copy_rows_from(&self.cache, keep, &dst)?;
        let mut rows: Vec<Option<EpisodeRun>> = keep.iter().map(|&r| self.rows[r].take()).collect();
        rows.extend((0..extra).map(|_| None));
        self.rows = rows;
        self.cache = cache;
        Ok(())
    }

    /// Drop free slots when they are a quarter of the batch: every slot costs compute.
    fn compact(&mut self) -> Result<()> {
        let free = self.rows.iter().filter(|r| r.is_none()).count();
        if free == 0 || free * 4 < self.rows.len() {
            return Ok(());
        }
        let keep: Vec<usize> = (0..self.rows.len()).filter(|&r| self.rows[r].is_some()).collect();
        let capacity = self.cache.capacity();
        self.reshape(&keep, 0, capacity)
    }

    /// Up to `micro_turn_tokens` tokens for every generating row.
    fn micro_turn(&mut self) -> Result<()> {
        for _ in 0..self.config.micro_turn_tokens.max(1) {
            if self.shared.control.stopped() || !self.rows.iter().flatten().any(|r| !r.waiting) {
                break;
            }
            self.decode_step()?;
        }
        Ok(())
    }

    /// Feed every generating row its tokens not yet in the cache, and sample one more.
    fn decode_step(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut width = self.feed_width();
        let longest = self.cache.lens().iter().copied().max().unwrap_or(0);
        if longest + width > self.cache.capacity() {
            let keep: Vec<usize> = (0..self.rows.len()).collect();
            let capacity = self.capacity_for(longest + width);
            self.reshape(&keep, 0, capacity)?;
            width = self.feed_width();
        }
        let lens = self.cache.lens().to_vec();
        let mut padded = vec![0i64; self.rows.len() * width as usize];
        let mut counts = vec![0i64; self.rows.len()];
        let mut live: Vec<usize> = Vec::new();
        for (r, run) in self.rows.iter().enumerate() {
            let Some(run) = run.as_ref().filter(|run| !run.waiting) else { continue };
            let feed = &run.tokens[lens[r] as usize..];
            padded[r * width as usize..r * width as usize + feed.len()].copy_from_slice(feed);
            counts[r] = feed.len() as i64;
            live.push(r);
        }
        let device = self.model.device();
        let tokens = Tensor::from_slice(&padded).view([self.rows.len() as i64, width]).to_device(device);
        let hidden = self.model.forward_cached(&tokens, &counts, &mut self.cache, self.lora.as_ref())?;
        let rows_t = Tensor::from_slice(&live.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device);
        let pos_t = Tensor::from_slice(&live.iter().map(|&r| counts[r] - 1).collect::<Vec<_>>()).to_device(device);
        let last = hidden.index(&[Some(rows_t), Some(pos_t)]);
        let logits = self.model.logits(&last, self.lora.as_ref());
        let mut rngs: Vec<SplitMix> = live.iter().map(|&r| self.rows[r].as_ref().expect("live").rng.clone()).collect();
        let (next, logp) = choose(&logits, &self.config.sampling, &mut rngs);
        let next = Vec::<i64>::try_from(&next.to_device(Device::Cpu))?;
        let logp = Vec::<f32>::try_from(&logp.to_kind(Kind::Float).to_device(Device::Cpu))?;
        let version = self.snapshot.version;
        for (k, &r) in live.iter().enumerate() {
            let run = self.rows[r].as_mut().expect("live");
            run.rng = rngs[k].clone();
            run.tokens.push(next[k]);
            run.action.push(true);
            run.logprobs.push(logp[k]);
            run.versions.push(version);
        }
        self.note_sampled(live.len() as u64, started);
        for &r in &live {
            self.check_turn_end(r)?;
        }
        Ok(())
    }

    /// The most tokens any generating row has waiting to be fed.
    fn feed_width(&self) -> i64 {
        let lens = self.cache.lens();
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(r, run)| run.as_ref().filter(|run| !run.waiting).map(|run| run.tokens.len() as i64 - lens[r]))
            .max()
            .unwrap_or(1)
            .max(1)
    }

    fn note_sampled(&mut self, tokens: u64, started: Instant) {
        SamplerStats::add(&self.stats.sampled_tokens, tokens);
        SamplerStats::add(&self.stats.busy_ns, started.elapsed().as_nanos() as u64);
        if let Some(published) = self.swapped_at.take() {
            let latency = published.elapsed().as_nanos() as u64;
            SamplerStats::add(&self.stats.swap_latency_ns, latency);
            self.stats.swap_latency_max_ns.fetch_max(latency, Ordering::Relaxed);
        }
    }

    /// After a token: has the row's turn ended (eos, a stop string, a budget)? Then hand it
    /// to the reward pool.
    fn check_turn_end(&mut self, row: usize) -> Result<()> {
        let params = &self.config.sampling;
        let run = self.rows[row].as_mut().expect("a running row");
        let last = *run.tokens.last().expect("a sampled token");
        let turn_len = run.tokens.len() - run.turn_start;
        let mut text_end = run.tokens.len();
        let finish = if !params.ignore_eos && self.shared.tokenizer.eos_ids.contains(&last) {
            text_end -= 1;
            Some(FinishReason::Eos)
        } else if !run.stop.is_empty() && stop_in_tail(&self.shared.tokenizer, &run.tokens[run.turn_start..], &run.stop)? {
            Some(FinishReason::Stop)
        } else if turn_len as i64 >= params.max_new_tokens || run.tokens.len() >= self.config.max_episode_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let Some(finish) = finish else { return Ok(()) };
        run.finish = finish;
        let mut text = self.shared.tokenizer.decode(&run.tokens[run.turn_start..text_end])?;
        if finish == FinishReason::Stop {
            // The env gets the turn up to and including the first stop string.
            if let Some(end) = run.stop.iter().filter_map(|s| text.find(s.as_str()).map(|i| i + s.len())).min() {
                text.truncate(end);
            }
        }
        self.end_turn(row, text)
    }

    fn end_turn(&mut self, row: usize, text: String) -> Result<()> {
        let run = self.rows[row].as_mut().expect("a running row");
        let env = run.env.take().ok_or_else(|| Error::msg("internal: an episode's env is already at the reward pool"))?;
        run.waiting = true;
        let job = StepJob { key: run.key, env, action: text, reply: self.results_tx.clone() };
        self.scorer.send(job).map_err(|_| Error::msg("the reward pool is gone"))?;
        self.outstanding += 1;
        Ok(())
    }
}

/// An episode about to start: (group id, index in the group, env, its prompt's prefill row,
/// stop strings).
type Staged = (u64, usize, Box<dyn envs::Env>, usize, Vec<String>);

/// The random stream of episode `index` of group `group`: the same whatever sampler plays it.
pub fn stream_of(group: u64, index: usize) -> u64 {
    group.wrapping_mul(1 << 16).wrapping_add(index as u64)
}

/// Whether a stop string ends within the last few tokens (earlier positions were checked
/// already), so the check costs the same at token 10 and at token 10 000.
fn stop_in_tail(tokenizer: &TextTokenizer, turn: &[i64], stop: &[String]) -> policies::Result<bool> {
    let window = stop.iter().map(String::len).max().unwrap_or(0) + 4;
    let tail = tokenizer.decode(&turn[turn.len().saturating_sub(window)..])?;
    Ok(stop.iter().any(|s| tail.contains(s.as_str())))
}

