//! Writes sample charts to a folder (default: the current one), for eyeballing:
//! `cargo run --example sample -- /tmp/plot-sample`
use std::path::PathBuf;

use plot::{write_grid, Chart, Scale, Series};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;

    // Reward curves of three seeds' means, with a min/max band for one.
    let mut reward = Chart::new("GSM8K reward (mean over 3 seeds)", "step", "reward");
    for (k, name) in ["lr 1e-5", "lr 3e-5", "lr 1e-4 (diverges late)"]
        .iter()
        .enumerate()
    {
        let points: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let s = i as f64 * 5.0;
                let base = 0.2 + 0.5 * (1.0 - (-s / (300.0 - 80.0 * k as f64)).exp());
                let wobble = 0.03 * ((s / 37.0) + k as f64).sin();
                let drop = if k == 2 && s > 700.0 {
                    (s - 700.0) / 1000.0
                } else {
                    0.0
                };
                (s, base + wobble - drop)
            })
            .collect();
        let band = points
            .iter()
            .step_by(10)
            .map(|&(x, y)| (x, y - 0.06, y + 0.05))
            .collect();
        let mut s = Series::new(*name, points);
        if k == 0 {
            s.band = Some(band);
        }
        reward.series.push(s);
    }
    reward.write_png(&dir.join("reward.png"))?;

    // A learning-rate sweep on log-log axes, few points so markers show.
    let mut sweep = Chart::new("final loss vs learning rate", "learning rate", "loss");
    sweep.x_scale = Scale::Log10;
    sweep.y_scale = Scale::Log10;
    let lrs = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3];
    for (r, rank) in [2, 4, 8].iter().enumerate() {
        let pts = lrs
            .iter()
            .map(|&lr: &f64| {
                (
                    lr,
                    0.05 + 2.0 * (lr.log10() + 4.0 + r as f64 * 0.3).powi(2) / 10.0,
                )
            })
            .collect();
        sweep.series.push(Series::new(format!("rank {rank}"), pts));
    }
    sweep.write_png(&dir.join("sweep.png"))?;

    // Held-out accuracy next to the reward, in one image; plus an empty chart.
    let mut acc = Chart::new("held-out accuracy", "step", "accuracy");
    acc.series.push(Series::new(
        "eval",
        (0..=10)
            .map(|i| (i as f64 * 100.0, 0.31 + 0.02 * i as f64))
            .collect(),
    ));
    acc.y_range = Some((0.0, 1.0));
    let empty = Chart::new("kl (not logged yet)", "step", "kl");
    write_grid(&dir.join("grid.png"), &[reward, acc, sweep, empty], 2)?;
    println!("wrote reward.png, sweep.png, grid.png to {}", dir.display());
    Ok(())
}
