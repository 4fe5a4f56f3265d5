//! The decoder: Llama 3, Qwen2 and Qwen3 in one readable file. It computes what transformers
//! computes (same op order, RMSNorm in f32, HF's rotary convention) so log-probs match to 1e-4.
//!
//! Speed choices: q|k|v and gate|up are each one fused matmul; activations stay 2-D ([tokens,
//! features]) except inside attention; LoRA adds a low-rank update per fused group; on the CPU in
//! float32 the fused kernels of `kernels` do the work (see ARCHITECTURE.md).

use std::path::Path;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::invalid;
use crate::kernels::{self, PackedWeight};
use crate::lora::{LoraRuntime, GROUP_DOWN, GROUP_GATE_UP, GROUP_O, GROUP_QKV};
use crate::rope::{self, Rope};
use crate::weights::WeightStore;

/// Longest rotary table built up front; longer contexts than this are refused.
const MAX_ROPE_POSITIONS: i64 = 32768;

/// Above this many rows a matmul's own repacking of the weight costs nothing measurable
/// (bench/packed_gemm_probe.py: +23–30 % at 16–64 rows, ±2 % at 2048), so plain `mm` serves.
const PACKED_MAX_ROWS: i64 = 1024;

/// Projection weights are stored transposed, [in, out]: x·Wᵀ is then a plain x·W, which MKL
/// multiplies without repacking the weight on every call (1.3–1.8× faster at decode batch sizes).
pub struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    /// [hidden, q_dim + 2·kv_dim]: q, k and v side by side.
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Tensor,
    o_bias: Option<Tensor>,
    /// [hidden, 2·intermediate]: gate and up side by side.
    gate_up: Tensor,
    gate_up_bias: Option<Tensor>,
    down: Tensor,
    down_bias: Option<Tensor>,
}

pub struct Model {
    pub config: ModelConfig,
    kind: Kind,
    device: Device,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// [hidden, vocab]; a transposed copy of the embedding when tied (a view in full fine-tuning).
    lm_head: Tensor,
    rope: Rope,
    /// The projection weights pre-packed for matmuls without gradients (sampling, scoring),
    /// built on first use; None where packing does not apply (not f32 on the CPU, no MKL).
    packed: OnceLock<Option<PackedWeights>>,
    /// False once full fine-tuning may change the weights in place (packed copies would go stale).
    weights_fixed: bool,
}

/// Per layer: qkv, o, gate_up, down (the LoRA group order); then the head.
struct PackedWeights {
    layers: Vec<[PackedWeight; 4]>,
    lm_head: PackedWeight,
}

// Safety: libtorch tensors may be read from several threads at once. A loaded model's weights
// are never written in place except by an optimiser in full fine-tuning, and a model being
// fully fine-tuned is owned by the learner, not shared with samplers.
unsafe impl Sync for Model {}

