//! AdamW over the trainable tensors only (an adapter's single flat buffer, or every base weight
//! in full fine-tuning). State is two tensors per parameter: the optimiser of a rank-1 adapter
//! is as small as the adapter times two.

use tch::Tensor;

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        // The seed's RL settings: betas (0.9, 0.99), no weight decay.
        AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 }
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    steps: i64,
}

impl AdamW {
    pub fn new(params: Vec<Tensor>, config: AdamWConfig) -> AdamW {
        let zeros = |p: &Tensor| p.zeros_like().detach();
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        AdamW { config, params, exp_avg, exp_avg_sq, steps: 0 }
    }

    /// Numbers held as optimiser state (2 × the trainable parameters).
    pub fn state_numel(&self) -> usize {
        self.exp_avg.iter().chain(&self.exp_avg_sq).map(Tensor::numel).sum()
    }

    /// One update from the gradients currently held; parameters without a gradient are skipped.
    pub fn step(&mut self) {
        let c = self.config;
        self.steps += 1;
        let bias1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.steps as i32)).sqrt();
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                if c.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - c.lr * c.weight_decay);
                }
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v.g_mul_scalar_(c.beta2).addcmul_(&(&g * (1.0 - c.beta2)), &g);
                let denom = v.sqrt().g_div_scalar_(bias2_sqrt).g_add_scalar_(c.eps);
                let _ = p.addcdiv_(&(&*m * (-c.lr / bias1)), &denom);
            }
        });
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn matches_the_adamw_update_rule() {
        // Two steps by hand for one scalar parameter with a constant gradient of 0.5.
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let cfg = AdamWConfig { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
        let mut opt = AdamW::new(vec![p.shallow_clone()], cfg);
        let (mut expect, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=2 {
            opt.zero_grad();
            (&p * 0.5).sum(Kind::Float).backward();
            opt.step();
            expect *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * 0.5;
            v = 0.99 * v + 0.01 * 0.25;
            let mhat = m / (1.0 - 0.9f64.powi(t));
            let vhat = v / (1.0 - 0.99f64.powi(t));
            expect -= 0.1 * mhat / (vhat.sqrt() + 1e-8);
        }
        assert!((p.double_value(&[0]) - expect).abs() < 1e-6, "{} vs {expect}", p.double_value(&[0]));
        assert_eq!(opt.state_numel(), 2);
    }
}
