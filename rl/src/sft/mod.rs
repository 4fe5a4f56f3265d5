//! `noregret sft`: supervised fine-tuning, cross-entropy on completion tokens only, with LoRA
//! (any rank and targets), full fine-tuning, or from random weights. Same run directory,
//! checkpoints and resume as `train`; metrics are the train and held-out log loss (and, for
//! problems, held-out greedy accuracy).

pub mod config;
pub mod data;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use envs::Cursor;
use policies::{Adapter, LoraConfig, LoraPacker, Model, SamplingParams};
use rollout::{Snapshot, StreamPosition};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

use crate::checkpoint::{self, TrainState, TrainTensors};
use crate::learner::data::micro_batches;
use crate::learner::Trainable;
use crate::optim::{AdamW, AdamWConfig};
use crate::run_dir::{RunDir, ADAPTER, CONFIG, METRICS, SUMMARY};
use crate::train::{Outcome, INTERRUPTED};
use config::{Schedule, SftExperiment};
use data::{tokenize, Source, Tokenized};

pub fn run(exp: SftExperiment, resume: bool, threads_flag: Option<i32>) -> Result<Outcome> {
    let started = Instant::now();
    let run = if resume { RunDir::open(exp.out_dir())? } else { RunDir::create(exp.out_dir())? };
    if !resume {
        run.write(CONFIG, crate::config::to_toml(&exp)?.as_bytes())?;
    }
    let cores = crate::plan::ThreadPlan::cores(threads_flag);
    policies::threads::set_thread_budget(cores);
    // The starting checkpoint: given, or random weights written into the run first.
    let model_dir = match (&exp.model.path, &exp.model.init) {
        (Some(path), _) => path.clone(),
        (None, Some(init)) => {
            let dir = run.file("init");
            if !dir.join("config.json").exists() {
                policies::init::write_random_checkpoint(&dir, &init.shape()?, exp.run.seed, init.init_std)?;
            }
            dir
        }
        (None, None) => unreachable!("checked when loading the config"),
    };
    let policy = crate::model_args::load_policy(&model_dir, exp.model.dtype.as_deref(), &exp.model.device)?;
    let fingerprint = policies::weights::fingerprint(&model_dir)?;
    let tokenizer = Arc::new(policy.tokenizer);
    let (mut trainable, describe) = match exp.adapter.rank.lora() {
        Some(rank) => {
            let model = Arc::new(policy.model);
            let targets = policies::lora::parse_targets(&exp.adapter.targets)?;
            let mut config = LoraConfig::new(rank, exp.adapter.alpha, targets)?;
            config.rslora = exp.adapter.rslora;
            let adapter = match &exp.adapter.init {
                Some(dir) => policies::peft::load(dir, &model)?,
                None => Adapter::init(&model.config, config, exp.run.seed, model.device()),
            };
            let describe = format!("lora r={} alpha={} targets={:?} rslora={}", adapter.config.rank, adapter.config.alpha, adapter.config.targets, adapter.config.rslora);
            let packer = LoraPacker::new(&model.config, &[&adapter])?;
            (Trainable::Lora { model, adapter, packer }, describe)
        }
        None => (Trainable::Full { model: Box::new(policy.model) }, "full".to_string()),
    };
    let params = match &mut trainable {
        Trainable::Lora { adapter, .. } => adapter.parameters(),
        Trainable::Full { model } => model.full_parameters(),
    };
    let trainable_parameters: i64 = params.iter().map(|t| t.numel() as i64).sum();
    let s = &exp.sft;
    let mut opt = AdamW::new(params, AdamWConfig { lr: s.lr, beta1: s.beta1, beta2: s.beta2, eps: s.eps, weight_decay: s.weight_decay });

    let source = Source::build(&exp.data)?;
    let heldout: Vec<Tokenized> = source.heldout(exp.eval.loss_examples).iter().map(|e| tokenize(&tokenizer, e)).collect::<Result<_>>()?;
    let accuracy_env = exp.data.problems.as_ref().filter(|_| exp.eval.accuracy_problems > 0).map(|p| {
        envs::EnvConfig { problems: p.clone(), template: exp.data.template.clone(), group_size: 1, ..Default::default() }
    });
    let accuracy_source = accuracy_env.map(|env| env.build(None)).transpose().map_err(|e| anyhow!("[data.problems]: {e}"))?;

    let (mut step, mut cursor, mut carry) = if resume {
        let (state, tensors, dir) = checkpoint::latest(&run, &fingerprint, &describe)?;
        restore(&mut opt, &tensors, state.optimizer_steps).with_context(|| format!("{}: cannot restore", dir.display()))?;
        run.truncate_after(METRICS, state.step)?;
        eprintln!("resuming {} from {} (step {})", run.path.display(), dir.display(), state.step);
        (state.step, state.stream.cursor, state.carry)
    } else {
        (0, Cursor::default(), BTreeMap::new())
    };

    let evaluate = |trainable: &Trainable| -> Result<(f64, Option<f64>)> {
        let loss = heldout_loss(trainable, &heldout, exp.sft.micro_batch_tokens)?;
        let accuracy = match &accuracy_source {
            Some(src) => {
                let (model, snap) = eval_model(trainable);
                let spec = crate::eval::EvalSpec {
                    problems: Some(exp.eval.accuracy_problems),
                    samples: 0,
                    sampling: SamplingParams { temperature: 0.0, max_new_tokens: exp.eval.max_new_tokens, ..Default::default() },
                    max_episode_tokens: 4096,
                    threads: cores,
                    slots: 256,
                };
                Some(crate::eval::evaluate(model, tokenizer.clone(), snap, src, &spec)?.greedy_accuracy)
            }
            None => None,
        };
        Ok((loss, accuracy))
    };
    if step == 0 {
        let (loss, acc) = evaluate(&trainable)?;
        carry.insert("heldout_loss_start".into(), json!(loss));
        if let Some(a) = acc {
            carry.insert("heldout_accuracy_start".into(), json!(a));
        }
        run.append(METRICS, &json!({"step": 0, "heldout_loss": loss, "heldout_accuracy": acc}))?;
    }
    let show = std::io::stderr().is_terminal();
    while step < s.steps {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let t0 = Instant::now();
        let lr = lr_at(&exp.sft, step);
        opt.set_lr(lr);
        opt.zero_grad();
        let batch: Vec<Tokenized> = (0..s.batch_size).map(|_| source.next(&mut cursor).and_then(|e| tokenize(&tokenizer, &e))).collect::<Result<_>>()?;
        let total: usize = batch.iter().map(|t| t.tokens.len() - t.prompt_len).sum();
        let mut loss_sum = 0.0;
        let mut positions = 0usize;
        for range in micro_batches(&batch.iter().map(|t| t.tokens.len()).collect::<Vec<_>>(), s.micro_batch_tokens) {
            let (tokens, mask) = tensors(&batch[range], trainable.model())?;
            positions += tokens.numel();
            let lora = trainable.lora()?;
            let logp = trainable.model().token_logprobs(&tokens, lora.as_ref());
            let nll = -(logp * &mask).sum(Kind::Float);
            loss_sum += nll.double_value(&[]);
            (nll / total.max(1) as f64).backward();
        }
        let grad_norm = opt.clip_grad_norm(s.max_grad_norm);
        opt.step();
        step += 1;
        let seconds = t0.elapsed().as_secs_f64();
        let mut line = Map::new();
        line.insert("step".into(), json!(step));
        line.insert("train_loss".into(), json!(loss_sum / total.max(1) as f64));
        line.insert("lr".into(), json!(lr));
        line.insert("grad_norm".into(), json!(grad_norm));
        line.insert("step_seconds".into(), json!(seconds));
        line.insert("tokens_per_s".into(), json!(positions as f64 / seconds.max(1e-9)));
        let due = |every: u64| every > 0 && step % every == 0;
        if due(exp.eval.every) || step == s.steps {
            let (loss, acc) = evaluate(&trainable)?;
            line.insert("heldout_loss".into(), json!(loss));
            if let Some(a) = acc {
                line.insert("heldout_accuracy".into(), json!(a));
            }
            let acc_text = acc.map(|a| format!("  held-out accuracy {a:.3}")).unwrap_or_default();
            eprintln!("step {step}/{}  train loss {:.4}  held-out loss {loss:.4}{acc_text}", s.steps, loss_sum / total.max(1) as f64);
        } else if show && step % 50 == 0 {
            eprintln!("step {step}/{}  train loss {:.4}", s.steps, loss_sum / total.max(1) as f64);
        }
        line.insert("wall_seconds".into(), json!(carry_f64(&carry, "wall_seconds") + started.elapsed().as_secs_f64()));
        run.append(METRICS, &Value::Object(line))?;
        if due(exp.eval.every) || step == s.steps {
            plot_loss(&run)?;
        }
        if due(exp.run.checkpoint_every) && step < s.steps {
            save(&run, &trainable, &opt, step, cursor, &carry, started, &fingerprint, &describe, exp.run.keep_checkpoints, &model_dir)?;
        }
    }
    save(&run, &trainable, &opt, step, cursor, &carry, started, &fingerprint, &describe, exp.run.keep_checkpoints, &model_dir)?;
    if step < s.steps {
        bail!("interrupted at step {step} of {}; checkpointed, resume with: noregret sft --resume {}", s.steps, run.path.display());
    }
    match &trainable {
        Trainable::Lora { adapter, .. } => policies::peft::save(adapter, &run.file(ADAPTER), &model_dir.display().to_string())?,
        Trainable::Full { model } => crate::cmd::export::write_checkpoint(model, &model_dir, &run.file("model"))?,
    }
    plot_loss(&run)?;
    let lines = run.read_lines(METRICS);
    let last = |k: &str| lines.iter().rev().find_map(|l| l.get(k).cloned()).unwrap_or(Value::Null);
    let summary = json!({
        "base_model": model_dir,
        "trained": describe,
        "trainable_parameters": trainable_parameters,
        "steps": step,
        "wall_seconds": carry_f64(&carry, "wall_seconds") + started.elapsed().as_secs_f64(),
        "heldout_loss_start": carry.get("heldout_loss_start").cloned().unwrap_or(Value::Null),
        "heldout_loss_end": last("heldout_loss"),
        "heldout_accuracy_start": carry.get("heldout_accuracy_start").cloned().unwrap_or(Value::Null),
        "heldout_accuracy_end": last("heldout_accuracy"),
        "output": if exp.adapter.rank.lora().is_some() { run.file(ADAPTER) } else { run.file("model") },
    });
    run.write_json(SUMMARY, &summary)?;
    Ok(Outcome { run_dir: run.path.clone(), summary })
}