/// Where attention reads keys and values from.
enum Attention<'a> {
    /// A fresh batch from position 0: plain causal attention (training, scoring).
    Causal,
    /// Extend cached rows: write new keys at `write_index`, attend over the first `kv_len`
    /// positions with the additive `bias` [B·kv_heads, T·group, kv_len] (0 or -inf).
    Cached { cache: &'a mut KvCache, write_index: Tensor, bias: Tensor, kv_len: i64 },
    /// The same through the fused CPU kernel: row b's new tokens go to positions lens[b]...
    /// `fresh`: every row is empty (a prefill), so attention is plain causal attention.
    FusedCached { cache: &'a mut KvCache, lens: Tensor, fresh: bool },
}

impl Model {
    /// Load `config.json` and the safetensors weights from `dir`. `dtype` overrides the config's.
    pub fn load(dir: &Path, dtype: Option<Kind>, device: Device) -> Result<Model> {
        if !dir.is_dir() {
            return Err(Error::bad_file(dir, "model directory not found"));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open_dir(dir)?;
        Self::from_store(config, &store, dtype, device)
    }

    pub fn from_store(config: ModelConfig, store: &WeightStore, dtype: Option<Kind>, device: Device) -> Result<Model> {
        let kind = dtype.unwrap_or(config.dtype);
        let c = &config;
        let load = |name: &str, shape: &[i64]| store.load(name, shape, kind, device);
        let load_t = |name: &str, shape: &[i64]| load(name, shape).map(|t| t.tr().contiguous());
        let maybe = |name: &str, shape: &[i64], present: bool| -> Result<Option<Tensor>> {
            if present { load(name, shape).map(Some) } else { Ok(None) }
        };
        let (h, q, kv, i, hd) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.head_dim);
        let mut layers = Vec::with_capacity(c.num_layers as usize);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            let attn = format!("{p}.self_attn");
            let mlp = format!("{p}.mlp");
            let qkv = Tensor::cat(
                &[load(&format!("{attn}.q_proj.weight"), &[q, h])?, load(&format!("{attn}.k_proj.weight"), &[kv, h])?,
                  load(&format!("{attn}.v_proj.weight"), &[kv, h])?],
                0,
            )
            .tr()
            .contiguous();
            let qkv_bias = if c.qkv_bias {
                Some(Tensor::cat(
                    &[load(&format!("{attn}.q_proj.bias"), &[q])?, load(&format!("{attn}.k_proj.bias"), &[kv])?,
                      load(&format!("{attn}.v_proj.bias"), &[kv])?],
                    0,
                ))
            } else {
                None
            };
            let gate_up = Tensor::cat(
                &[load(&format!("{mlp}.gate_proj.weight"), &[i, h])?, load(&format!("{mlp}.up_proj.weight"), &[i, h])?],
                0,
            )
            .tr()
            .contiguous();
            let gate_up_bias = if c.mlp_bias {
                Some(Tensor::cat(&[load(&format!("{mlp}.gate_proj.bias"), &[i])?, load(&format!("{mlp}.up_proj.bias"), &[i])?], 0))
            } else {
                None
            };
            layers.push(Layer {
                input_norm: load(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_norm: load(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                qkv,
                qkv_bias,
                q_norm: maybe(&format!("{attn}.q_norm.weight"), &[hd], c.qk_norm)?,
                k_norm: maybe(&format!("{attn}.k_norm.weight"), &[hd], c.qk_norm)?,
                o: load_t(&format!("{attn}.o_proj.weight"), &[h, q])?,
                o_bias: maybe(&format!("{attn}.o_proj.bias"), &[h], c.o_bias)?,
                gate_up,
                gate_up_bias,
                down: load_t(&format!("{mlp}.down_proj.weight"), &[h, i])?,
                down_bias: maybe(&format!("{mlp}.down_proj.bias"), &[h], c.mlp_bias)?,
            });
        }
        let embed = load("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if c.tie_word_embeddings {
            embed.tr().contiguous()
        } else {
            load_t("lm_head.weight", &[c.vocab_size, h])?
        };
        let norm = load("model.norm.weight", &[h])?;
        let rope = Rope::new(c, c.max_position_embeddings.clamp(1, MAX_ROPE_POSITIONS), kind, device);
        Ok(Model { config, kind, device, embed, layers, norm, lm_head, rope, packed: OnceLock::new(), weights_fixed: true })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn max_positions(&self) -> i64 {
        self.rope.max_positions()
    }

    /// Refuse a sequence of `len` positions that the rotary table does not cover, before a forward
    /// pass would index past it.
    pub fn check_len(&self, len: usize) -> Result<()> {
        if len as i64 > self.max_positions() {
            return Err(invalid!("a sequence of {len} tokens is longer than the model's {} positions", self.max_positions()));
        }
        Ok(())
    }

    /// A KV cache for `rows` sequences of up to `capacity` positions.
    pub fn new_cache(&self, rows: i64, capacity: i64) -> KvCache {
        KvCache::new(&self.config, rows, capacity, self.kind, self.device)
    }

    /// Final hidden states [B, T, H] of a batch of fresh sequences (positions 0..T, causal).
    /// Rows may be right-padded: causal attention keeps padding from affecting real tokens.
    pub fn forward_hidden(&self, tokens: &Tensor, lora: Option<&LoraRuntime>) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens must be [batch, time]");
        let positions = Tensor::arange(t, (Kind::Int64, self.device)).unsqueeze(0).expand([b, t], false);
        self.run(tokens, &positions, Attention::Causal, lora)
    }

    /// Extend the cached sequences: row b gets `counts[b]` new tokens from `tokens[b]` ([B, T],
    /// right-padded). Returns hidden states [B, T, H]; only the first `counts[b]` of row b are
    /// meaningful. The cache rows advance by `counts`.
    pub fn forward_cached(&self, tokens: &Tensor, counts: &[i64], cache: &mut KvCache, lora: Option<&LoraRuntime>) -> Result<Tensor> {
        let (b, t) = tokens.size2()?;
        if b as usize != cache.rows() || counts.len() != cache.rows() {
            return Err(invalid!("forward_cached: {b} rows of tokens, {} counts, {} cache rows", counts.len(), cache.rows()));
        }
        cache.check_room(t)?;
        let longest = cache.lens().iter().zip(counts).map(|(l, n)| l + n).max().unwrap_or(0);
        if longest > self.max_positions() {
            return Err(invalid!("sequence of {longest} positions is longer than the model's {}", self.max_positions()));
        }
        let lens = Tensor::from_slice(cache.lens()).to_device(self.device);
        // Padding past a row's count may run beyond the rotary table (a row that gets no tokens
        // while another gets many); its positions are clamped, its outputs ignored.
        let positions = (lens.unsqueeze(1) + Tensor::arange(t, (Kind::Int64, self.device)).unsqueeze(0))
            .clamp_max(self.max_positions() - 1); // [B, T]
        if kernels::applies(&self.embed) {
            let fresh = cache.lens().iter().all(|&l| l == 0);
            let hidden = self.run(tokens, &positions, Attention::FusedCached { cache: &mut *cache, lens, fresh }, lora);
            cache.advance(counts);
            return Ok(hidden);
        }
        let kv_len = cache.lens().iter().map(|l| l + t).max().unwrap_or(t);
        // Query at absolute position p sees keys 0..=p of its own row.
        let keys = Tensor::arange(kv_len, (Kind::Int64, self.device));
        let visible = keys.view([1, 1, 1, 1, kv_len]).le_tensor(&positions.view([b, 1, t, 1, 1]));
        let (kvh, hd) = (self.config.num_kv_heads, self.config.head_dim);
        let group = self.config.num_heads / kvh;
        let bias = Tensor::zeros([b, kvh, t, group, kv_len], (self.kind, self.device))
            .masked_fill(&visible.logical_not(), f64::NEG_INFINITY)
            .view([b * kvh, t * group, kv_len]);
        let write_index = positions.view([b, 1, t, 1]).expand([b, kvh, t, hd], false).contiguous();
        let hidden = self.run(tokens, &positions, Attention::Cached { cache: &mut *cache, write_index, bias, kv_len }, lora);
        cache.advance(counts);
        Ok(hidden)
    }

    /// Logits [.., V] from final hidden states [.., H] (computed in the model dtype).
    pub fn logits(&self, hidden: &Tensor, lora: Option<&LoraRuntime>) -> Tensor {
        let size = hidden.size();
        let x = hidden.reshape([-1, self.config.hidden_size]);
        let rows = if size.len() == 3 { size[0] } else { x.size()[0] };
        let mut y = match self.packed_for(&x) {
            Some(p) => p.lm_head.matmul(&x, None),
            None => x.mm(&self.lm_head),
        };
        if let Some(l) = lora {
            y = l.apply(None, crate::lora::OUTER_HEAD, &x, y, rows);
        }
        let mut out = size[..size.len() - 1].to_vec();
        out.push(self.config.vocab_size);
        y.reshape(out)
    }

    /// log p(tokens[:, i] | tokens[:, <i]) for i = 1..T, in f32: [B, T-1].
    pub fn token_logprobs(&self, tokens: &Tensor, lora: Option<&LoraRuntime>) -> Tensor {
        let t = tokens.size()[1];
        // split, not narrow: its backward concatenates instead of zero-filling a full-size buffer.
        let hidden = self.forward_hidden(tokens, lora).split_with_sizes([t - 1, 1], 1).swap_remove(0);
        let logp = self.logits(&hidden, lora).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
        logp.gather(2, &tokens.narrow(1, 1, t - 1).unsqueeze(-1), false).squeeze_dim(-1)
    }

    fn run(&self, tokens: &Tensor, positions: &Tensor, mut attention: Attention<'_>, lora: Option<&LoraRuntime>) -> Tensor {
        let (b, t) = (tokens.size()[0], tokens.size()[1]);
        let (cos, sin) = self.rope.tables(positions);
        let flat_tokens = tokens.reshape([-1]);
        let mut x = self.embed.index_select(0, &flat_tokens); // [B·T, H]
        if let Some(l) = lora {
            x = l.apply_embed(&flat_tokens, x, b);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer(i, layer, &x, b, t, &cos, &sin, &mut attention, lora);
        }
        rms_norm(&x, &self.norm, self.config.rms_norm_eps).view([b, t, -1])
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(&self, i: usize, layer: &Layer, x: &Tensor, b: i64, t: i64, cos: &Tensor, sin: &Tensor,
             attention: &mut Attention<'_>, lora: Option<&LoraRuntime>) -> Tensor {
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        // What a projection starts from: the residual stream it adds onto and/or its bias.
        let init_for = |onto: Option<&Tensor>, bias: Option<&Tensor>| match (onto, bias) {
            (Some(r), Some(bias)) => Some(r + bias),
            (Some(r), None) => Some(r.shallow_clone()),
            (None, bias) => bias.map(Tensor::shallow_clone),
        };
        // The adapter being trained on a group, when its update fits the fused learner ops (x's
        // activations on the fused kernels, the base weight frozen, a width they serve).
        let trained = |group: usize, x: &Tensor, w: &Tensor| {
            lora.and_then(|l| l.trainable_group(i, group)).filter(|g| {
                kernels::applies(x) && !w.requires_grad() && g.a_t.size()[1] <= kernels::LINEAR_LORA_MAX_RANK
            })
        };
        // x·W (+ bias) (+ the adapter's update), added onto `onto` when given (the residual
        // stream): one addmm instead of a matmul and an add.
        let project_onto = |onto: Option<&Tensor>, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, group: usize| {
            let init = init_for(onto, bias);
            // Training an adapter: base product and update in one op with a leaner backward.
            if let Some(g) = trained(group, x, w) {
                return kernels::linear_lora(x, w, init.as_ref(), &g.a_t, &g.b_t, &g.blocks);
            }
            let y = match (self.packed_for(x), init) {
                (Some(p), init) => p.layers[i][group].matmul(x, init.as_ref()),
                (None, Some(init)) => init.addmm(x, w),
                (None, None) => x.mm(w),
            };
            match lora {
                Some(l) => l.apply(Some(i), group, x, y, b),
                None => y,
            }
        };
        let project = |x: &Tensor, w: &Tensor, bias: Option<&Tensor>, group: usize| project_onto(None, x, w, bias, group);
        // RMSNorm then a projection; when training an adapter there, the norm also makes x·A.
        let norm_project = |x: &Tensor, norm: &Tensor, w: &Tensor, bias: Option<&Tensor>, group: usize| {
            match trained(group, x, w).filter(|_| norm.kind() == Kind::Float) {
                Some(g) => {
                    let (h, xa) = kernels::rms_norm_lora(x, norm, c.rms_norm_eps, &g.a_t);
                    kernels::linear_plus_update(&h, w, bias, &xa, &g.b_t, &g.blocks)
                }
                None => project(&rms_norm(x, norm, c.rms_norm_eps), w, bias, group),
            }
        };

        let qkv = norm_project(x, &layer.input_norm, &layer.qkv, layer.qkv_bias.as_ref(), GROUP_QKV)
            .view([b, t, nh + 2 * nkv, hd]);
        // Fresh sequences, no q/k norms: rotation and attention in one kernel.
        let one_kernel = matches!(attention, Attention::Causal) && layer.q_norm.is_none()
            && kernels::applies(&qkv) && kernels::causal_attention_fits(hd);
        let attn = if one_kernel {
            // No rotated copy of q and k, and one gradient for qkv. Every row is at positions
            // 0..T, so the first row's tables serve them all (less table to read per query row).
            kernels::rope_causal_attention(&qkv, nh, nkv, &cos.narrow(0, 0, t), &sin.narrow(0, 0, t))
        } else {
            self.attend(i, layer, &qkv, cos, sin, attention)
        };
        let x = project_onto(Some(x), &attn, &layer.o, layer.o_bias.as_ref(), GROUP_O);

        let gu = norm_project(&x, &layer.post_norm, &layer.gate_up, layer.gate_up_bias.as_ref(), GROUP_GATE_UP);
        match trained(GROUP_DOWN, &gu, &layer.down) {
            // SwiGLU makes act·A too.
            Some(g) => {
                let (act, xa) = kernels::silu_mul_lora(&gu, &g.a_t);
                let init = init_for(Some(&x), layer.down_bias.as_ref());
                kernels::linear_plus_update(&act, &layer.down, init.as_ref(), &xa, &g.b_t, &g.blocks)
            }
            None => {
                let act = if kernels::applies(&gu) {
                    kernels::silu_mul(&gu)
                } else {
                    let parts = gu.chunk(2, 1);
                    parts[0].silu() * &parts[1]
                };
                project_onto(Some(&x), &act, &layer.down, layer.down_bias.as_ref(), GROUP_DOWN)
            }
        }
    }

    /// Attention from the fused projection's output qkv [B, T, heads + 2·kv, hd] by way of
    /// separate q, k and v: q/k norms, rotation, then the attention that `attention` asks for.
    /// Returns [B·T, heads·hd].
    fn attend(&self, i: usize, layer: &Layer, qkv: &Tensor, cos: &Tensor, sin: &Tensor, attention: &mut Attention<'_>) -> Tensor {
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (b, t) = (qkv.size()[0], qkv.size()[1]);
        // q and k are rotated together (they share positions). Splits rather than narrows: in
        // training their backward is one concatenation, not a zero-filled gradient per slice.
        let (qk, v) = match (&layer.q_norm, &layer.k_norm) {
            (Some(qn), Some(kn)) => {
                let [q, k, v]: [Tensor; 3] = qkv.split_with_sizes([nh, nkv, nkv], 2).try_into().expect("three parts");
                (Tensor::cat(&[rms_norm(&q, qn, c.rms_norm_eps), rms_norm(&k, kn, c.rms_norm_eps)], 2), v)
            }
            _ => {
                let mut parts = qkv.split_with_sizes([nh + nkv, nkv], 2);
                let v = parts.pop().expect("two parts");
                (parts.pop().expect("two parts"), v)
            }
        };
        match attention {
            Attention::FusedCached { cache, fresh: true, .. } if kernels::causal_attention_fits(hd) => {
                // A prefill is causal attention over the prompts; the per-query cache kernel
                // below is ~15x slower on a 512-token prompt. Then the rotated keys and the
                // values go into the cache.
                let qk = rope::apply(&qk, cos, sin).split_with_sizes([nh, nkv], 2);
                let out = kernels::causal_attention(&qk[0], &qk[1], &v);
                cache.write_from_start(i, &qk[1], &v);
                out
            }
            Attention::FusedCached { cache, lens, .. } => {
                let qk = qk.split_with_sizes([nh, nkv], 2);
                kernels::cached_attention(&qk[0], &qk[1], &v, cos, sin, &mut cache.k[i], &mut cache.v[i], lens)
            }
            Attention::Causal => {
                let qk = rope::apply(&qk, cos, sin).split_with_sizes([nh, nkv], 2);
                let (q, k) = (&qk[0], &qk[1]);
                if kernels::applies(q) && kernels::causal_attention_fits(hd) {
                    kernels::causal_attention(q, k, &v)
                } else {
                    let (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
                    let out = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, nkv != nh);
                    out.transpose(1, 2).reshape([b * t, nh * hd])
                }
            }
            Attention::Cached { cache, write_index, bias, kv_len } => {
                let qk = rope::apply(&qk, cos, sin).split_with_sizes([nh, nkv], 2);
                let (q, k) = (&qk[0], &qk[1]);
                cache.scatter(i, write_index, k, &v);
                let (keys, values) = cache.prefix(i, *kv_len);
                grouped_attention(q, &keys, &values, bias, nkv)
            }
        }
    }

    /// The packed weights, when a product with `x` needs no gradient and packing pays and applies.
    fn packed_for(&self, x: &Tensor) -> Option<&PackedWeights> {
        if !self.weights_fixed || x.size()[0] > PACKED_MAX_ROWS || kernels::needs_grad(&[x]) {
            return None;
        }
        self.packed
            .get_or_init(|| {
                kernels::packing_applies(&self.lm_head).then(|| {
                    let layers = self.layers.iter().map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down].map(PackedWeight::new)).collect();
                    PackedWeights { layers, lm_head: PackedWeight::new(&self.lm_head) }
                })
            })
            .as_ref()
    }

    /// A copy with its own weights (for publishing a fully fine-tuned model to samplers while the
    /// learner keeps changing its own).
    pub fn deep_copy(&self) -> Model {
        let _guard = tch::no_grad_guard();
        let copy = |t: &Tensor| t.detach().copy();
        let maybe = |t: &Option<Tensor>| t.as_ref().map(copy);
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                input_norm: copy(&l.input_norm),
                post_norm: copy(&l.post_norm),
                qkv: copy(&l.qkv),
                qkv_bias: maybe(&l.qkv_bias),
                q_norm: maybe(&l.q_norm),
                k_norm: maybe(&l.k_norm),
                o: copy(&l.o),
                o_bias: maybe(&l.o_bias),
                gate_up: copy(&l.gate_up),
                gate_up_bias: maybe(&l.gate_up_bias),
                down: copy(&l.down),
                down_bias: maybe(&l.down_bias),
            })
            .collect();
        let embed = copy(&self.embed);
        let lm_head = if self.config.tie_word_embeddings { embed.tr().contiguous() } else { copy(&self.lm_head) };
        Model {
            config: self.config.clone(),
            kind: self.kind,
            device: self.device,
            embed,
            layers,
            norm: copy(&self.norm),
            lm_head,
            rope: self.rope.clone(),
            packed: OnceLock::new(),
            weights_fixed: true,
        }
    }

    /// Every base weight under its HF name, with fused tensors split back (for export and for
    /// full fine-tuning's optimiser).
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let c = &self.config;
        let (q, kv, i) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.shallow_clone())];
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let qkv: Vec<Tensor> = layer.qkv.split_with_sizes([q, kv, kv], 1).iter().map(Tensor::tr).collect();
            let gu: Vec<Tensor> = layer.gate_up.split_with_sizes([i, i], 1).iter().map(Tensor::tr).collect();
            out.push((format!("{p}.input_layernorm.weight"), layer.input_norm.shallow_clone()));
            out.push((format!("{p}.post_attention_layernorm.weight"), layer.post_norm.shallow_clone()));
            for (name, t) in ["q_proj", "k_proj", "v_proj"].iter().zip(&qkv) {
                out.push((format!("{p}.self_attn.{name}.weight"), t.shallow_clone()));
            }
            if let Some(bias) = &layer.qkv_bias {
                for (name, t) in ["q_proj", "k_proj", "v_proj"].iter().zip(bias.split_with_sizes([q, kv, kv], 0)) {
                    out.push((format!("{p}.self_attn.{name}.bias"), t));
                }
            }
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                out.push((format!("{p}.self_attn.q_norm.weight"), qn.shallow_clone()));
                out.push((format!("{p}.self_attn.k_norm.weight"), kn.shallow_clone()));
            }
            out.push((format!("{p}.self_attn.o_proj.weight"), layer.o.tr()));
            if let Some(bias) = &layer.o_bias {
                out.push((format!("{p}.self_attn.o_proj.bias"), bias.shallow_clone()));
            }
            out.push((format!("{p}.mlp.gate_proj.weight"), gu[0].shallow_clone()));
            out.push((format!("{p}.mlp.up_proj.weight"), gu[1].shallow_clone()));
            if let Some(bias) = &layer.gate_up_bias {
                let parts = bias.split_with_sizes([i, i], 0);
                out.push((format!("{p}.mlp.gate_proj.bias"), parts[0].shallow_clone()));
                out.push((format!("{p}.mlp.up_proj.bias"), parts[1].shallow_clone()));
            }
            out.push((format!("{p}.mlp.down_proj.weight"), layer.down.tr()));
            if let Some(bias) = &layer.down_bias {
                out.push((format!("{p}.mlp.down_proj.bias"), bias.shallow_clone()));
            }
        }
        out.push(("model.norm.weight".into(), self.norm.shallow_clone()));
        if !c.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.tr()));
        }
        out
    }

    /// The trainable base tensors for full fine-tuning (fused as stored), with gradients on.
    pub fn full_parameters(&mut self) -> Vec<Tensor> {
        self.weights_fixed = false;
        self.packed = OnceLock::new();
        let mut out = vec![self.embed.shallow_clone(), self.norm.shallow_clone()];
        if self.config.tie_word_embeddings {
            // One matrix for both ends, so gradients from the head reach the embedding.
            self.lm_head = self.embed.tr();
        } else {
            out.push(self.lm_head.shallow_clone());
        }
        for l in &self.layers {
            out.extend([&l.input_norm, &l.post_norm, &l.qkv, &l.o, &l.gate_up, &l.down].map(Tensor::shallow_clone));
            for t in [&l.qkv_bias, &l.q_norm, &l.k_norm, &l.o_bias, &l.gate_up_bias, &l.down_bias].into_iter().flatten() {
                out.push(t.shallow_clone());
            }
        }
        for t in &out {
            let _ = t.set_requires_grad(true);
        }
        out
    }

    /// Add each adapter delta into the base weights in place (for export).
    pub fn merge_adapter(&mut self, adapter: &crate::lora::Adapter) -> Result<()> {
        use crate::lora::Module;
        self.packed = OnceLock::new(); // packed from the weights before the merge
        let c = &self.config;
        let (q, kv, i) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let _guard = tch::no_grad_guard();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for m in Module::LAYER_MODULES {
                let Some(delta) = adapter.delta(Some(l), m) else { continue };
                let (target, offset) = match m {
                    Module::Q => (&layer.qkv, 0),
                    Module::K => (&layer.qkv, q),
                    Module::V => (&layer.qkv, q + kv),
                    Module::O => (&layer.o, 0),
                    Module::Gate => (&layer.gate_up, 0),
                    Module::Up => (&layer.gate_up, i),
                    Module::Down => (&layer.down, 0),
                    Module::LmHead | Module::Embed => unreachable!("not a layer module"),
                };
                let rows = delta.size()[0];
                let _ = target.narrow(1, offset, rows).g_add_(&delta.tr().to_kind(self.kind).to_device(self.device));
            }
        }
        if let Some(delta) = adapter.delta(None, Module::Embed) {
            if self.config.tie_word_embeddings {
                return Err(crate::invalid!(
                    "cannot merge an embed_tokens adapter into a model with tied embeddings (the head would change too)"
                ));
            }
            let _ = self.embed.g_add_(&delta.tr().to_kind(self.kind).to_device(self.device));
        }
        if let Some(delta) = adapter.delta(None, Module::LmHead) {
            if self.config.tie_word_embeddings {
                // The merged head differs from the embedding now: write it as its own tensor.
                self.lm_head = self.lm_head.contiguous();
                self.config.tie_word_embeddings = false;
                self.config.raw["tie_word_embeddings"] = serde_json::Value::Bool(false);
            }
            let _ = self.lm_head.g_add_(&delta.tr().to_kind(self.kind).to_device(self.device));
        }
        Ok(())
    }
}

