//! `noregret train`: the loop that joins envs, samplers, rewards and the learner.
//!
//! One loop whatever the lag budget: take the next batch of groups from the transport (each
//! checked: too stale, from a version never published, or unplayable groups are counted and
//! left out), train on it, publish the new adapter version, then evaluate, write metrics,
//! transcripts, plots and checkpoints as due. `max_staleness = 0` is simply the strictest
//! budget: samplers then start a batch's groups only once its version is out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::checkpoint::{self, TrainState, TrainTensors};
use crate::eval::{evaluate, EvalResult, EvalSpec};
use crate::experiment::{Experiment, KvOnSwap};
use crate::learner::data::{self, Sequence};
use crate::learner::{Learner, StepMetrics, Trainable};
use crate::plan::ThreadPlan;
use crate::run_dir::{RunDir, ADAPTER, CONFIG, METRICS, SAMPLES, SUMMARY};
use crate::samplers::{Remote, Samplers};
use policies::{Adapter, LoraConfig, LoraPacker, Model};
use rollout::{Control, Delivery, DeliveryTag, Dispenser, Engine, EngineConfig, InProcess, SamplerConfig, Shared, Snapshot, StreamPosition, Transport, TrajectoryGroup, VersionSlot, WorkPlan};

/// Set by Ctrl-C: the loop stops at the next group, checkpoints and exits.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Groups consumed so far, as "everything below `low`" plus those above it.
#[derive(Debug, Clone, Default)]
struct Consumed {
    low: u64,
    above: BTreeSet<u64>,
}

impl Consumed {
    fn contains(&self, id: u64) -> bool {
        id < self.low || self.above.contains(&id)
    }

    fn add(&mut self, id: u64) {
        if id >= self.low {
            self.above.insert(id);
        }
        while self.above.remove(&self.low) {
            self.low += 1;
        }
    }
}

/// What the loop counts across steps (saved in checkpoints).
#[derive(Debug, Clone, Default)]
struct Counters {
    dropped_stale: u64,
    dropped_uniform: u64,
    refused: u64,
    skipped: u64,
    /// Groups that arrived again after being consumed (a sampler thought lost that was not,
    /// or work released again after a resume): dropped by id.
    duplicates: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.dropped_stale += other.dropped_stale;
        self.dropped_uniform += other.dropped_uniform;
        self.refused += other.refused;
        self.skipped += other.skipped;
        self.duplicates += other.duplicates;
    }
}

pub struct Outcome {
    pub run_dir: PathBuf,
    pub summary: Value,
}