/// The learning rate at step `step` (0-based): linear warmup, then constant or cosine to min_lr.
pub fn lr_at(s: &config::SftSection, step: u64) -> f64 {
    if step < s.warmup_steps {
        return s.lr * (step + 1) as f64 / s.warmup_steps as f64;
    }
    match s.schedule {
        Schedule::Constant => s.lr,
        Schedule::Cosine => {
            let span = s.steps.saturating_sub(s.warmup_steps).max(1) as f64;
            let t = ((step - s.warmup_steps) as f64 / span).min(1.0);
            s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

/// Right-padded tokens [B, T] and the completion mask [B, T-1] (target i is token i + 1).
fn tensors(batch: &[Tokenized], model: &Model) -> Result<(Tensor, Tensor)> {
    let width = batch.iter().map(|t| t.tokens.len()).max().unwrap_or(2).max(2);
    model.check_len(width)?;
    let mut tokens = vec![0i64; batch.len() * width];
    let mut mask = vec![0f32; batch.len() * (width - 1)];
    for (r, t) in batch.iter().enumerate() {
        tokens[r * width..r * width + t.tokens.len()].copy_from_slice(&t.tokens);
        for p in t.prompt_len.max(1)..t.tokens.len() {
            mask[r * (width - 1) + p - 1] = 1.0;
        }
    }
    let device = model.device();
    Ok((
        Tensor::from_slice(&tokens).view([batch.len() as i64, width as i64]).to_device(device),
        Tensor::from_slice(&mask).view([batch.len() as i64, width as i64 - 1]).to_device(device),
    ))
}

/// Mean negative log-likelihood per completion token over the held-out examples.
fn heldout_loss(trainable: &Trainable, heldout: &[Tokenized], max_tokens: usize) -> Result<f64> {
    if heldout.is_empty() {
        return Ok(f64::NAN);
    }
    let _guard = tch::no_grad_guard();
    let lora = trainable.lora()?;
    let (mut sum, mut n) = (0.0, 0.0);
    for range in micro_batches(&heldout.iter().map(|t| t.tokens.len()).collect::<Vec<_>>(), max_tokens) {
        let (tokens, mask) = tensors(&heldout[range], trainable.model())?;
        let logp = trainable.model().token_logprobs(&tokens, lora.as_ref());
        sum -= (logp * &mask).sum(Kind::Double).double_value(&[]);
        n += mask.sum(Kind::Double).double_value(&[]);
    }
    Ok(sum / n.max(1.0))
}

/// The model and snapshot an accuracy evaluation uses now.
fn eval_model(trainable: &Trainable) -> (Arc<Model>, Snapshot) {
    match trainable {
        Trainable::Lora { model, adapter, .. } => (model.clone(), Snapshot::new(0, Some(adapter.snapshot()))),
        Trainable::Full { model } => (Arc::new(model.deep_copy()), Snapshot::new(0, None)),
    }
}

fn restore(opt: &mut AdamW, tensors: &TrainTensors, optimizer_steps: i64) -> Result<()> {
    if opt.params().len() != tensors.params.len() {
        bail!("the checkpoint holds {} trained tensors, this run trains {}", tensors.params.len(), opt.params().len());
    }
    tch::no_grad(|| -> Result<()> {
        for (p, saved) in opt.params().iter().zip(&tensors.params) {
            if p.size() != saved.size() {
                bail!("a trained tensor is {:?} in the checkpoint, {:?} here", saved.size(), p.size());
            }
            p.shallow_clone().copy_(saved);
        }
        Ok(())
    })?;
    opt.load_state(&tensors.exp_avg, &tensors.exp_avg_sq, optimizer_steps).map_err(|e| anyhow!(e))
}

#[allow(clippy::too_many_arguments)]
fn save(
    run: &RunDir,
    trainable: &Trainable,
    opt: &AdamW,
    step: u64,
    cursor: Cursor,
    carry: &BTreeMap<String, Value>,
    started: Instant,
    fingerprint: &str,
    describe: &str,
    keep: usize,
    model_dir: &std::path::Path,
) -> Result<()> {
    let mut carry = carry.clone();
    carry.insert("wall_seconds".into(), json!(carry_f64(&carry, "wall_seconds") + started.elapsed().as_secs_f64()));
    let (exp_avg, exp_avg_sq, steps) = opt.state();
    let shallow = |ts: &[Tensor]| ts.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
    let state = TrainState {
        format: checkpoint::FORMAT,
        step,
        version: step,
        optimizer_steps: steps,
        stream: StreamPosition { cursor, consumed_after: Default::default(), version: step },
        model_fingerprint: fingerprint.to_string(),
        trainable: describe.to_string(),
        carry,
        tensors_sha256: String::new(),
    };
    let tensors = TrainTensors { params: shallow(opt.params()), exp_avg: shallow(exp_avg), exp_avg_sq: shallow(exp_avg_sq) };
    let base = model_dir.display().to_string();
    let write_peft = |dir: &std::path::Path| -> Result<()> {
        if let Trainable::Lora { adapter, .. } = trainable {
            policies::peft::save(adapter, dir, &base)?;
        }
        Ok(())
    };
    checkpoint::save(run, state, &tensors, keep, Some(&write_peft))?;
    Ok(())
}

/// `loss.png`: train and held-out log loss against step (log scale).
pub fn plot_loss(run: &RunDir) -> Result<()> {
    let lines = run.read_lines(METRICS);
    let series = |key: &str| -> Vec<(f64, f64)> { lines.iter().filter_map(|l| Some((l.get("step")?.as_f64()?, l.get(key)?.as_f64()?))).collect() };
    let mut chart = plot::Chart::new("SFT log loss", "step", "nats per completion token");
    chart.y_scale = plot::Scale::Log10;
    chart.series.push(plot::Series::new("train", series("train_loss")));
    chart.series.push(plot::Series::new("held-out", series("heldout_loss")));
    let mut charts = vec![chart];
    let acc = series("heldout_accuracy");
    if !acc.is_empty() {
        let mut c = plot::Chart::new("held-out greedy accuracy", "step", "accuracy");
        c.series.push(plot::Series::new("greedy", acc));
        c.y_range = Some((0.0, 1.0));
        charts.push(c);
    }
    let columns = charts.len();
    plot::write_grid(&run.file("loss.png"), &charts, columns).with_context(|| format!("{}: cannot write the plot", run.path.display()))
}

fn carry_f64(carry: &BTreeMap<String, Value>, key: &str) -> f64 {
    carry.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

