//! Fused float32 CPU kernels (csrc/*.cpp, shared helpers in csrc/common.h): RMSNorm, rotary
//! embedding and SwiGLU with their backward passes; causal attention (training, scoring) with its
//! backward, optionally with the rotation folded in; the learner's linear layer + adapter update,
//! and RMSNorm / SwiGLU variants that also make the adapter's x·A for the layer they feed;
//! the adapter update for sampling; attention over the KV cache for sampling. The decoder uses
//! them whenever its activations are float32 on the CPU; elsewhere (CUDA, bf16/f16) it runs the
//! same maths as eager ops. `NOREGRET_FUSED=0` turns them off (for A/B measurements); tests can
//! switch them per thread with [`with_fused`].
//!
//! Also here: weights pre-packed by MKL for matmuls that need no gradient ([`PackedWeight`]),
//! where the libtorch build has MKL. `NOREGRET_PACKED=0` turns those off.

use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn nr_last_error() -> *const c_char;
    fn nr_rms_norm(x: *const C_tensor, weight: *const C_tensor, eps: f64) -> *mut C_tensor;
    fn nr_rope(x: *const C_tensor, cos: *const C_tensor, signed_sin: *const C_tensor) -> *mut C_tensor;
    fn nr_silu_mul(gate_up: *const C_tensor) -> *mut C_tensor;
    fn nr_rms_norm_lora(x: *const C_tensor, weight: *const C_tensor, eps: f64, a_t: *const C_tensor,
                        xa_out: *mut *mut C_tensor) -> *mut C_tensor;
    fn nr_silu_mul_lora(gate_up: *const C_tensor, a_t: *const C_tensor, xa_out: *mut *mut C_tensor) -> *mut C_tensor;
    fn nr_cached_attention(
        q: *const C_tensor, k: *const C_tensor, v: *const C_tensor, cos: *const C_tensor, signed_sin: *const C_tensor,
        k_cache: *mut C_tensor, v_cache: *mut C_tensor, lens: *const C_tensor,
    ) -> *mut C_tensor;
    fn nr_causal_attention(q: *const C_tensor, k: *const C_tensor, v: *const C_tensor) -> *mut C_tensor;
    fn nr_rope_causal_attention(qkv: *const C_tensor, heads: i64, kv_heads: i64, cos: *const C_tensor,
                                signed_sin: *const C_tensor) -> *mut C_tensor;
    fn nr_linear_lora(x: *const C_tensor, w: *const C_tensor, init: *const C_tensor, a_t: *const C_tensor,
                      b_t: *const C_tensor, blocks: *const i64, num_blocks: i64) -> *mut C_tensor;
    fn nr_linear_plus_update(x: *const C_tensor, w: *const C_tensor, init: *const C_tensor, xa: *const C_tensor,
                             b_t: *const C_tensor, blocks: *const i64, num_blocks: i64) -> *mut C_tensor;
    fn nr_lora_add(y: *const C_tensor, x: *const C_tensor, a_t: *const C_tensor, b_t: *const C_tensor,
                   mask: *const C_tensor) -> *mut C_tensor;
    fn nr_grad_enabled() -> bool;
    fn nr_packing_available() -> bool;
    fn nr_pack_weight(w: *const C_tensor) -> *mut C_tensor;
    fn nr_packed_matmul(x: *const C_tensor, packed: *const C_tensor, k: i64, n: i64, init: *const C_tensor) -> *mut C_tensor;
}

thread_local! {
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

fn enabled_by_env() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("NOREGRET_FUSED").map(|v| v != "0").unwrap_or(true))
}

/// Whether weights can be pre-packed here: float32 CPU weights, a libtorch with MKL's packed
/// GEMM, and not switched off by `NOREGRET_PACKED=0`.
pub fn packing_applies(w: &Tensor) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| {
        std::env::var("NOREGRET_PACKED").map(|v| v != "0").unwrap_or(true) && unsafe { nr_packing_available() }
    });
    enabled && w.device() == Device::Cpu && w.kind() == Kind::Float
}

/// Whether the fused kernels serve activations like `x` on this thread.
pub fn applies(x: &Tensor) -> bool {
    x.device() == Device::Cpu && x.kind() == Kind::Float && OVERRIDE.with(Cell::get).unwrap_or_else(enabled_by_env)
}

/// Whether an op on `inputs` is recorded for backward: autograd is on for this thread (not
/// inside `tch::no_grad`) and some input requires a gradient. Decides between the training ops
/// and the sampling paths (packed weights, the one-call adapter update).
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    let recording = unsafe { nr_grad_enabled() };
    recording && inputs.iter().any(|t| t.requires_grad())
}