/// Attention of queries q [B, T, heads, hd] over cached keys [B, kv_heads, hd, L] (columns) and
/// values [B, kv_heads, L, hd], with the query heads that share a kv head batched together (no
/// copies of K and V per head). `bias` is [B·kv_heads, T·group, L]: scores, scale and mask are one
/// `baddbmm`. Returns [B·T, heads·hd].
fn grouped_attention(q: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor, kv_heads: i64) -> Tensor {
    let size = q.size();
    let (b, t, heads, hd) = (size[0], size[1], size[2], size[3]);
    let group = heads / kv_heads;
    let len = keys.size()[3];
    // [B, T, kv, g, hd] -> [B·kv, T·g, hd]; for one new token this is a view.
    let q = if t == 1 {
        q.reshape([b * kv_heads, group, hd])
    } else {
        q.reshape([b, t, kv_heads, group, hd]).permute([0, 2, 1, 3, 4]).reshape([b * kv_heads, t * group, hd])
    };
    let keys = keys.reshape([b * kv_heads, hd, len]);
    let values = values.reshape([b * kv_heads, len, hd]);
    let scores = bias.baddbmm(&q, &keys, 1.0, 1.0 / (hd as f64).sqrt());
    let probs = if scores.kind() == Kind::Float {
        scores.softmax(-1, Kind::Float)
    } else {
        scores.softmax(-1, Kind::Float).to_kind(q.kind())
    };
    let out = probs.bmm(&values); // [B·kv, T·g, hd]
    if t == 1 {
        out.reshape([b, heads * hd])
    } else {
        out.view([b, kv_heads, t, group, hd]).permute([0, 2, 1, 3, 4]).reshape([b * t, heads * hd])
    }
}

/// RMSNorm as transformers computes it: in f32, scaled by the weight in the input dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    if kernels::applies(x) && weight.kind() == Kind::Float {
        return kernels::rms_norm(x, weight, eps);
    }
    let kind = x.kind();
    // f32 activations skip the two dtype round-trips (two dispatches per norm on the decode path).
    let xf = if kind == Kind::Float { x.shallow_clone() } else { x.to_kind(Kind::Float) };
    let normed = &xf * (xf.square().mean_dim(-1, true, Kind::Float) + eps).rsqrt();
    weight * if kind == Kind::Float { normed } else { normed.to_kind(kind) }
}
