//! Group-relative advantages: each episode's reward against the other episodes of its problem.

/// Reward minus the group mean; with `std`, divided by the group's standard deviation (the
/// unbiased one, as GRPO implementations take it, plus 1e-4 so equal rewards give 0, not NaN).
/// Without it this is Dr. GRPO's advantage.
pub fn group_advantages(rewards: &[f64], std: bool) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let scale = if std && n > 1 {
        let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        1.0 / (var.sqrt() + 1e-4)
    } else {
        1.0
    };
    rewards.iter().map(|r| (r - mean) * scale).collect()
}

/// Whether every episode of a group got the same reward: its advantages are all 0, so the group
/// teaches nothing.
pub fn is_uniform(rewards: &[f64]) -> bool {
    rewards.windows(2).all(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_on_the_group_mean() {
        // Mean 0.25.
        assert_eq!(group_advantages(&[1.0, 0.0, 0.0, 0.0], false), vec![0.75, -0.25, -0.25, -0.25]);
    }

    #[test]
    fn divided_by_the_unbiased_std() {
        // Rewards 1, 0: mean 0.5, unbiased variance 0.5, std 0.70711.
        let a = group_advantages(&[1.0, 0.0], true);
        let expect = 0.5 / (0.5f64.sqrt() + 1e-4);
        assert!((a[0] - expect).abs() < 1e-12 && (a[1] + expect).abs() < 1e-12, "{a:?}");
    }

    #[test]
    fn uniform_groups_have_zero_advantage() {
        assert!(is_uniform(&[1.0, 1.0, 1.0]));
        assert!(!is_uniform(&[1.0, 0.0]));
        assert_eq!(group_advantages(&[0.5, 0.5], true), vec![0.0, 0.0]);
    }
}