/// Train `exp` into its run directory, or continue the run in `resume`.
pub fn run(exp: Experiment, resume: bool, threads_flag: Option<i32>) -> Result<Outcome> {
    let started = Instant::now();
    let broker = exp.rollout.transport.as_deref().map(|url| crate::remote::broker_config(&exp, url)).transpose()?;
    if let Some(b) = &broker {
        // An unreachable server, a refused password or another live learner under the prefix
        // fails before anything is written.
        rollout::broker::learner::LearnerLink::check_free(b, &exp.out_dir().display().to_string())?;
    }
    let run = if resume { RunDir::open(exp.out_dir())? } else { RunDir::create(exp.out_dir())? };
    if !resume {
        run.write(CONFIG, crate::config::to_toml(&exp)?.as_bytes())?;
    }
    let policy = crate::model_args::load_policy(&exp.model.path, exp.model.dtype.as_deref(), &exp.model.device)?;
    let fingerprint = policies::weights::fingerprint(&exp.model.path)?;
    let cuda = policy.model.device() != tch::Device::Cpu;
    let mut plan = ThreadPlan::new(&exp.rollout, exp.group_size(), cuda, ThreadPlan::cores(threads_flag));
    if broker.is_some() && !cuda {
        // The samplers run elsewhere: every core learns (and evaluates).
        plan.learner_threads = ThreadPlan::cores(threads_flag);
        plan.sampler_threads = plan.learner_threads;
    }
    policies::threads::set_thread_budget(plan.learner_threads);
    tracing::info!(?plan, "threads");
    let tokenizer = Arc::new(policy.tokenizer);
    let model_dir = policy.dir.clone();
    let sampling = exp.sampling();

    // What is trained, and the samplers' first version of it.
    let (trainable, sampler_model, describe) = match exp.adapter.rank.lora() {
        Some(rank) => {
            let model = Arc::new(policy.model);
            let adapter = match &exp.adapter.init {
                Some(dir) => policies::peft::load(dir, &model)?,
                None => {
                    let targets = policies::lora::parse_targets(&exp.adapter.targets)?;
                    let mut config = LoraConfig::new(rank, exp.adapter.alpha, targets)?;
                    config.rslora = exp.adapter.rslora;
                    Adapter::init(&model.config, config, exp.run.seed, model.device())
                }
            };
            let c = &adapter.config;
            let describe = format!("lora r={} alpha={} targets={:?} rslora={}", c.rank, c.alpha, c.targets, c.rslora);
            let packer = LoraPacker::new(&model.config, &[&adapter])?;
            (Trainable::Lora { model: model.clone(), adapter, packer }, model, describe)
        }
        None => {
            let copy = Arc::new(policy.model.deep_copy());
            (Trainable::Full { model: Box::new(policy.model) }, copy, "full".to_string())
        }
    };
    let mut learner = Learner::new(trainable, &exp.rl, sampling.clone())?;
    let trainable_parameters: i64 = learner.optimizer.state().0.iter().map(|t| t.numel() as i64).sum();

    // Resume: tensors, optimiser, stream, counters.
    let (mut step, mut version, mut carry, position) = if resume {
        let (state, tensors, dir) = checkpoint::latest(&run, &fingerprint, &describe)?;
        restore(&mut learner, &tensors, state.optimizer_steps).with_context(|| format!("{}: cannot restore", dir.display()))?;
        run.truncate_after(METRICS, state.step)?;
        run.truncate_after(SAMPLES, state.step)?;
        eprintln!("resuming {} from {} (step {})", run.path.display(), dir.display(), state.step);
        (state.step, state.version, state.carry, Some(state.stream))
    } else {
        (0, 0, BTreeMap::new(), None)
    };
    let mut counters = Counters {
        dropped_stale: carry_u64(&carry, "dropped_stale"),
        dropped_uniform: carry_u64(&carry, "dropped_uniform"),
        refused: carry_u64(&carry, "refused"),
        skipped: carry_u64(&carry, "skipped"),
        duplicates: carry_u64(&carry, "duplicates"),
    };
    let mut consumed = match &position {
        Some(p) => {
            let mut c = Consumed { low: p.cursor.groups, above: BTreeSet::new() };
            p.consumed_after.iter().for_each(|&g| c.add(g));
            c
        }
        None => Consumed::default(),
    };

    // Rewards, envs, the work plan and the samplers.
    let reward: Option<Arc<dyn rewards::Reward>> = if exp.reward.is_empty() {
        None
    } else {
        Some(Arc::from(rewards::build(&exp.reward).map_err(|e| anyhow!("[[reward]]: {e}"))?))
    };
    let source = exp.env.build(reward).map_err(|e| anyhow!("[env]: {e}"))?;
    let eval_source = source.clone();
    let remote = match (&broker, exp.rollout.transport.as_deref()) {
        (Some(_), Some(url)) => Some(Remote::connect(&exp, url, &run.path, &fingerprint, resume)?),
        _ => None,
    };
    let work_plan = WorkPlan {
        groups_per_batch: exp.rollout.groups_per_step as u64,
        versions_per_batch: exp.rl.updates_per_batch,
        max_staleness: exp.rollout.max_staleness,
        // Remote samplers come and go: work goes out in group order to whoever asks.
        samplers: if remote.is_some() { 1 } else { plan.samplers },
        deterministic: remote.is_none() && exp.rollout.max_staleness == 0,
    };
    let mut dispense_from = position.clone();
    if let (Some(r), Some(p)) = (&remote, dispense_from.as_mut()) {
        // Groups sampled before a crash and still on the server are not sampled again.
        p.consumed_after.extend(r.waiting_ids()?.into_iter().filter(|&id| !consumed.contains(id)));
    }
    let dispenser = Arc::new(Dispenser::new(source, work_plan, dispense_from));
    let versions = Arc::new(VersionSlot::new(snapshot(&learner, version, &sampler_model)));
    let (samplers, transport) = match remote {
        Some(r) => {
            let transport = r.transport();
            (r.start(dispenser.clone(), versions.clone())?, transport)
        }
        None => {
            let transport: Arc<dyn Transport> = Arc::new(InProcess::new(plan.queue));
            let control = Arc::new(Control::new());
            let sampler_config = SamplerConfig {
                slots: plan.slots,
                micro_turn_tokens: exp.rollout.micro_turn_tokens,
                sampling: sampling.clone(),
                max_episode_tokens: exp.rollout.max_episode_tokens,
                threads: plan.sampler_threads,
                deterministic: exp.rollout.max_staleness == 0,
                recompute_on_swap: exp.rollout.kv_on_swap == KvOnSwap::Recompute,
            };
            let engine_config = EngineConfig { samplers: plan.samplers, sampler: sampler_config, reward_workers: plan.reward_workers };
            let shared = Shared { model: sampler_model.clone(), tokenizer: tokenizer.clone(), versions: versions.clone(), work: dispenser.clone(), transport: transport.clone(), control };
            (Samplers::Local(Engine::start(engine_config, "sampler", shared)), transport)
        }
    };
    // Rates are per step; time spent evaluating is left out of the next step's interval.
    let mut last_totals = samplers.totals();
    let mut last_time = Instant::now();
    let mut eval_pause = 0.0;

    let eval_spec = EvalSpec {
        problems: exp.eval.problems,
        samples: exp.eval.samples,
        sampling: sampling.clone(),
        max_episode_tokens: exp.rollout.max_episode_tokens,
        threads: plan.sampler_threads,
        slots: plan.slots.max(64),
    };
    let eval_now = |learner: &Learner, version: u64, sampler_model: &Arc<Model>| -> Result<EvalResult> {
        let (model, snap) = eval_snapshot(learner, version, sampler_model);
        evaluate(model, tokenizer.clone(), snap, &eval_source, &eval_spec)
    };
    if step == 0 {
        let result = eval_now(&learner, version, &sampler_model)?;
        carry.insert("heldout_accuracy_start".into(), json!(result.greedy_accuracy));
        if let Some(s) = result.sampled_accuracy {
            carry.insert("heldout_sampled_accuracy_start".into(), json!(s));
        }
        run.append(METRICS, &eval_line(0, version, &result))?;
        eval_pause += result.seconds;
    }

    let total_steps = exp.rl.steps / exp.rl.updates_per_batch;
    let progress = Progress::new(total_steps, step);
    let mut last_checkpoint = step;
    let mut sampler_model = sampler_model;
    let mut outcome_error: Option<anyhow::Error> = None;
    // Replayed groups sampled ahead of this learner's version, until it gets there.
    let mut held: Vec<Delivery> = Vec::new();
    // Delivered groups the next checkpoint covers; acknowledged (forgotten by a broker) after it.
    let mut unacked: Vec<DeliveryTag> = Vec::new();
    while step < total_steps {
        // One batch: the next groups_per_step groups, each checked.
        let wait_start = Instant::now();
        let received = match receive_batch(transport.as_ref(), &samplers, &consumed, &mut held, version, &exp) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                outcome_error = Some(e);
                break;
            }
        };
        // Only a whole batch counts as consumed: a batch cut short by a stop is sampled again.
        received.ids.iter().for_each(|&id| consumed.add(id));
        counters.add(&received.counts);
        unacked.extend(received.tags);
        let mut batch = received.batch;
        let wait_seconds = wait_start.elapsed().as_secs_f64();
        batch.sort_by_key(|g| g.id);
        let normalizer = exp.rl.normalizer.unwrap_or(exp.rollout.max_new_tokens as f64);
        let (seqs, prepared) = data::sequences(&batch, exp.rl.advantage_std, exp.rl.drop_uniform_groups, exp.rl.normalization, normalizer);
        counters.dropped_uniform += prepared.uniform_groups as u64;
        let staleness = staleness(&seqs, version);
        let m = learner.train_batch(&seqs, version, |learner, v| samplers.publish(&versions, snapshot(learner, v, &sampler_model)))?;
        version += exp.rl.updates_per_batch;
        step += 1;
        if let Trainable::Full { .. } = learner.trainable {
            sampler_model = versions.latest().model.clone().unwrap_or(sampler_model);
        }

        // Metrics of this step.
        let totals = samplers.totals();
        let now = Instant::now();
        let interval = (now.duration_since(last_time).as_secs_f64() - eval_pause).max(1e-9);
        eval_pause = 0.0;
        let mut line = step_line(step, version, &batch, &m, &counters, staleness, interval, wait_seconds);
        line.insert("sampled_tokens_per_s".into(), json!((totals.sampled_tokens - last_totals.sampled_tokens) as f64 / interval));
        // Where the step's time went besides the learner: samplers' forward passes and sampling,
        // and env steps/rewards on the reward pool (summed over threads).
        line.insert("sampler_busy_seconds".into(), json!(totals.busy_seconds - last_totals.busy_seconds));
        line.insert("scoring_seconds".into(), json!(totals.scoring_seconds - last_totals.scoring_seconds));
        if totals.swaps > last_totals.swaps {
            let latency = (totals.swap_latency_seconds - last_totals.swap_latency_seconds) / (totals.swaps - last_totals.swaps) as f64;
            line.insert("swap_latency_ms".into(), json!(latency * 1e3));
        }
        if let Some(trimmed) = samplers.trimmed() {
            line.insert("transport_trimmed".into(), json!(trimmed));
        }
        line.insert("wall_seconds".into(), json!(carry_f64(&carry, "wall_seconds") + started.elapsed().as_secs_f64()));
        last_totals = totals;
        last_time = now;
        let due = |every: u64| every > 0 && step % every == 0;
        if due(exp.eval.every) || step == total_steps {
            let result = eval_now(&learner, version, &sampler_model)?;
            eval_pause += result.seconds;
            line.insert("heldout_accuracy".into(), json!(result.greedy_accuracy));
            if let Some(s) = result.sampled_accuracy {
                line.insert("heldout_sampled_accuracy".into(), json!(s));
                line.insert("heldout_pass_at_k".into(), json!(result.pass_at_k));
            }
        }
        run.append(METRICS, &Value::Object(line.clone()))?;
        if due(exp.run.samples_every) {
            for row in transcripts(step, &batch) {
                run.append(SAMPLES, &row)?;
            }
        }
        progress.step(step, &line);
        if due(exp.eval.every) || due(10) || step == total_steps {
            plot_run(&run)?;
        }
        if due(exp.run.checkpoint_every) {
            save_checkpoint(&run, &learner, &exp, step, version, &dispenser, &consumed, &counters, &carry, started, &fingerprint, &describe, &model_dir)?;
            last_checkpoint = step;
            if let Err(e) = transport.ack(&std::mem::take(&mut unacked)) {
                outcome_error = Some(anyhow!("{e}"));
                break;
            }
        }
        crate::faults::crash_if("after_step", step);
    }
    progress.finish();
    let interrupted = step < total_steps;
    if step > last_checkpoint || (step == 0 && !resume) {
        save_checkpoint(&run, &learner, &exp, step, version, &dispenser, &consumed, &counters, &carry, started, &fingerprint, &describe, &model_dir)?;
        if let Err(e) = transport.ack(&unacked) {
            // Unacknowledged groups are delivered again on resume and dropped there by id.
            tracing::warn!("cannot acknowledge the last groups: {e}");
        }
    }
    if !interrupted && outcome_error.is_none() {
        if let Err(e) = samplers.finish() {
            tracing::warn!("cannot tell the samplers that the run is over: {e}");
        }
    }
    samplers.stop();
    if let Some(e) = outcome_error {
        return Err(e.context(format!("training stopped at step {step} (checkpointed; resume with --resume {})", run.path.display())));
    }
    if interrupted {
        bail!("interrupted at step {step} of {total_steps}; checkpointed, resume with: noregret train --resume {}", run.path.display());
    }

    // The trained result, in formats other tools read.
    match &learner.trainable {
        Trainable::Lora { adapter, .. } => policies::peft::save(adapter, &run.file(ADAPTER), &model_dir.display().to_string())?,
        Trainable::Full { model } => crate::cmd::export::write_checkpoint(model, &model_dir, &run.file("model"))?,
    }
    plot_run(&run)?;
    let summary = summary(&run, &exp, &carry, started, step, trainable_parameters, &counters, &describe);
    run.write_json(SUMMARY, &summary)?;
    Ok(Outcome { run_dir: run.path.clone(), summary })
}

