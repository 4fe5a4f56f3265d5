//! `importance_sampling`: REINFORCE weighted by the ratio ρ: loss = −ρ·A, gradient −ρ·A·∇log π.

use tch::Tensor;

use super::PolicyLoss;

pub struct ImportanceSampling;

impl PolicyLoss for ImportanceSampling {
    fn name(&self) -> &'static str {
        "importance_sampling"
    }

    fn per_token(&self, logp: &Tensor, prox: &Tensor, advantages: &Tensor) -> (Tensor, Tensor) {
        let ratio = (logp - prox).exp();
        (-(ratio * advantages), logp.zeros_like().detach())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{t, values};
    use super::*;

    #[test]
    fn loss_and_gradient_by_hand() {
        // logp -1, prox -1.2: ρ = e^0.2 = 1.2214028; A = 0.5: loss -0.6107014, d/dlogp = -ρA.
        let logp = t(&[-1.0, -2.0]).set_requires_grad(true);
        let (loss, clipped) = ImportanceSampling.per_token(&logp, &t(&[-1.2, -2.0]), &t(&[0.5, -1.0]));
        let l = values(&loss);
        assert!((l[0] + 0.6107013791).abs() < 1e-9 && (l[1] - 1.0).abs() < 1e-12, "{l:?}");
        loss.sum(tch::Kind::Double).backward();
        let g = values(&logp.grad());
        assert!((g[0] + 0.6107013791).abs() < 1e-9 && (g[1] - 1.0).abs() < 1e-12, "{g:?}");
        assert_eq!(values(&clipped), vec![0.0, 0.0]);
    }
}
