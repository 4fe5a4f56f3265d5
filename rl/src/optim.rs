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

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The tensors it updates.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The global L2 norm of the gradients held; with `max > 0`, scale them down to at most
    /// `max`. Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
            let total: f64 = grads.iter().map(|g| g.square().sum(tch::Kind::Double).double_value(&[])).sum();
            let norm = total.sqrt();
            if max > 0.0 && norm > max {
                for g in &grads {
                    let _ = g.shallow_clone().g_mul_scalar_(max / (norm + 1e-6));
                }
            }
            norm
        })
    }

    /// The moments and the step count, for a checkpoint: (first moments, second moments, steps).
    pub fn state(&self) -> (&[Tensor], &[Tensor], i64) {
        (&self.exp_avg, &self.exp_avg_sq, self.steps)
    }

    /// Restore what [`AdamW::state`] gave; shapes must match the parameters.
    pub fn load_state(&mut self, exp_avg: &[Tensor], exp_avg_sq: &[Tensor], steps: i64) -> Result<(), String> {
        if exp_avg.len() != self.params.len() || exp_avg_sq.len() != self.params.len() {
            return Err(format!("optimizer state has {} tensors, the model trains {}", exp_avg.len(), self.params.len()));
        }
        tch::no_grad(|| {
            for (i, p) in self.params.iter().enumerate() {
                if exp_avg[i].size() != p.size() || exp_avg_sq[i].size() != p.size() {
                    return Err(format!("optimizer state tensor {i} is {:?}, the parameter {:?}", exp_avg[i].size(), p.size()));
                }
                self.exp_avg[i].copy_(&exp_avg[i]);
                self.exp_avg_sq[i].copy_(&exp_avg_sq[i]);
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// The learning rate at optimiser step `step` (0-based): linear warmup over `warmup` steps from
/// lr/warmup, then constant.
pub fn scheduled_lr(lr: f64, warmup: u64, step: u64) -> f64 {
    if warmup == 0 || step >= warmup {
        lr
    } else {
        lr * (step + 1) as f64 / warmup as f64
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

    #[test]
    fn clipping_scales_the_global_norm() {
        let a = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.0f32]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![a.shallow_clone(), b.shallow_clone()], AdamWConfig::default());
        // Gradients (3, 0) and (4): norm 5.
        ((&a * Tensor::from_slice(&[3.0f32, 0.0])).sum(Kind::Float) + (&b * 4.0).sum(Kind::Float)).backward();
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped = opt.clip_grad_norm(0.0);
        assert!((clipped - 1.0).abs() < 1e-5, "{clipped}");
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
    }

    #[test]
    fn warmup_is_linear_then_constant() {
        assert_eq!(scheduled_lr(1e-3, 0, 0), 1e-3);
        assert!((scheduled_lr(1e-3, 4, 0) - 2.5e-4).abs() < 1e-12);
        assert!((scheduled_lr(1e-3, 4, 3) - 1e-3).abs() < 1e-12);
        assert_eq!(scheduled_lr(1e-3, 4, 10), 1e-3);
    }
}