/// How long the learner waits for a group before it says so.
const QUIET_WARNING: Duration = Duration::from_secs(60);

/// One batch's worth of deliveries, checked.
struct Received {
    /// The groups to train on.
    batch: Vec<TrajectoryGroup>,
    /// Every group consumed by this batch (trained, or counted as dropped).
    ids: Vec<u64>,
    tags: Vec<DeliveryTag>,
    counts: Counters,
}

/// The next `groups_per_step` groups from the transport, each checked (see [`admit`]). None when
/// interrupted; an error when the samplers or the transport failed. Duplicates of consumed
/// groups are dropped (and acknowledged with the batch); replayed groups sampled at a version
/// this learner has not reached again wait in `held` until it has.
fn receive_batch(transport: &dyn Transport, samplers: &Samplers, consumed: &Consumed, held: &mut Vec<Delivery>, version: u64, exp: &Experiment) -> Result<Option<Received>> {
    let mut r = Received { batch: Vec::new(), ids: Vec::new(), tags: Vec::new(), counts: Counters::default() };
    let mut quiet_since = Instant::now();
    while r.ids.len() < exp.rollout.groups_per_step {
        if quiet_since.elapsed() >= QUIET_WARNING {
            let hint = if exp.rollout.transport.is_some() { " (is a `noregret sampler` running?)" } else { "" };
            tracing::warn!("no group for {} s; waiting for samplers{hint}", QUIET_WARNING.as_secs());
            quiet_since = Instant::now();
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(failure) = samplers.failure() {
            bail!("{failure}");
        }
        let ready = held.iter().position(|d| d.group.newest_version().is_none_or(|v| v <= version));
        let delivery = match ready {
            Some(i) => held.remove(i),
            None => match transport.recv(Duration::from_millis(100)).map_err(|e| anyhow!("{e}"))? {
                Some(d) => d,
                None => continue,
            },
        };
        quiet_since = Instant::now();
        let g = &delivery.group;
        if consumed.contains(g.id) || r.ids.contains(&g.id) {
            r.counts.duplicates += 1;
            r.tags.push(delivery.tag);
            continue;
        }
        if delivery.replay && g.newest_version().is_some_and(|v| v > version) {
            held.push(delivery);
            continue;
        }
        r.ids.push(g.id);
        r.tags.push(delivery.tag);
        let g = delivery.group;
        match admit(&g, version, exp.rollout.max_staleness) {
            Admission::Train => r.batch.push(g),
            Admission::Skipped => r.counts.skipped += 1,
            Admission::Stale => r.counts.dropped_stale += 1,
            Admission::Refused => {
                tracing::warn!(group = g.id, sampler = %g.sampler, "refusing a group sampled with a version never published");
                r.counts.refused += 1;
            }
        }
    }
    Ok(Some(r))
}

/// What the learner at `version` does with a group that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Train,
    /// A sampler could not play it (e.g. its prompt does not fit): consumed, not trained.
    Skipped,
    /// Its oldest token is more than `max_staleness` versions behind.
    Stale,
    /// A token claims a version the learner never published: the sampler is not using what it
    /// says it is.
    Refused,
}

