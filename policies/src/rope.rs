//! Rotary position embeddings, HF "rotate half" convention, with the inverse frequencies computed
//! exactly as transformers does (f32), including Llama 3's long-context rescaling.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::{ModelConfig, RopeScaling};

/// Precomputed cos/sin tables, indexed by absolute position.
pub struct Rope {
    /// [max_positions, head_dim], in the model's dtype.
    cos: Tensor,
    /// sin with the first half negated: rotate_half(x)·sin == swap_halves(x)·signed_sin.
    signed_sin: Tensor,
}

impl Clone for Rope {
    /// Shares the tables (they are never written).
    fn clone(&self) -> Rope {
        Rope { cos: self.cos.shallow_clone(), signed_sin: self.signed_sin.shallow_clone() }
    }
}

impl Rope {
    pub fn new(cfg: &ModelConfig, max_positions: i64, kind: Kind, device: Device) -> Rope {
        let half = cfg.head_dim / 2;
        let exponents = Tensor::arange_start_step(0, cfg.head_dim, 2, (Kind::Int64, Device::Cpu)).to_kind(Kind::Float)
            / cfg.head_dim as f64;
        let mut inv_freq = (Tensor::from(cfg.rope_theta as f32).pow(&exponents)).reciprocal();
        let positions = Tensor::arange(max_positions, (Kind::Float, Device::Cpu));
        match cfg.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq /= factor,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                inv_freq = llama3_inv_freq(&inv_freq, factor, low_freq_factor, high_freq_factor, old)
            }
        }
        debug_assert_eq!(inv_freq.size(), [half]);
        let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        let sign = Tensor::cat(&[Tensor::full([half], -1.0, (Kind::Float, Device::Cpu)), Tensor::ones([half], (Kind::Float, Device::Cpu))], 0);
        let signed_sin = emb.sin() * sign;
        Rope { cos: emb.cos().to_kind(kind).to_device(device), signed_sin: signed_sin.to_kind(kind).to_device(device) }
    }

    pub fn max_positions(&self) -> i64 {
        self.cos.size()[0]
    }

    /// cos and signed sin for `positions` [B, T], one row per position: [B·T, head_dim].
    pub fn tables(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let flat = positions.reshape([-1]);
        (self.cos.index_select(0, &flat), self.signed_sin.index_select(0, &flat))
    }
}

/// x·cos + rotate_half(x)·sin for x [B, T, heads, head_dim] and tables [B·T, head_dim], where
/// rotate_half(x) = (-x2, x1). Swapping the halves and multiplying by (-sin, sin) gives the same
/// numbers in fewer ops.
pub fn apply(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Tensor {
    if crate::kernels::applies(x) {
        return crate::kernels::rope(x, cos, signed_sin);
    }
    let size = x.size();
    let half = size[3] / 2;
    // Broadcast one table row over the heads of its position.
    let per_head = [size[0], size[1], 1, size[3]];
    let swapped = x.view([size[0], size[1], size[2], 2, half]).flip([3]).view(size.as_slice());
    x * cos.view(per_head) + swapped * signed_sin.view(per_head)
}

/// Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
fn llama3_inv_freq(inv_freq: &Tensor, factor: f64, low: f64, high: f64, old_context: f64) -> Tensor {
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    let wavelen = inv_freq.reciprocal() * (2.0 * PI);
    let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(inv_freq / factor));
    let smooth = (wavelen.reciprocal() * old_context - low) / (high - low);
    let smoothed = (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
    let medium = wavelen.ge(high_freq_wavelen).logical_and(&wavelen.le(low_freq_wavelen));
    smoothed.where_self(&medium, &scaled)
}
