//! LoRA adapters: W' = W + (α/r)·B·A on any of a decoder's linear layers.
//!
//! Two forms of the same adapter:
//! - [`Adapter`]: the trainable leaves, one (A, B) pair per targeted module, named as PEFT names
//!   them. A ~ U(±1/√fan_in) from a seed and B = 0, so a fresh adapter is the base model exactly.
//! - [`LoraRuntime`]: what the forward pass consumes. Modules that the model computes as one fused
//!   matmul (q|k|v, gate|up) get one stacked A and one block-diagonal B with α/r folded in, so an
//!   adapter costs two small matmuls per fused group. Several adapters stack along the rank axis;
//!   a per-row mask keeps each row to its own adapter's columns (or none), so one forward serves
//!   many adapters without a loop over rows.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::invalid;
use crate::rng::SplitMix;

/// A linear layer that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Module {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    LmHead,
    /// The token embedding (PEFT's `lora_embedding_A/B`): the "input" is a one-hot token.
    Embed,
}

impl Module {
    pub const LAYER_MODULES: [Module; 7] =
        [Module::Q, Module::K, Module::V, Module::O, Module::Gate, Module::Up, Module::Down];

    /// The HF/PEFT module name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Module::Q => "q_proj",
            Module::K => "k_proj",
            Module::V => "v_proj",
            Module::O => "o_proj",
            Module::Gate => "gate_proj",
            Module::Up => "up_proj",
            Module::Down => "down_proj",
            Module::LmHead => "lm_head",
            Module::Embed => "embed_tokens",
        }
    }

    /// Parent path inside a decoder layer (`self_attn` or `mlp`); None for lm_head and embed_tokens.
    pub fn block(self) -> Option<&'static str> {
        match self {
            Module::Q | Module::K | Module::V | Module::O => Some("self_attn"),
            Module::Gate | Module::Up | Module::Down => Some("mlp"),
            Module::LmHead | Module::Embed => None,
        }
    }

    pub fn from_hf_name(name: &str) -> Option<Module> {
        let all = Module::LAYER_MODULES.iter().chain(&[Module::LmHead, Module::Embed]);
        all.copied().find(|m| m.hf_name() == name)
    }

    /// (in_features, out_features) of this module in `cfg`.
    pub fn shape(self, cfg: &ModelConfig) -> (i64, i64) {
        let h = cfg.hidden_size;
        match self {
            Module::Q => (h, cfg.q_dim()),
            Module::K | Module::V => (h, cfg.kv_dim()),
            Module::O => (cfg.q_dim(), h),
            Module::Gate | Module::Up => (h, cfg.intermediate_size),
            Module::Down => (cfg.intermediate_size, h),
            Module::LmHead => (h, cfg.vocab_size),
            Module::Embed => (cfg.vocab_size, h),
        }
    }
}