pub fn admit(g: &TrajectoryGroup, version: u64, max_staleness: u64) -> Admission {
    if g.skipped.is_some() {
        Admission::Skipped
    } else if g.newest_version().is_some_and(|v| v > version) {
        Admission::Refused
    } else if g.oldest_version().is_some_and(|v| v + max_staleness < version) {
        Admission::Stale
    } else {
        Admission::Train
    }
}

/// What samplers get at `version`: a copy of the adapter, or of the fully trained model.
fn snapshot(learner: &Learner, version: u64, base: &Arc<Model>) -> Snapshot {
    match &learner.trainable {
        Trainable::Lora { adapter, .. } => Snapshot::new(version, Some(adapter.snapshot())),
        Trainable::Full { model } => {
            if version == 0 {
                Snapshot::full(0, base.clone())
            } else {
                Snapshot::full(version, Arc::new(model.deep_copy()))
            }
        }
    }
}

/// The model and snapshot an evaluation at `version` uses.
fn eval_snapshot(learner: &Learner, version: u64, sampler_model: &Arc<Model>) -> (Arc<Model>, Snapshot) {
    match &learner.trainable {
        Trainable::Lora { adapter, model, .. } => (model.clone(), Snapshot::new(version, Some(adapter.snapshot()))),
        Trainable::Full { .. } => (sampler_model.clone(), Snapshot::new(version, None)),
    }
}

