//! The policy-gradient learner: it scores a batch's sequences with the live adapter (or every
//! weight, in full fine-tuning), under the same temperature and truncation they were sampled
//! with, and takes optimiser steps on a loss from [`loss`].
//!
//! Per batch: the first update's forward passes also measure how well sampler and learner
//! agree (|log π_sampler − log π_learner| on tokens of the current version), the policy's
//! entropy, and the KL to the base model when asked. Its log-probs, without gradient, are
//! `prox`: the reference the loss ratio starts from (1 on the first update), and against which
//! each token's truncated importance weight corrects for the version that sampled it.

pub mod advantages;
pub mod data;
pub mod loss;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use policies::sampling::{behaviour_logprobs, SamplingParams};
use policies::{Adapter, LoraPacker, LoraRuntime, Model};
use tch::{Device, Kind, Tensor};

use crate::experiment::RlSection;
use crate::optim::{scheduled_lr, AdamW, AdamWConfig};
use data::Sequence;
use loss::PolicyLoss;

/// What the learner trains (one per run, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum Trainable {
    /// An adapter on a shared, frozen base model.
    Lora { model: Arc<Model>, adapter: Adapter, packer: LoraPacker },
    /// Every weight of the learner's own copy of the model.
    Full { model: Box<Model> },
}

impl Trainable {
    pub fn model(&self) -> &Model {
        match self {
            Trainable::Lora { model, .. } => model,
            Trainable::Full { model } => model,
        }
    }

    /// The adapter packed from its live numbers (with gradients), if training one.
    pub(crate) fn lora(&self) -> Result<Option<LoraRuntime>> {
        Ok(match self {
            Trainable::Lora { adapter, packer, model } => Some(packer.pack(&[adapter], model.kind())?),
            Trainable::Full { .. } => None,
        })
    }
}

/// Learner figures of one batch (averages over its action tokens unless named otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMetrics {
    pub loss: f64,
    /// |behaviour − learner| log-prob on tokens of the current version: mean and max.
    pub agreement_mean: f64,
    pub agreement_max: f64,
    pub agreement_tokens: usize,
    /// KL(sampler ‖ learner), k3 estimate over all action tokens.
    pub kl_sampler: f64,
    /// KL(learner ‖ base model), k3, when kl_coef > 0.
    pub kl_ref: Option<f64>,
    pub entropy: f64,
    pub clip_fraction: f64,
    /// Share of tokens whose importance weight hit the cap.
    pub is_capped_fraction: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Padded positions through forward and backward.
    pub positions: usize,
    pub seconds: f64,
}

pub struct Learner {
    pub trainable: Trainable,
    pub optimizer: AdamW,
    loss: Box<dyn PolicyLoss>,
    rl: RlSection,
    /// How the samplers drew tokens: the learner scores them the same way.
    sampling: SamplingParams,
    pad: i64,
}

/// Per micro-batch, what the first update computed and later ones reuse.
struct Reference {
    prox: Tensor,
    ref_logp: Option<Tensor>,
}

impl Learner {
    pub fn new(mut trainable: Trainable, rl: &RlSection, sampling: SamplingParams) -> Result<Learner> {
        if rl.kl_coef > 0.0 && matches!(trainable, Trainable::Full { .. }) {
            bail!("[rl] kl_coef needs an adapter: full fine-tuning keeps no copy of the base model to compare with");
        }
        let params = match &mut trainable {
            Trainable::Lora { adapter, .. } => adapter.parameters(),
            Trainable::Full { model } => model.full_parameters(),
        };
        let config = AdamWConfig { lr: rl.lr, beta1: rl.beta1, beta2: rl.beta2, eps: rl.eps, weight_decay: rl.weight_decay };
        Ok(Learner { trainable, optimizer: AdamW::new(params, config), loss: loss::build(rl), rl: rl.clone(), sampling, pad: 0 })
    }