/// Parse a target spec: `all` (every linear layer of the blocks), `attn`, `mlp`, or a
/// comma-separated list of HF module names (`q_proj,v_proj,lm_head`).
pub fn parse_targets(spec: &str) -> Result<Vec<Module>> {
    use Module::*;
    let mut out = match spec.trim() {
        "all" | "all-linear" => Module::LAYER_MODULES.to_vec(),
        "attn" => vec![Q, K, V, O],
        "mlp" => vec![Gate, Up, Down],
        list => list
            .split(',')
            .map(|s| {
                Module::from_hf_name(s.trim()).ok_or_else(|| {
                    invalid!("unknown LoRA target {:?} (expected all, attn, mlp or names such as q_proj, down_proj, lm_head, embed_tokens)", s.trim())
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(invalid!("no LoRA targets in {spec:?}"));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: i64,
    pub alpha: f64,
    pub targets: Vec<Module>,
    /// Rank-stabilised scaling α/√r instead of α/r (PEFT's `use_rslora`).
    pub rslora: bool,
}

impl LoraConfig {
    pub fn new(rank: i64, alpha: f64, targets: Vec<Module>) -> Result<Self> {
        if !(1..=512).contains(&rank) {
            return Err(invalid!("LoRA rank must be in 1..=512, got {rank}"));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(invalid!("LoRA alpha must be positive, got {alpha}"));
        }
        Ok(LoraConfig { rank, alpha, targets, rslora: false })
    }
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// One module's low-rank pair: A [r, in], B [out, r] (views into the adapter's flat buffer).
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
}

/// Where each (layer, module) pair lives in the flat buffer. `None` layer: lm_head or embed_tokens.
#[derive(Debug, Clone)]
struct Slot {
    layer: Option<usize>,
    module: Module,
    a_offset: i64,
    a_shape: [i64; 2],
    b_offset: i64,
    b_shape: [i64; 2],
}

/// A trainable adapter. All of its numbers live in one f32 buffer (`flat`, the only leaf that
/// requires grad), and each (A, B) is a view into it: the optimiser updates one tensor with a
/// handful of ops however many modules are adapted, and its state is exactly 2 × the adapter.
pub struct Adapter {
    pub config: LoraConfig,
    flat: Tensor,
    slots: Vec<Slot>,
    pub layers: Vec<BTreeMap<Module, LoraPair>>,
    pub lm_head: Option<LoraPair>,
    pub embed: Option<LoraPair>,
}

impl Adapter {
    /// A fresh adapter: A ~ U(±1/√fan_in) from `seed`, B = 0, in f32 (adapters train in f32
    /// whatever the base dtype is), with gradients on.
    pub fn init(cfg: &ModelConfig, config: LoraConfig, seed: u64, device: Device) -> Adapter {
        let slots = layout(cfg, &config);
        let num_layers = cfg.num_layers as usize;
        let total = slots.last().map(|s| s.b_offset + s.b_shape[0] * s.b_shape[1]).unwrap_or(0);
        let mut values = vec![0f32; total as usize];
        let mut rng = SplitMix::new(seed);
        for slot in &slots {
            let bound = 1.0 / (slot.a_shape[1] as f64).sqrt();
            let a = &mut values[slot.a_offset as usize..(slot.a_offset + slot.a_shape[0] * slot.a_shape[1]) as usize];
            for v in a {
                *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
            }
        }
        Self::from_flat(config, num_layers, slots, Tensor::from_slice(&values).to_device(device))
    }

    /// An adapter with the given tensors (PEFT loading): `tensors` maps (layer, module) to (A, B).
    pub fn from_pairs(cfg: &ModelConfig, config: LoraConfig, pairs: &BTreeMap<(Option<usize>, Module), (Tensor, Tensor)>, device: Device) -> Result<Adapter> {
        let slots = layout(cfg, &config);
        let mut parts = Vec::with_capacity(slots.len() * 2);
        for slot in &slots {
            let Some((a, b)) = pairs.get(&(slot.layer, slot.module)) else {
                return Err(invalid!("adapter lacks {} of layer {:?}", slot.module.hf_name(), slot.layer));
            };
            if a.size() != slot.a_shape || b.size() != slot.b_shape {
                return Err(invalid!(
                    "{} of layer {:?}: lora_A {:?} / lora_B {:?}, expected {:?} / {:?}",
                    slot.module.hf_name(), slot.layer, a.size(), b.size(), slot.a_shape, slot.b_shape
                ));
            }
            parts.push(a.to_kind(Kind::Float).reshape([-1]));
            parts.push(b.to_kind(Kind::Float).reshape([-1]));
        }
        let flat = if parts.is_empty() { Tensor::zeros([0], (Kind::Float, Device::Cpu)) } else { Tensor::cat(&parts, 0) };
        Ok(Self::from_flat(config, cfg.num_layers as usize, slots, flat.to_device(device)))
    }

    /// An adapter whose numbers are `values`, in [`Adapter::parameters`]' order (e.g. received
    /// from a learner on another machine); refused if the length does not fit `config` on `cfg`.
    pub fn from_values(cfg: &ModelConfig, config: LoraConfig, values: &[f32], device: Device) -> Result<Adapter> {
        let slots = layout(cfg, &config);
        let total = slots.last().map(|s| s.b_offset + s.b_shape[0] * s.b_shape[1]).unwrap_or(0);
        if values.len() as i64 != total {
            return Err(invalid!("adapter of {} numbers, expected {total} for rank {} on this model", values.len(), config.rank));
        }
        Ok(Self::from_flat(config, cfg.num_layers as usize, slots, Tensor::from_slice(values).to_device(device)))
    }

    fn from_flat(config: LoraConfig, num_layers: usize, slots: Vec<Slot>, flat: Tensor) -> Adapter {
        let flat = flat.detach().set_requires_grad(true);
        // Views are made with grad mode on, so gradients reach `flat` through them.
        let view = |offset: i64, shape: [i64; 2]| tch::with_grad(|| flat.narrow(0, offset, shape[0] * shape[1]).view(shape));
        let mut layers: Vec<BTreeMap<Module, LoraPair>> = (0..num_layers).map(|_| BTreeMap::new()).collect();
        let (mut lm_head, mut embed) = (None, None);
        for s in &slots {
            let pair = LoraPair { a: view(s.a_offset, s.a_shape), b: view(s.b_offset, s.b_shape) };
            match s.layer {
                Some(i) => {
                    layers[i].insert(s.module, pair);
                }
                None if s.module == Module::Embed => embed = Some(pair),
                None => lm_head = Some(pair),
            }
        }
        Adapter { config, flat, slots, layers, lm_head, embed }
    }

    /// Every A and B with its PEFT key, in a fixed order.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (m, pair) in layer {
                let prefix = format!("base_model.model.model.layers.{i}.{}.{}", m.block().unwrap_or(""), m.hf_name());
                out.push((format!("{prefix}.lora_A.weight"), &pair.a));
                out.push((format!("{prefix}.lora_B.weight"), &pair.b));
            }
        }
        if let Some(pair) = &self.lm_head {
            out.push(("base_model.model.lm_head.lora_A.weight".into(), &pair.a));
            out.push(("base_model.model.lm_head.lora_B.weight".into(), &pair.b));
        }
        if let Some(pair) = &self.embed {
            out.push(("base_model.model.model.embed_tokens.lora_embedding_A".into(), &pair.a));
            out.push(("base_model.model.model.embed_tokens.lora_embedding_B".into(), &pair.b));
        }
        out
    }

    /// The one trainable tensor (all of A and B, flattened).
    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.flat.shallow_clone()]
    }

    /// Overwrite every number with `values` (a flat f32 buffer of the same length, e.g. from a
    /// checkpoint of [`Adapter::parameters`]).
    pub fn set_flat(&self, values: &Tensor) -> Result<()> {
        if values.size() != self.flat.size() {
            return Err(invalid!("adapter buffer of {:?} numbers, expected {:?}", values.size(), self.flat.size()));
        }
        tch::no_grad(|| self.flat.shallow_clone().copy_(&values.to_kind(Kind::Float).to_device(self.flat.device())));
        Ok(())
    }

    pub fn num_parameters(&self) -> i64 {
        self.flat.numel() as i64
    }

    /// A detached copy (for publishing a snapshot to samplers while training goes on).
    pub fn snapshot(&self) -> Adapter {
        let flat = tch::no_grad(|| self.flat.detach().copy());
        Self::from_flat(self.config.clone(), self.layers.len(), self.slots.clone(), flat)
    }

    /// Draw every B from N(0, std²), seeded: an adapter that changes the model, for tests and
    /// benchmarks of the adapter path (training starts from B = 0).
    pub fn randomize_b(&self, std: f64, seed: u64) {
        let mut rng = SplitMix::new(seed);
        let mut values = Vec::<f32>::try_from(&self.flat.detach().to_device(Device::Cpu)).unwrap_or_default();
        for slot in &self.slots {
            let range = slot.b_offset as usize..(slot.b_offset + slot.b_shape[0] * slot.b_shape[1]) as usize;
            for v in &mut values[range] {
                // Box-Muller: two uniforms, one standard normal.
                let (u1, u2) = (1.0 - rng.next_f64(), rng.next_f64());
                *v = (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32;
            }
        }
        let fresh = Tensor::from_slice(&values).to_device(self.flat.device());
        tch::no_grad(|| self.flat.shallow_clone().copy_(&fresh));
    }

    /// The dense update (α/r)·B·A for one module, for merging.
    pub fn delta(&self, layer: Option<usize>, m: Module) -> Option<Tensor> {
        let pair = match layer {
            Some(i) => self.layers.get(i)?.get(&m)?,
            None if m == Module::Embed => self.embed.as_ref()?,
            None => self.lm_head.as_ref()?,
        };
        Some(pair.b.detach().matmul(&pair.a.detach()) * self.config.scale())
    }
}

/// Flat-buffer positions of every targeted module, layer by layer, then lm_head, then embed_tokens.
fn layout(cfg: &ModelConfig, config: &LoraConfig) -> Vec<Slot> {
    let r = config.rank;
    let mut slots = Vec::new();
    let mut offset = 0;
    let mut push = |layer: Option<usize>, module: Module| {
        let (fan_in, fan_out) = module.shape(cfg);
        let a_offset = offset;
        let b_offset = a_offset + r * fan_in;
        offset = b_offset + fan_out * r;
        slots.push(Slot { layer, module, a_offset, a_shape: [r, fan_in], b_offset, b_shape: [fan_out, r] });
    };
    for i in 0..cfg.num_layers as usize {
        for &m in config.targets.iter().filter(|m| m.block().is_some()) {
            push(Some(i), m);
        }
    }
    if config.targets.contains(&Module::LmHead) {
        push(None, Module::LmHead);
    }
    if config.targets.contains(&Module::Embed) {
        push(None, Module::Embed);
    }
    slots
}

/// The fused groups of a decoder layer, in the order the model computes them.
pub const GROUPS: [&[Module]; 4] =
    [&[Module::Q, Module::K, Module::V], &[Module::O], &[Module::Gate, Module::Up], &[Module::Down]];
pub const GROUP_QKV: usize = 0;
pub const GROUP_O: usize = 1;
pub const GROUP_GATE_UP: usize = 2;
pub const GROUP_DOWN: usize = 3;
/// Groups outside the layers.
pub const OUTER_HEAD: usize = 0;
pub const OUTER_EMBED: usize = 1;
const OUTER_MODULES: [Module; 2] = [Module::LmHead, Module::Embed];

/// One fused group's low-rank factors for the forward pass: delta = ((x·Aᵀ) ⊙ mask)·Bᵀ.
pub struct PackedGroup {
    /// [in, R]: the A rows of every module of the group, of every adapter, transposed.
    pub a_t: Tensor,
    /// [R, out], B transposed with α/r folded in, block-diagonal over modules and adapters.
    pub b_t: Tensor,
    /// Which adapter (1-based slot) owns each of the R columns, for building row masks.
    owners: Vec<i64>,
    /// Where b_t may be non-zero: (first rank, end rank, first column, end column) per module of
    /// each adapter.
    pub blocks: Vec<[i64; 4]>,
}

/// Per layer group and per outer group, [rows, R] 0/1 masks routing rows to their adapter.
pub(crate) type RowMasks = (Vec<[Option<Tensor>; 4]>, [Option<Tensor>; 2]);

/// Adapters ready for the forward pass: one or several, and which rows use which.
pub struct LoraRuntime {
    pub(crate) layers: Vec<[Option<PackedGroup>; 4]>,
    /// lm_head and embed_tokens (indexed by OUTER_HEAD / OUTER_EMBED).
    pub(crate) outer: [Option<PackedGroup>; 2],
    /// Per group, [rows, R] 0/1 masks; None when every row uses the single adapter.
    pub(crate) masks: Option<RowMasks>,
    kind: Kind,
}

impl LoraRuntime {
    /// One adapter for every row. Differentiable: built from the adapter's leaves, so a
    /// backward pass through the forward reaches them.
    pub fn single(cfg: &ModelConfig, adapter: &Adapter, kind: Kind) -> Result<LoraRuntime> {
        Self::stack(cfg, &[adapter], kind)
    }

    /// Several adapters side by side; call [`LoraRuntime::with_rows`] to say which row uses which.
    pub fn stack(cfg: &ModelConfig, adapters: &[&Adapter], kind: Kind) -> Result<LoraRuntime> {
        LoraPacker::new(cfg, adapters)?.pack(adapters, kind)
    }

    /// Route row b to adapter `rows[b]` (0-based index into the stacked adapters) or to none.
    pub fn with_rows(mut self, rows: &[Option<usize>], device: Device) -> LoraRuntime {
        let slots: Vec<i64> = rows.iter().map(|r| r.map(|i| i as i64 + 1).unwrap_or(0)).collect();
        let mask = |g: &PackedGroup| {
            let m: Vec<f32> = slots
                .iter()
                .flat_map(|&s| g.owners.iter().map(move |&o| if o == s { 1.0 } else { 0.0 }))
                .collect();
            Tensor::from_slice(&m).reshape([slots.len() as i64, g.owners.len() as i64]).to_kind(self.kind).to_device(device)
        };
        let layer_masks = self.layers.iter().map(|groups| groups.each_ref().map(|g| g.as_ref().map(&mask))).collect();
        let outer_masks = self.outer.each_ref().map(|g| g.as_ref().map(&mask));
        self.masks = Some((layer_masks, outer_masks));
        self
    }

    fn group(&self, layer: Option<usize>, group: usize) -> (Option<&PackedGroup>, Option<&Tensor>) {
        match layer {
            Some(i) => (self.layers[i][group].as_ref(), self.masks.as_ref().and_then(|(m, _)| m[i][group].as_ref())),
            None => (self.outer[group].as_ref(), self.masks.as_ref().and_then(|(_, o)| o[group].as_ref())),
        }
    }

    /// The group when every row uses one adapter and it is being trained: the case the learner
    /// ops serve ([`crate::kernels::linear_lora`], [`crate::kernels::linear_plus_update`]).
    pub(crate) fn trainable_group(&self, layer: usize, group: usize) -> Option<&PackedGroup> {
        let p = self.layers[layer][group].as_ref()?;
        (self.masks.is_none() && crate::kernels::needs_grad(&[&p.a_t])).then_some(p)
    }

    /// Add the group's low-rank update to `y` (= x·Wᵀ), with x [N, in] and y [N, out], where the
    /// N rows are `rows` batch rows of `n / rows` tokens each. `layer` None means an outer group.
    pub(crate) fn apply(&self, layer: Option<usize>, group: usize, x: &Tensor, y: Tensor, rows: i64) -> Tensor {
        let (packed, mask) = self.group(layer, group);
        let Some(p) = packed else { return y };
        let sampling = !crate::kernels::needs_grad(&[x, &p.a_t, &y]);
        if sampling && crate::kernels::applies(x) && p.a_t.size()[1] <= crate::kernels::LORA_ADD_MAX_RANK {
            // Both products in one pass per row, one call instead of two.
            return crate::kernels::lora_add(y, x, &p.a_t, &p.b_t, mask);
        }
        Self::add_update(x.matmul(&p.a_t), p, mask, y, rows)
    }

    /// Add the embedding adapter's update to `x` (= embed[tokens], [N, H]): A's column for each
    /// token, then B, like a linear layer whose input is a one-hot vector.
    pub(crate) fn apply_embed(&self, tokens: &Tensor, x: Tensor, rows: i64) -> Tensor {
        let (packed, mask) = self.group(None, OUTER_EMBED);
        let Some(p) = packed else { return x };
        Self::add_update(p.a_t.index_select(0, tokens), p, mask, x, rows)
    }

    fn add_update(xa: Tensor, p: &PackedGroup, mask: Option<&Tensor>, y: Tensor, rows: i64) -> Tensor {
        let xa = match mask {
            // Rows are batch rows of equal token count: broadcast each row's mask over its tokens.
            Some(m) => {
                let r = m.size()[1];
                (xa.reshape([rows, -1, r]) * m.unsqueeze(1)).reshape([-1, r])
            }
            None => xa,
        };
        // In place: `y` is always a fresh matmul output that autograd has not saved, and
        // writing into it saves a full pass over [tokens, out] and an allocation per group.
        let mut y = y;
        let _ = y.addmm_(&xa, &p.b_t);
        y
    }
}

/// Where one fused group sits in the packed buffer.
#[derive(Debug, Clone)]
struct GroupPlan {
    /// Index of the group's A among the packed buffer's consecutive parts; its B is the next.
    part: usize,
    fan_in: i64,
    rank: i64,
    fan_out: i64,
    owners: Vec<i64>,
    blocks: Vec<[i64; 4]>,
}

/// Turns adapters into a [`LoraRuntime`] with three tensor ops, whatever the number of layers:
/// the stacked A's and block-diagonal B's of every group are one `index_select` from the
/// adapters' flat buffers (zeros come from an appended 0), times a per-entry scale. Build it once
/// per set of adapter layouts and call [`LoraPacker::pack`] whenever the numbers change (every
/// learner step, every published snapshot). Differentiable: gradients flow back to the buffers.
pub struct LoraPacker {
    gather: Tensor,
    scale: Tensor,
    /// Lengths of the consecutive A and B parts of the packed buffer, group by group.
    parts: Vec<i64>,
    layers: Vec<[Option<GroupPlan>; 4]>,
    outer: [Option<GroupPlan>; 2],
    /// Flat-buffer sizes of the adapters this packer was planned for.
    sizes: Vec<i64>,
}

impl LoraPacker {
    pub fn new(cfg: &ModelConfig, adapters: &[&Adapter]) -> Result<LoraPacker> {
        for a in adapters {
            if a.layers.len() != cfg.num_layers as usize {
                return Err(invalid!("adapter has {} layers, model has {}", a.layers.len(), cfg.num_layers));
            }
        }
        let sizes: Vec<i64> = adapters.iter().map(|a| a.flat.numel() as i64).collect();
        let zero_index: i64 = sizes.iter().sum();
        let bases: Vec<i64> = sizes.iter().scan(0, |acc, &n| { let b = *acc; *acc += n; Some(b) }).collect();
        let mut gather: Vec<i64> = Vec::new();
        let mut scale: Vec<f32> = Vec::new();
        let mut parts: Vec<i64> = Vec::new();
        let mut plan_group = |layer: Option<usize>, modules: &[Module]| -> Option<GroupPlan> {
            // Columns: for each adapter, for each of its modules in this group, `rank` columns.
            let mut cols: Vec<(usize, &Slot, i64)> = Vec::new(); // (adapter, slot, row of A)
            for (k, a) in adapters.iter().enumerate() {
                for m in modules {
                    if let Some(slot) = a.slots.iter().find(|s| s.layer == layer && s.module == *m) {
                        cols.extend((0..slot.a_shape[0]).map(|r| (k, slot, r)));
                    }
                }
            }
            if cols.is_empty() {
                return None;
            }
            let fan_in = modules[0].shape(cfg).0;
            let outs: Vec<(Module, i64)> = modules.iter().map(|m| (*m, m.shape(cfg).1)).collect();
            let fan_out: i64 = outs.iter().map(|(_, o)| o).sum();
            let rank = cols.len() as i64;
            let part = parts.len();
            parts.push(fan_in * rank);
            parts.push(rank * fan_out);
            // a_t [in, R]: entry (i, c) = A[r, i] of column c's module.
            for i in 0..fan_in {
                for &(k, slot, r) in &cols {
                    gather.push(bases[k] + slot.a_offset + r * fan_in + i);
                    scale.push(1.0);
                }
            }
            // b_t [R, out]: entry (c, o) = scale·B[o - offset, r] inside c's module block, else 0.
            for &(k, slot, r) in &cols {
                let s = adapters[k].config.scale() as f32;
                for &(m, out) in &outs {
                    for o in 0..out {
                        if m == slot.module {
                            gather.push(bases[k] + slot.b_offset + o * slot.b_shape[1] + r);
                            scale.push(s);
                        } else {
                            gather.push(zero_index);
                            scale.push(0.0);
                        }
                    }
                }
            }
            let owners = cols.iter().map(|&(k, _, _)| k as i64 + 1).collect();
            // A block per (adapter, module): its rank columns are consecutive, and so are its
            // output columns.
            let mut blocks: Vec<[i64; 4]> = Vec::new();
            for (c, &(k, slot, _)) in cols.iter().enumerate() {
                let continues = c > 0 && cols[c - 1].0 == k && cols[c - 1].1.module == slot.module;
                match blocks.last_mut() {
                    Some(block) if continues => block[1] += 1,
                    _ => {
                        let start: i64 = outs.iter().take_while(|(m, _)| *m != slot.module).map(|(_, o)| o).sum();
                        let width = slot.module.shape(cfg).1;
                        blocks.push([c as i64, c as i64 + 1, start, start + width]);
                    }
                }
            }
            Some(GroupPlan { part, fan_in, rank, fan_out, owners, blocks })
        };
        let layers = (0..cfg.num_layers as usize)
            .map(|i| {
                let mut groups: [Option<GroupPlan>; 4] = Default::default();
                for (g, modules) in GROUPS.iter().enumerate() {
                    groups[g] = plan_group(Some(i), modules);
                }
                groups
            })
            .collect();
        let outer = OUTER_MODULES.map(|m| plan_group(None, &[m]));
        let device = adapters.first().map(|a| a.flat.device()).unwrap_or(Device::Cpu);
        Ok(LoraPacker {
            gather: Tensor::from_slice(&gather).to_device(device),
            scale: Tensor::from_slice(&scale).to_device(device),
            parts,
            layers,
            outer,
            sizes,
        })
    }

    /// Pack the adapters' current numbers (same layouts as at construction) in `kind`.
    pub fn pack(&self, adapters: &[&Adapter], kind: Kind) -> Result<LoraRuntime> {
        let sizes: Vec<i64> = adapters.iter().map(|a| a.flat.numel() as i64).collect();
        if sizes != self.sizes {
            return Err(invalid!("adapters do not match the packer's layout ({sizes:?} vs {:?})", self.sizes));
        }
        let device = self.gather.device();
        let mut sources: Vec<Tensor> = adapters.iter().map(|a| a.flat.shallow_clone()).collect();
        sources.push(Tensor::zeros([1], (Kind::Float, device)));
        let packed = (Tensor::cat(&sources, 0).index_select(0, &self.gather) * &self.scale).to_kind(kind);
        // One split, not a narrow per part: in training, each narrow's backward zero-fills a
        // gradient the size of the whole buffer (64 of them per step on the small preset).
        let parts = packed.split_with_sizes(&self.parts, 0);
        let group = |p: &GroupPlan| PackedGroup {
            a_t: parts[p.part].view([p.fan_in, p.rank]),
            b_t: parts[p.part + 1].view([p.rank, p.fan_out]),
            owners: p.owners.clone(),
            blocks: p.blocks.clone(),
        };
        Ok(LoraRuntime {
            layers: self.layers.iter().map(|gs| gs.each_ref().map(|g| g.as_ref().map(group))).collect(),
            outer: self.outer.each_ref().map(|g| g.as_ref().map(group)),
            masks: None,
            kind,
        })
    }
}

impl LoraRuntime {
    /// The same adapters for a batch made of `rows` of this one (masks follow their rows).
    pub fn select_rows(&self, rows: &[usize]) -> LoraRuntime {
        let index = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
        let pick = |m: &Tensor| m.index_select(0, &index.to_device(m.device()));
        let share = |g: &PackedGroup| PackedGroup {
            a_t: g.a_t.shallow_clone(),
            b_t: g.b_t.shallow_clone(),
            owners: g.owners.clone(),
            blocks: g.blocks.clone(),
        };
        LoraRuntime {
            layers: self.layers.iter().map(|gs| gs.each_ref().map(|g| g.as_ref().map(share))).collect(),
            outer: self.outer.each_ref().map(|g| g.as_ref().map(share)),
            masks: self.masks.as_ref().map(|(layers, outer)| {
                (layers.iter().map(|ms| ms.each_ref().map(|m| m.as_ref().map(pick))).collect(), outer.each_ref().map(|m| m.as_ref().map(pick)))
            }),
            kind: self.kind,
        }
    }
}