/// Put a checkpoint's trained tensors and optimiser moments back.
fn restore(learner: &mut Learner, tensors: &TrainTensors, optimizer_steps: i64) -> Result<()> {
    let params = shallow(learner.optimizer.params());
    if params.len() != tensors.params.len() {
        bail!("the checkpoint holds {} trained tensors, this run trains {}", tensors.params.len(), params.len());
    }
    tch::no_grad(|| -> Result<()> {
        for (p, saved) in params.iter().zip(&tensors.params) {
            if p.size() != saved.size() {
                bail!("a trained tensor is {:?} in the checkpoint, {:?} here", saved.size(), p.size());
            }
            p.shallow_clone().copy_(saved);
        }
        Ok(())
    })?;
    learner.optimizer.load_state(&tensors.exp_avg, &tensors.exp_avg_sq, optimizer_steps).map_err(|e| anyhow!(e))
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    run: &RunDir,
    learner: &Learner,
    exp: &Experiment,
    step: u64,
    version: u64,
    dispenser: &Dispenser,
    consumed: &Consumed,
    counters: &Counters,
    carry: &BTreeMap<String, Value>,
    started: Instant,
    fingerprint: &str,
    describe: &str,
    model_dir: &Path,
) -> Result<()> {
    let stream: StreamPosition = dispenser.position(consumed.low, &consumed.above, version);
    let mut carry = carry.clone();
    carry.insert("wall_seconds".into(), json!(carry_f64(&carry, "wall_seconds") + started.elapsed().as_secs_f64()));
    carry.insert("dropped_stale".into(), json!(counters.dropped_stale));
    carry.insert("dropped_uniform".into(), json!(counters.dropped_uniform));
    carry.insert("refused".into(), json!(counters.refused));
    carry.insert("skipped".into(), json!(counters.skipped));
    carry.insert("duplicates".into(), json!(counters.duplicates));
    let (exp_avg, exp_avg_sq, steps) = learner.optimizer.state();
    let state = TrainState {
        format: checkpoint::FORMAT,
        step,
        version,
        optimizer_steps: steps,
        stream,
        model_fingerprint: fingerprint.to_string(),
        trainable: describe.to_string(),
        carry,
        tensors_sha256: String::new(),
    };
    let tensors = TrainTensors { params: shallow(learner.optimizer.params()), exp_avg: shallow(exp_avg), exp_avg_sq: shallow(exp_avg_sq) };
    let base = model_dir.display().to_string();
    let write_peft = |dir: &Path| -> Result<()> {
        if let Some(adapter) = learner.adapter() {
            policies::peft::save(adapter, dir, &base)?;
        }
        Ok(())
    };
    checkpoint::save(run, state, &tensors, exp.run.keep_checkpoints, Some(&write_peft))?;
    Ok(())
}

