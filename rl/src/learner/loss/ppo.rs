//! `ppo`: the clipped surrogate, −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A), with separate
//! low and high ε (DAPO's clip-higher). A clipped token passes no gradient.

use tch::Tensor;

use super::PolicyLoss;

pub struct Ppo {
    pub clip_low: f64,
    pub clip_high: f64,
}

impl PolicyLoss for Ppo {
    fn name(&self) -> &'static str {
        "ppo"
    }

    fn per_token(&self, logp: &Tensor, prox: &Tensor, advantages: &Tensor) -> (Tensor, Tensor) {
        let ratio = (logp - prox).exp();
        let unclipped = &ratio * advantages;
        let clipped = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high) * advantages;
        let was_clipped = clipped.lt_tensor(&unclipped).to_kind(logp.kind()).detach();
        (-unclipped.minimum(&clipped), was_clipped)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{t, values};
    use super::*;

    #[test]
    fn clipped_surrogate_by_hand() {
        let ppo = Ppo { clip_low: 0.2, clip_high: 0.28 };
        // ρ = e^0.5 = 1.6487 with A = +1: clipped to 1.28 (loss -1.28, no gradient).
        // ρ = e^-0.5 = 0.6065 with A = -1: clipped to 0.8 (loss 0.8, no gradient).
        // ρ = e^0.1 = 1.1052 with A = +2: inside (loss -2.2103, gradient -2ρ).
        // ρ = e^0.5 with A = -1: min(-1.6487, -1.28) = -1.6487, unclipped (loss 1.6487).
        let logp = t(&[0.5, -0.5, 0.1, 0.5]).set_requires_grad(true);
        let (loss, clipped) = ppo.per_token(&logp, &t(&[0.0; 4]), &t(&[1.0, -1.0, 2.0, -1.0]));
        let l = values(&loss);
        let expect = [-1.28, 0.8, -2.0 * 0.1f64.exp(), 0.5f64.exp()];
        for (a, b) in l.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{l:?}");
        }
        assert_eq!(values(&clipped), vec![1.0, 1.0, 0.0, 0.0]);
        loss.sum(tch::Kind::Double).backward();
        let g = values(&logp.grad());
        let expect = [0.0, 0.0, -2.0 * 0.1f64.exp(), 0.5f64.exp()];
        for (a, b) in g.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{g:?}");
        }
    }
}
