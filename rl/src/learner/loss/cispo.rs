//! `cispo`: −sg(clip(ρ, 1 − ε_low, 1 + ε_high))·A·log π. The importance weight is clipped and
//! carries no gradient, so unlike PPO every token keeps its gradient (CISPO, MiniMax-M1).

use tch::Tensor;

use super::PolicyLoss;

pub struct Cispo {
    pub clip_low: f64,
    pub clip_high: f64,
}

impl PolicyLoss for Cispo {
    fn name(&self) -> &'static str {
        "cispo"
    }

    fn per_token(&self, logp: &Tensor, prox: &Tensor, advantages: &Tensor) -> (Tensor, Tensor) {
        let ratio = (logp - prox).exp().detach();
        let weight = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high);
        let was_clipped = weight.ne_tensor(&ratio).to_kind(logp.kind());
        (-(weight * advantages * logp), was_clipped)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{t, values};
    use super::*;

    #[test]
    fn clipped_stop_gradient_weight_by_hand() {
        let cispo = Cispo { clip_low: 0.2, clip_high: 0.28 };
        // ρ = e^0.5 = 1.6487 -> weight 1.28; ρ = 1 -> weight 1.
        let logp = t(&[-1.0, -2.0]).set_requires_grad(true);
        let (loss, clipped) = cispo.per_token(&logp, &t(&[-1.5, -2.0]), &t(&[1.0, 0.5]));
        let l = values(&loss);
        assert!((l[0] - 1.28).abs() < 1e-9 && (l[1] - 1.0).abs() < 1e-9, "{l:?}");
        assert_eq!(values(&clipped), vec![1.0, 0.0]);
        loss.sum(tch::Kind::Double).backward();
        // d/dlogp = -weight·A, also for the clipped token.
        let g = values(&logp.grad());
        assert!((g[0] + 1.28).abs() < 1e-9 && (g[1] + 0.5).abs() < 1e-9, "{g:?}");
    }
}