/// Versions behind the learner of every action token trained on: (mean, max).
fn staleness(seqs: &[Sequence], version: u64) -> (f64, u64) {
    let (mut sum, mut n, mut max) = (0u64, 0u64, 0u64);
    for s in seqs {
        for (a, v) in s.action.iter().zip(&s.versions) {
            if *a {
                let lag = version.saturating_sub(*v);
                sum += lag;
                n += 1;
                max = max.max(lag);
            }
        }
    }
    (if n == 0 { 0.0 } else { sum as f64 / n as f64 }, max)
}

#[allow(clippy::too_many_arguments)]
fn step_line(step: u64, version: u64, batch: &[TrajectoryGroup], m: &StepMetrics, c: &Counters, staleness: (f64, u64), interval: f64, wait: f64) -> Map<String, Value> {
    let episodes: Vec<&rollout::Episode> = batch.iter().flat_map(|g| &g.episodes).collect();
    let n = episodes.len().max(1) as f64;
    let reward_mean = episodes.iter().map(|e| e.reward).sum::<f64>() / n;
    let completion = episodes.iter().map(|e| e.action_tokens() as f64).sum::<f64>() / n;
    let mut line = Map::new();
    line.insert("step".into(), json!(step));
    line.insert("version".into(), json!(version));
    line.insert("reward_mean".into(), json!(reward_mean));
    // The env's and reward's own metrics, averaged (e.g. answer_found: the share of answers the
    // verifier could find).
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for e in &episodes {
        for (k, v) in &e.metrics {
            let s = sums.entry(k.as_str()).or_default();
            s.0 += v;
            s.1 += 1;
        }
    }
    for (k, (sum, count)) in sums {
        line.insert(format!("metrics/{k}"), json!(sum / count as f64));
    }
    let f = |x: f64| json!(x);
    for (k, v) in [
        ("loss", m.loss),
        ("agreement_mean", m.agreement_mean),
        ("agreement_max", m.agreement_max),
        ("kl_sampler", m.kl_sampler),
        ("entropy", m.entropy),
        ("clip_fraction", m.clip_fraction),
        ("is_capped_fraction", m.is_capped_fraction),
        ("grad_norm", m.grad_norm),
        ("lr", m.lr),
        ("staleness_mean", staleness.0),
        ("completion_tokens_mean", completion),
        ("step_seconds", interval),
        ("wait_seconds", wait),
        ("learner_seconds", m.seconds),
        ("learner_tokens_per_s", m.positions as f64 / m.seconds.max(1e-9)),
    ] {
        line.insert(k.into(), f(v));
    }
    if let Some(kl) = m.kl_ref {
        line.insert("kl_ref".into(), json!(kl));
    }
    line.insert("agreement_tokens".into(), json!(m.agreement_tokens));
    line.insert("staleness_max".into(), json!(staleness.1));
    line.insert("episodes".into(), json!(episodes.len()));
    line.insert("dropped_stale".into(), json!(c.dropped_stale));
    line.insert("dropped_uniform".into(), json!(c.dropped_uniform));
    line.insert("refused".into(), json!(c.refused));
    line.insert("skipped".into(), json!(c.skipped));
    line.insert("duplicates".into(), json!(c.duplicates));
    // Which groups this step trained on (uniform ones included): a run's history by id.
    line.insert("groups".into(), json!(batch.iter().map(|g| g.id).collect::<Vec<_>>()));
    line
}

