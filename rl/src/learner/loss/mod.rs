//! Policy-gradient losses, named as tinker names them. Each sees, per action token, the
//! learner's log-prob `logp` (with gradient), the learner's log-prob when this batch's first
//! update began `prox` (no gradient), and the token's advantage; the ratio ρ = exp(logp − prox)
//! is 1 on the first update. Staleness — the sampler's policy against `prox` — is corrected
//! outside the loss, by a truncated importance weight (see [`stale_weight`]).

mod cispo;
mod importance_sampling;
mod ppo;

pub use cispo::Cispo;
pub use importance_sampling::ImportanceSampling;
pub use ppo::Ppo;

use tch::Tensor;

use crate::experiment::{LossKind, RlSection};

pub trait PolicyLoss: Send {
    fn name(&self) -> &'static str;
    /// The per-token loss to minimise, and a 0/1 tensor marking tokens whose ratio was clipped.
    fn per_token(&self, logp: &Tensor, prox: &Tensor, advantages: &Tensor) -> (Tensor, Tensor);
}

pub fn build(rl: &RlSection) -> Box<dyn PolicyLoss> {
    match rl.loss {
        LossKind::ImportanceSampling => Box::new(ImportanceSampling),
        LossKind::Ppo => Box::new(Ppo { clip_low: rl.clip_low, clip_high: rl.clip_high }),
        LossKind::Cispo => Box::new(Cispo { clip_low: rl.clip_low, clip_high: rl.clip_high }),
    }
}

/// The truncated importance weight min(π_learner / π_sampler, cap) of each token, without
/// gradient: how much more likely the learner (at the start of this batch) finds the token than
/// the policy that sampled it, capped. It corrects for samples from older adapter versions; for
/// tokens of the current version it is 1 up to the sampler/learner agreement (~1e-5).
pub fn stale_weight(prox: &Tensor, behaviour: &Tensor, cap: f64) -> Tensor {
    (prox - behaviour).exp().clamp_max(cap).detach()
}

/// k3, Schulman's unbiased estimator of KL(π ‖ π_ref) per token: exp(d) − d − 1 with
/// d = log π_ref − log π. Never negative.
pub fn kl_k3(logp: &Tensor, ref_logp: &Tensor) -> Tensor {
    let d = ref_logp - logp;
    d.exp() - &d - 1.0
}

#[cfg(test)]
pub(crate) fn t(values: &[f64]) -> Tensor {
    Tensor::from_slice(values).to_kind(tch::Kind::Double)
}

#[cfg(test)]
pub(crate) fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_weight_is_the_capped_ratio() {
        // ratios e^0 = 1, e^0.5 = 1.6487, e^2 = 7.389 -> capped at 2.
        let w = values(&stale_weight(&t(&[-1.0, -1.0, -1.0]), &t(&[-1.0, -1.5, -3.0]), 2.0));
        assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - 1.6487212707).abs() < 1e-9 && (w[2] - 2.0).abs() < 1e-12, "{w:?}");
    }

    #[test]
    fn k3_by_hand() {
        // d = -0.5 - (-1) = 0.5: e^0.5 - 0.5 - 1 = 0.1487212707; d = 0: 0.
        let k = values(&kl_k3(&t(&[-1.0, -2.0]), &t(&[-0.5, -2.0])));
        assert!((k[0] - 0.1487212707).abs() < 1e-9 && k[1].abs() < 1e-12, "{k:?}");
    }
}