/// Run `f` with the fused kernels switched on or off on this thread (tests and benchmarks).
pub fn with_fused<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let before = OVERRIDE.with(|o| o.replace(Some(on)));
    let out = f();
    OVERRIDE.with(|o| o.set(before));
    out
}

/// The kernels check shapes the decoder guarantees; a failure here is a bug, not bad input.
fn wrap(ptr: *mut C_tensor, what: &str) -> Tensor {
    if ptr.is_null() {
        let message = unsafe { CStr::from_ptr(nr_last_error()) }.to_string_lossy();
        panic!("fused {what} kernel failed: {message}");
    }
    unsafe { Tensor::from_ptr(ptr) }
}

/// RMSNorm of the last axis, as transformers computes it in float32. Differentiable in both.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    wrap(unsafe { nr_rms_norm(x.as_ptr(), weight.as_ptr(), eps) }, "rms_norm")
}

/// Rotary embedding of x [B, T, heads, hd] (any strides, contiguous last axis) with the tables
/// cos and signed sin [B·T, hd]. Returns a contiguous tensor. Differentiable in x.
pub fn rope(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Tensor {
    wrap(unsafe { nr_rope(x.as_ptr(), cos.as_ptr(), signed_sin.as_ptr()) }, "rope")
}

/// silu(gate)·up from [.., 2I] holding gate then up; returns [.., I]. Differentiable.
pub fn silu_mul(gate_up: &Tensor) -> Tensor {
    wrap(unsafe { nr_silu_mul(gate_up.as_ptr()) }, "silu_mul")
}

/// An op's output with the adapter's first product of it: (x, x·a_t).
fn with_update_input(call: impl FnOnce(*mut *mut C_tensor) -> *mut C_tensor, what: &str) -> (Tensor, Tensor) {
    let mut xa: *mut C_tensor = std::ptr::null_mut();
    let x = wrap(call(&mut xa), what);
    (x, unsafe { Tensor::from_ptr(xa) })
}

/// [`rms_norm`] of x [M, K] that also returns the adapter's x·a_t [M, R] for the linear layer it
/// feeds (a_t [K, R] trainable; see [`linear_plus_update`]). Differentiable in x, weight, a_t.
pub fn rms_norm_lora(x: &Tensor, weight: &Tensor, eps: f64, a_t: &Tensor) -> (Tensor, Tensor) {
    with_update_input(|xa| unsafe { nr_rms_norm_lora(x.as_ptr(), weight.as_ptr(), eps, a_t.as_ptr(), xa) }, "rms_norm_lora")
}

/// [`silu_mul`] of gate|up [M, 2I] that also returns the adapter's act·a_t [M, R] for the linear
/// layer it feeds (a_t [I, R] trainable). Differentiable in gate|up and a_t.
pub fn silu_mul_lora(gate_up: &Tensor, a_t: &Tensor) -> (Tensor, Tensor) {
    with_update_input(|xa| unsafe { nr_silu_mul_lora(gate_up.as_ptr(), a_t.as_ptr(), xa) }, "silu_mul_lora")
}

/// Largest adapter width (columns of a fused group's A, e.g. 3 × rank for q|k|v) that
/// [`linear_lora`] serves; its row loops cost rank × the passes, so MKL serves wider ones.
pub const LINEAR_LORA_MAX_RANK: i64 = 32;

/// `init + x·w + (x·a_t)·b_t` for the learner: w [K, N] frozen, a_t [K, R] and b_t [R, N]
/// trainable, `init` a residual [M, N], a bias [N] or absent. Differentiable in x, init, a_t,
/// b_t (not w). Same numbers as the separate ops, with fewer passes over dy and x backward.
/// `blocks`: where b_t may be non-zero, as (first rank, end rank, first column, end column), each
/// rank column in exactly one block (a fused group's block-diagonal B); b_t's gradient is zero
/// outside them. Empty: all of b_t.
pub fn linear_lora(x: &Tensor, w: &Tensor, init: Option<&Tensor>, a_t: &Tensor, b_t: &Tensor, blocks: &[[i64; 4]]) -> Tensor {
    let init = init.map_or(std::ptr::null(), |t| t.as_ptr());
    let out = unsafe {
        nr_linear_lora(x.as_ptr(), w.as_ptr(), init, a_t.as_ptr(), b_t.as_ptr(), blocks.as_ptr().cast(), blocks.len() as i64)
    };
    wrap(out, "linear_lora")
}

/// [`linear_lora`] with `xa` = x·a_t [M, R] given by the op that made x ([`rms_norm_lora`],
/// [`silu_mul_lora`]), which also takes its gradient back: `init + x·w + xa·b_t`,
/// differentiable in x, init, xa and b_t. Neither pass reads x beyond the base product, and x is
/// not kept for the backward pass.
pub fn linear_plus_update(x: &Tensor, w: &Tensor, init: Option<&Tensor>, xa: &Tensor, b_t: &Tensor,
                          blocks: &[[i64; 4]]) -> Tensor {
    let init = init.map_or(std::ptr::null(), |t| t.as_ptr());
    let out = unsafe {
        nr_linear_plus_update(x.as_ptr(), w.as_ptr(), init, xa.as_ptr(), b_t.as_ptr(), blocks.as_ptr().cast(),
                              blocks.len() as i64)
    };
    wrap(out, "linear_plus_update")
}

/// Widest adapter update (columns of a group's A) [`lora_add`] serves.
pub const LORA_ADD_MAX_RANK: i64 = 64;

/// `y + ((x·a_t) ⊙ mask)·b_t`, added into y's own storage, without autograd (sampling): y [M, N]
/// contiguous, x [M, K], a_t [K, R], b_t [R, N], mask [rows, R] with M = rows × tokens per row.
pub fn lora_add(y: Tensor, x: &Tensor, a_t: &Tensor, b_t: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let mask = mask.map_or(std::ptr::null(), |t| t.as_ptr());
    wrap(unsafe { nr_lora_add(y.as_ptr(), x.as_ptr(), a_t.as_ptr(), b_t.as_ptr(), mask) }, "lora update")
}

/// Head sizes the causal attention kernel is compiled for.
pub fn causal_attention_fits(head_dim: i64) -> bool {
    matches!(head_dim, 32 | 64 | 128)
}

/// Causal attention of fresh sequences (positions 0..T): q [B, T, heads, hd], k and v
/// [B, T, kv_heads, hd] (any strides, contiguous last axis; hd per [`causal_attention_fits`]).
/// Returns [B·T, heads·hd]. Differentiable in q, k and v.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    wrap(unsafe { nr_causal_attention(q.as_ptr(), k.as_ptr(), v.as_ptr()) }, "causal attention")
}