fn eval_line(step: u64, version: u64, r: &EvalResult) -> Value {
    let mut v = json!({"step": step, "version": version, "heldout_accuracy": r.greedy_accuracy});
    if let Some(s) = r.sampled_accuracy {
        v["heldout_sampled_accuracy"] = json!(s);
        v["heldout_pass_at_k"] = json!(r.pass_at_k);
    }
    v
}

/// One batch's first group as transcript lines.
fn transcripts(step: u64, batch: &[TrajectoryGroup]) -> Vec<Value> {
    batch
        .iter()
        .take(1)
        .flat_map(|g| {
            g.episodes.iter().map(move |e| {
                json!({"step": step, "group": g.id, "problem": g.problem.id, "prompt": g.prompt, "completion": e.completion,
                       "gold": g.problem.answer, "reward": e.reward, "finish_reason": e.finish_reason})
            })
        })
        .collect()
}

/// `training.png`: reward and held-out accuracy against step, from metrics.jsonl alone.
pub fn plot_run(run: &RunDir) -> Result<()> {
    let lines = run.read_lines(METRICS);
    let series = |key: &str| -> Vec<(f64, f64)> {
        lines.iter().filter_map(|l| Some((l.get("step")?.as_f64()?, l.get(key)?.as_f64()?))).collect()
    };
    let mut reward = plot::Chart::new("training reward", "step", "mean reward");
    let raw = series("reward_mean");
    // Per-step rewards are noisy (a batch is a few problems): a moving mean shows the trend.
    let window = (raw.len() / 30).clamp(1, 50);
    let smooth: Vec<(f64, f64)> = (0..raw.len())
        .map(|i| {
            let w = &raw[i.saturating_sub(window - 1)..=i];
            (raw[i].0, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
        })
        .collect();
    reward.series.push(plot::Series::new("per step", raw));
    reward.series.push(plot::Series::new(format!("mean of {window} steps"), smooth));
    let mut acc = plot::Chart::new("held-out accuracy", "step", "accuracy");
    acc.series.push(plot::Series::new("greedy", series("heldout_accuracy")));
    let sampled = series("heldout_sampled_accuracy");
    if !sampled.is_empty() {
        acc.series.push(plot::Series::new("sampled", sampled));
    }
    acc.y_range = Some((0.0, 1.0));
    plot::write_grid(&run.file("training.png"), &[reward, acc], 2).with_context(|| format!("{}: cannot write the plot", run.path.display()))
}

#[allow(clippy::too_many_arguments)]
fn summary(run: &RunDir, exp: &Experiment, carry: &BTreeMap<String, Value>, started: Instant, steps: u64, trainable: i64, c: &Counters, describe: &str) -> Value {
    let lines = run.read_lines(METRICS);
    let evals: Vec<&Value> = lines.iter().filter(|l| l.get("heldout_accuracy").is_some()).collect();
    let rewards: Vec<f64> = lines.iter().filter_map(|l| l.get("reward_mean").and_then(Value::as_f64)).collect();
    let mean = |xs: &[f64]| if xs.is_empty() { Value::Null } else { json!(xs.iter().sum::<f64>() / xs.len() as f64) };
    let k = rewards.len().min(10);
    let mut s = json!({
        "base_model": exp.model.path,
        "trained": describe,
        "trainable_parameters": trainable,
        "steps": steps,
        "wall_seconds": carry_f64(carry, "wall_seconds") + started.elapsed().as_secs_f64(),
        "heldout_accuracy_start": carry.get("heldout_accuracy_start").cloned().unwrap_or(Value::Null),
        "heldout_accuracy_end": evals.last().and_then(|l| l.get("heldout_accuracy")).cloned().unwrap_or(Value::Null),
        "reward_first_steps": mean(&rewards[..k]),
        "reward_last_steps": mean(&rewards[rewards.len() - k..]),
        "dropped_stale": c.dropped_stale,
        "dropped_uniform": c.dropped_uniform,
        "refused": c.refused,
        "skipped": c.skipped,
        "adapter": if exp.adapter.rank.lora().is_some() { json!(run.file(ADAPTER)) } else { Value::Null },
    });
    if let Some(v) = carry.get("heldout_sampled_accuracy_start") {
        s["heldout_sampled_accuracy_start"] = v.clone();
        s["heldout_sampled_accuracy_end"] = evals.last().and_then(|l| l.get("heldout_sampled_accuracy")).cloned().unwrap_or(Value::Null);
    }
    s
}

fn shallow(tensors: &[tch::Tensor]) -> Vec<tch::Tensor> {
    tensors.iter().map(tch::Tensor::shallow_clone).collect()
}

fn carry_u64(carry: &BTreeMap<String, Value>, key: &str) -> u64 {
    carry.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn carry_f64(carry: &BTreeMap<String, Value>, key: &str) -> f64 {
    carry.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A progress bar on a terminal; a plain line now and then otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
}

impl Progress {
    fn new(total: u64, done: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_position(done);
            bar
        });
        Progress { bar, total }
    }

    fn step(&self, step: u64, line: &Map<String, Value>) {
        let get = |k: &str| line.get(k).and_then(Value::as_f64);
        let mut msg = format!("reward {:.3}", get("reward_mean").unwrap_or(f64::NAN));
        if let Some(acc) = get("heldout_accuracy") {
            msg.push_str(&format!("  held-out {acc:.3}"));
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(msg);
            }
            None => {
                let every = (self.total / 20).max(1);
                if step.is_multiple_of(every) || step == self.total || get("heldout_accuracy").is_some() {
                    eprintln!("step {step}/{}  {msg}", self.total);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(versions: &[u64], skipped: bool) -> TrajectoryGroup {
        let episode = rollout::Episode {
            tokens: vec![1; 2 + versions.len()],
            prompt_len: 2,
            action: vec![true; versions.len()],
            logprobs: vec![0.0; versions.len()],
            versions: versions.to_vec(),
            reward: 0.0,
            metrics: Default::default(),
            finish_reason: policies::FinishReason::Eos,
            turns: 1,
            completion: String::new(),
        };
        TrajectoryGroup {
            id: 0,
            epoch: 0,
            problem: envs::Problem { id: "p".into(), question: "q".into(), answer: "a".into() },
            prompt: String::new(),
            episodes: if skipped { Vec::new() } else { vec![episode] },
            sampler: "s".into(),
            skipped: skipped.then(|| "too long".to_string()),
        }
    }

    #[test]
    fn groups_are_checked_against_the_learners_version() {
        // Learner at version 5, lag budget 2: versions 3..=5 are fine.
        assert_eq!(admit(&group(&[3, 4, 5], false), 5, 2), Admission::Train);
        assert_eq!(admit(&group(&[2, 5], false), 5, 2), Admission::Stale);
        // A token claiming version 6 was not sampled with anything the learner published.
        assert_eq!(admit(&group(&[5, 6], false), 5, 2), Admission::Refused);
        assert_eq!(admit(&group(&[], true), 5, 2), Admission::Skipped);
        // Synchronous: only the current version.
        assert_eq!(admit(&group(&[4], false), 5, 0), Admission::Stale);
    }

    #[test]
    fn consumed_groups_advance_a_low_watermark() {
        let mut c = Consumed::default();
        for id in [1, 3, 0] {
            c.add(id);
        }
        assert_eq!((c.low, c.above.iter().copied().collect::<Vec<_>>()), (2, vec![3]));
        c.add(2);
        assert_eq!((c.low, c.above.len()), (4, 0));
    }
}