    /// `updates_per_batch` optimiser steps on `seqs`, all of whose tokens' versions are at most
    /// `version` (the learner's current one). `published(v)` is called after each step with the
    /// new version number. Returns the batch's figures.
    pub fn train_batch(&mut self, seqs: &[Sequence], version: u64, mut published: impl FnMut(&Learner, u64) -> Result<()>) -> Result<StepMetrics> {
        let started = Instant::now();
        let mut m = StepMetrics::default();
        if seqs.is_empty() {
            // Nothing to learn from (every group uniform): no update, but the versions advance
            // so that step and version keep counting together.
            for u in 0..self.rl.updates_per_batch {
                m.lr = scheduled_lr(self.rl.lr, self.rl.warmup_steps, version + u);
                published(self, version + u + 1)?;
            }
            m.seconds = started.elapsed().as_secs_f64();
            return Ok(m);
        }
        let lengths: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        let batches = data::micro_batches(&lengths, self.rl.micro_batch_tokens);
        let mut refs: Vec<Reference> = Vec::with_capacity(batches.len());
        let (mut agree_sum, mut kl_sampler, mut kl_ref, mut entropy, mut clipped, mut capped, mut tokens) =
            (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        for u in 0..self.rl.updates_per_batch {
            self.optimizer.zero_grad();
            let mut loss_total = 0.0;
            for (b, range) in batches.iter().enumerate() {
                let mb = &seqs[range.clone()];
                let inputs = self.inputs(mb, version)?;
                m.positions += inputs.tokens.numel();
                let lora = self.trainable.lora()?;
                let model = self.trainable.model();
                let (logp, logp_all) = self.score(model, &inputs.tokens, lora.as_ref());
                if u == 0 {
                    let prox = logp.detach();
                    let ref_logp = if self.rl.kl_coef > 0.0 {
                        let _guard = tch::no_grad_guard();
                        Some(self.score(model, &inputs.tokens, None).0)
                    } else {
                        None
                    };
                    tch::no_grad(|| {
                        let mask = &inputs.mask;
                        let n = mask.sum(Kind::Double).double_value(&[]);
                        tokens += n;
                        let diff = (&prox - &inputs.behaviour).abs() * &inputs.current;
                        agree_sum += diff.sum(Kind::Double).double_value(&[]);
                        m.agreement_max = m.agreement_max.max(diff.max().double_value(&[]));
                        m.agreement_tokens += inputs.current.sum(Kind::Double).double_value(&[]) as usize;
                        kl_sampler += (loss::kl_k3(&prox, &inputs.behaviour) * mask).sum(Kind::Double).double_value(&[]);
                        if let Some(r) = &ref_logp {
                            kl_ref += (loss::kl_k3(&prox, r) * mask).sum(Kind::Double).double_value(&[]);
                        }
                        // Entropy of the distribution tokens are drawn from (zero-probability
                        // tokens contribute nothing).
                        let p = logp_all.exp();
                        let h = -(p * logp_all.clamp_min(-1e30)).sum_dim_intlist(-1, false, Kind::Float);
                        entropy += (h * mask).sum(Kind::Double).double_value(&[]);
                    });
                    refs.push(Reference { prox, ref_logp });
                }
                let r = &refs[b];
                let (per_token, was_clipped) = self.loss.per_token(&logp, &r.prox, &inputs.advantages);
                let weight = loss::stale_weight(&r.prox, &inputs.behaviour, self.rl.is_cap);
                let mut total = weight.shallow_clone() * per_token;
                if let Some(ref_logp) = &r.ref_logp {
                    total += loss::kl_k3(&logp, ref_logp) * self.rl.kl_coef;
                }
                let batch_loss = (total * &inputs.weights).sum(Kind::Float);
                loss_total += batch_loss.double_value(&[]);
                batch_loss.backward();
                tch::no_grad(|| {
                    // Over every update: the first one's ratios are all 1.
                    clipped += (was_clipped * &inputs.mask).sum(Kind::Double).double_value(&[]);
                    if u == 0 {
                        capped += (weight.ge(self.rl.is_cap).to_kind(Kind::Float) * &inputs.mask).sum(Kind::Double).double_value(&[]);
                    }
                });
            }
            m.loss = loss_total;
            self.optimizer_step(version + u, &mut m);
            published(self, version + u + 1)?;
        }
        let n = tokens.max(1.0);
        m.agreement_mean = agree_sum / (m.agreement_tokens.max(1) as f64);
        m.kl_sampler = kl_sampler / n;
        m.kl_ref = (self.rl.kl_coef > 0.0).then_some(kl_ref / n);
        m.entropy = entropy / n;
        m.clip_fraction = clipped / (n * self.rl.updates_per_batch as f64);
        m.is_capped_fraction = capped / n;
        m.seconds = started.elapsed().as_secs_f64();
        Ok(m)
    }

    /// Clip, set the scheduled LR for step `step` (0-based) and update.
    fn optimizer_step(&mut self, step: u64, m: &mut StepMetrics) {
        m.grad_norm = self.optimizer.clip_grad_norm(self.rl.max_grad_norm);
        m.lr = scheduled_lr(self.rl.lr, self.rl.warmup_steps, step);
        self.optimizer.set_lr(m.lr);
        self.optimizer.step();
    }

    /// Log-probs of each target token [B, T-1] (with gradient when the model or adapter has
    /// one) and of the whole vocabulary [B, T-1, V], under the sampling temperature/truncation.
    fn score(&self, model: &Model, tokens: &Tensor, lora: Option<&LoraRuntime>) -> (Tensor, Tensor) {
        let t = tokens.size()[1];
        let hidden = model.forward_hidden(tokens, lora).split_with_sizes([t - 1, 1], 1).swap_remove(0);
        let logits = model.logits(&hidden, lora);
        let logp_all = behaviour_logprobs(&logits, &self.sampling);
        let targets = tokens.narrow(1, 1, t - 1).unsqueeze(-1);
        (logp_all.gather(2, &targets, false).squeeze_dim(-1), logp_all)
    }

    /// A micro-batch as tensors: tokens right-padded, and per target position the action mask,
    /// behaviour log-probs, advantages, loss weights and whether the token is of the current
    /// version (for the agreement figure).
    fn inputs(&self, seqs: &[Sequence], version: u64) -> Result<Inputs> {
        let model = self.trainable.model();
        let width = seqs.iter().map(|s| s.tokens.len()).max().unwrap_or(2).max(2);
        model.check_len(width)?;
        let rows = seqs.len();
        let mut tokens = vec![self.pad; rows * width];
        let t = width - 1;
        let (mut mask, mut behaviour, mut adv, mut weights, mut current) =
            (vec![0f32; rows * t], vec![0f32; rows * t], vec![0f32; rows * t], vec![0f32; rows * t], vec![0f32; rows * t]);
        for (r, s) in seqs.iter().enumerate() {
            tokens[r * width..r * width + s.tokens.len()].copy_from_slice(&s.tokens);
            for (i, &is_action) in s.action.iter().enumerate() {
                if is_action {
                    let k = r * t + i;
                    mask[k] = 1.0;
                    behaviour[k] = s.behaviour[i];
                    adv[k] = s.advantage as f32;
                    weights[k] = s.token_weight as f32;
                    current[k] = if s.versions[i] == version { 1.0 } else { 0.0 };
                }
            }
        }
        let device = model.device();
        let f = |v: Vec<f32>| Tensor::from_slice(&v).view([rows as i64, t as i64]).to_device(device);
        Ok(Inputs {
            tokens: Tensor::from_slice(&tokens).view([rows as i64, width as i64]).to_device(device),
            mask: f(mask),
            behaviour: f(behaviour),
            advantages: f(adv),
            weights: f(weights),
            current: f(current),
        })
    }

    /// The adapter being trained (None in full fine-tuning).
    pub fn adapter(&self) -> Option<&Adapter> {
        match &self.trainable {
            Trainable::Lora { adapter, .. } => Some(adapter),
            Trainable::Full { .. } => None,
        }
    }
}

struct Inputs {
    tokens: Tensor,
    mask: Tensor,
    behaviour: Tensor,
    advantages: Tensor,
    weights: Tensor,
    current: Tensor,
}

/// Put a tensor on the CPU as f32 (for metrics and files).
pub fn to_cpu(t: &Tensor) -> Tensor {
    t.detach().to_kind(Kind::Float).to_device(Device::Cpu)
}