/// Rotary embedding and causal attention straight from the fused projection's output
/// qkv [B, T, heads + 2·kv_heads, hd] (contiguous last axis), with tables cos and signed sin
/// [B·T, hd], or [T, hd] when every row is at positions 0..T (one table row per position).
/// Returns [B·T, heads·hd]; differentiable in qkv, whose gradient comes back whole.
pub fn rope_causal_attention(qkv: &Tensor, heads: i64, kv_heads: i64, cos: &Tensor, signed_sin: &Tensor) -> Tensor {
    let out = unsafe { nr_rope_causal_attention(qkv.as_ptr(), heads, kv_heads, cos.as_ptr(), signed_sin.as_ptr()) };
    wrap(out, "rope + causal attention")
}

/// Rotate q [B, T, heads, hd] and k [B, T, kv_heads, hd], write k and v at positions
/// lens[b]..lens[b]+T of the caches (keys as columns [B, kv_heads, hd, ≥ capacity rounded up to
/// 16], values [B, kv_heads, capacity, hd]), and attend causally over each row's cache. Returns
/// [B·T, heads·hd]. Not differentiable (sampling only).
#[allow(clippy::too_many_arguments)]
pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, cos: &Tensor, signed_sin: &Tensor,
                        k_cache: &mut Tensor, v_cache: &mut Tensor, lens: &Tensor) -> Tensor {
    let out = unsafe {
        nr_cached_attention(q.as_ptr(), k.as_ptr(), v.as_ptr(), cos.as_ptr(), signed_sin.as_ptr(),
                            k_cache.as_mut_ptr(), v_cache.as_mut_ptr(), lens.as_ptr())
    };
    wrap(out, "cached attention")
}

/// A weight [K, N] packed once for `x·w` products that need no gradient. Holds about the
/// weight's own size in memory (MKL reserves more address space than it writes).
pub struct PackedWeight {
    packed: Tensor,
    k: i64,
    n: i64,
}

impl PackedWeight {
    /// Pack `w` [K, N]; call only where [`packing_applies`] to it.
    pub fn new(w: &Tensor) -> PackedWeight {
        let (k, n) = w.size2().expect("a weight matrix is 2-D");
        PackedWeight { packed: wrap(unsafe { nr_pack_weight(w.as_ptr()) }, "pack_weight"), k, n }
    }

    /// `init + x·w` for x [M, K]; `init` is [M, N], a bias [N], or absent (zero). No gradient.
    pub fn matmul(&self, x: &Tensor, init: Option<&Tensor>) -> Tensor {
        let init = init.map_or(std::ptr::null(), |t| t.as_ptr());
        wrap(unsafe { nr_packed_matmul(x.as_ptr(), self.packed.as_ptr(), self.k, self.n, init) }, "packed matmul")
    }
}
