//! Turning logits into tokens: temperature, top-k, top-p, greedy. Every choice also returns the
//! log-prob of the chosen token under the distribution it was drawn from (after temperature and
//! truncation): the behaviour log-prob an off-policy RL correction needs.
//!
//! The random draw is inverse-CDF with one uniform per row from the row's own [`SplitMix`]
//! stream, so a sequence's samples depend on its seed only, on CPU and GPU alike.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::invalid;
use crate::rng::SplitMix;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 disables it.
    pub top_k: i64,
    pub max_new_tokens: i64,
    /// Text that ends a sequence (not included in the returned text).
    pub stop: Vec<String>,
    /// Keep going past eos (benchmarks, fixed-length rollouts).
    pub ignore_eos: bool,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 64, stop: Vec::new(), ignore_eos: false, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.top_k < 0 {
            return Err(invalid!("top_k must be >= 0, got {}", self.top_k));
        }
        if self.max_new_tokens < 0 {
            return Err(invalid!("max_new_tokens must be >= 0, got {}", self.max_new_tokens));
        }
        Ok(())
    }
}

/// Log-probs over the vocabulary (last axis of `logits`, any leading shape) of the distribution
/// tokens are drawn from: logits / temperature, then top-k and top-p truncation (dropped tokens
/// get -inf). Greedy (temperature 0) is scored as the model's own distribution. In f32 and
/// differentiable in `logits` (the truncation mask is taken without gradients): the learner
/// scores sampled tokens with this, so its log-probs and the sampler's compare like with like.
pub fn behaviour_logprobs(logits: &Tensor, params: &SamplingParams) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    if params.temperature == 0.0 {
        return logits.log_softmax(-1, Kind::Float);
    }
    let mut z = if params.temperature == 1.0 { logits } else { logits / params.temperature };
    let vocab = *z.size().last().expect("logits have a vocabulary axis");
    if params.top_k > 0 && params.top_k < vocab {
        let kept = tch::no_grad(|| {
            let (kth, _) = z.topk(params.top_k, -1, true, true);
            z.lt_tensor(&kth.narrow(-1, params.top_k - 1, 1))
        });
        z = z.masked_fill(&kept, f64::NEG_INFINITY);
    }
    if params.top_p < 1.0 {
        let drop = tch::no_grad(|| {
            let (sorted, order) = z.sort(-1, true);
            let probs = sorted.softmax(-1, Kind::Float);
            // Drop a token when the mass before it already reaches top_p (the first always stays).
            let before = probs.cumsum(-1, Kind::Float) - &probs;
            let drop_sorted = before.ge(params.top_p);
            drop_sorted.scatter(-1, &order, &drop_sorted)
        });
        z = z.masked_fill(&drop, f64::NEG_INFINITY);
    }
    z.log_softmax(-1, Kind::Float)
}

/// Choose one token per row of `logits` [B, V]. Returns (tokens [B] i64, logprobs [B] f32).
/// Greedy rows report the model's own log-prob (temperature 1, no truncation).
pub fn choose(logits: &Tensor, params: &SamplingParams, rngs: &mut [SplitMix]) -> (Tensor, Tensor) {
    let logp = behaviour_logprobs(logits, params);
    if params.temperature == 0.0 {
        // argmax of the logits themselves, as transformers' greedy search takes it.
        let tokens = logits.argmax(-1, true);
        let chosen = logp.gather(1, &tokens, false);
        return (tokens.squeeze_dim(1), chosen.squeeze_dim(1));
    }
    let vocab = logp.size()[1];
    let cdf = logp.exp().cumsum(-1, Kind::Float);
    let uniforms: Vec<f32> = rngs.iter_mut().map(|r| r.next_f64() as f32).collect();
    let u = Tensor::from_slice(&uniforms).to_device(cdf.device()).unsqueeze(1) * cdf.narrow(1, vocab - 1, 1);
    // First index whose cumulative mass exceeds u: a token with zero probability never wins.
    let tokens = u.searchsorted(&cdf, false, true, "right", None::<Tensor>).clamp_max(vocab - 1);
    let chosen = logp.gather(1, &tokens, false);
    (tokens.squeeze_dim(1), chosen.squeeze_dim(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor {
        Tensor::from_slice(&[2.0f32, 1.0, 0.5, -1.0, 0.0, 1.5]).view([1, 6])
    }

    fn draw(params: &SamplingParams, n: usize) -> Vec<(i64, f32)> {
        let mut rngs = vec![SplitMix::new(params.seed)];
        (0..n)
            .map(|_| {
                let (t, lp) = choose(&logits(), params, &mut rngs);
                (t.int64_value(&[0]), lp.double_value(&[0]) as f32)
            })
            .collect()
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        let (g, _) = draw(&greedy, 1)[0];
        assert_eq!(g, 0);
        for params in [SamplingParams { top_k: 1, ..Default::default() }, SamplingParams { top_p: 0.01, ..Default::default() }] {
            for (t, lp) in draw(&params, 20) {
                assert_eq!(t, 0);
                assert!(lp.abs() < 1e-6, "a one-token distribution has log-prob 0, got {lp}");
            }
        }
    }

    #[test]
    fn behaviour_logprob_is_under_the_truncated_tempered_distribution() {
        let params = SamplingParams { temperature: 0.7, top_k: 3, seed: 4, ..Default::default() };
        let z = logits() / 0.7;
        let kept = [0i64, 1, 5]; // the three largest logits
        let norm: f64 = kept.iter().map(|&i| z.double_value(&[0, i]).exp()).sum();
        for (t, lp) in draw(&params, 200) {
            assert!(kept.contains(&t), "top-k let through token {t}");
            let expect = z.double_value(&[0, t]) - norm.ln();
            assert!((lp as f64 - expect).abs() < 1e-5, "{lp} vs {expect}");
        }
    }

    #[test]
    fn frequencies_follow_the_distribution() {
        let params = SamplingParams { seed: 1, ..Default::default() };
        let n = 20000;
        let mut counts = [0usize; 6];
        for (t, _) in draw(&params, n) {
            counts[t as usize] += 1;
        }
        let probs = logits().softmax(-1, Kind::Float);
        for (i, &c) in counts.iter().enumerate() {
            let p = probs.double_value(&[0, i as i64]);
            let freq = c as f64 / n as f64;
            assert!((freq - p).abs() < 0.015, "token {i}: {freq} vs {p}");
        }
    }
}
