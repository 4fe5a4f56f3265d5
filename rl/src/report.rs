//! `noregret report SWEEP_DIR`: plots and a markdown table from a sweep's run directories alone,
//! drawn as "LoRA Without Regret" draws them.
//!
//! Definitions (also written into the report):
//! - a run's *final* metric is the mean of its last 3 evaluations: held-out greedy accuracy for
//!   RL (higher is better), held-out log loss for SFT (lower is better);
//! - a *configuration* is everything the grid varies except the learning rate and the seed;
//! - a configuration's score at an LR is the mean final metric over seeds (spread: min..max);
//!   its *best LR* is the one with the best score.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::run_dir::{read_json_lines, METRICS, SUMMARY};
use crate::sweep::{Plan, SweepCommand, PLAN};

/// Evaluations averaged into a run's final metric.
pub const LAST_K: usize = 3;

struct Run {
    config: String,
    lr: f64,
    /// (step, metric) of every evaluation.
    evals: Vec<(f64, f64)>,
    /// (step, training reward or training loss).
    train: Vec<(f64, f64)>,
    trainable: Option<f64>,
}

impl Run {
    fn final_metric(&self) -> Option<f64> {
        let tail: Vec<f64> = self.evals.iter().rev().take(LAST_K).map(|p| p.1).collect();
        (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
    }
}

/// Score of one (configuration, LR): mean, min and max final metric over seeds.
#[derive(Debug, Clone, Copy)]
struct Score {
    mean: f64,
    min: f64,
    max: f64,
    seeds: usize,
}

pub struct Report {
    pub markdown: PathBuf,
    pub pngs: Vec<PathBuf>,
}

pub fn write(sweep_dir: &Path, out: Option<&Path>) -> Result<Report> {
    let plan_path = sweep_dir.join(PLAN);
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(&plan_path).with_context(|| format!("{}: cannot read (not a sweep directory?)", plan_path.display()))?)
        .with_context(|| format!("{}: not a sweep plan", plan_path.display()))?;
    let rl = plan.command == SweepCommand::Train;
    let (eval_key, train_key, lr_key) = if rl { ("heldout_accuracy", "reward_mean", "rl.lr") } else { ("heldout_loss", "train_loss", "sft.lr") };
    let better = |a: f64, b: f64| if rl { a > b } else { a < b };
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| sweep_dir.to_path_buf());
    std::fs::create_dir_all(&out)?;

    let mut runs: Vec<Run> = Vec::new();
    let mut missing = Vec::new();
    for r in &plan.runs {
        let dir = sweep_dir.join(&r.name);
        // Only finished runs: a run still going (or stopped) would skew its configuration.
        if !dir.join(SUMMARY).exists() {
            missing.push(r.name.clone());
            continue;
        }
        let metrics = read_json_lines(&dir.join(METRICS));
        let series = |key: &str| -> Vec<(f64, f64)> { metrics.iter().filter_map(|l| Some((l.get("step")?.as_f64()?, l.get(key)?.as_f64()?))).collect() };
        let summary: Option<Value> = std::fs::read_to_string(dir.join(SUMMARY)).ok().and_then(|t| serde_json::from_str(&t).ok());
        let lr = r.point.get(lr_key).and_then(toml_f64).or_else(|| plan.set.get(lr_key).and_then(toml_f64)).unwrap_or(f64::NAN);
        let config = r
            .point
            .iter()
            .filter(|(k, _)| k.as_str() != lr_key && k.as_str() != "run.seed")
            .map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), plain(v)))
            .collect::<Vec<_>>()
            .join(" ");
        runs.push(Run {
            config: if config.is_empty() { "all".into() } else { config },
            lr,
            evals: series(eval_key),
            train: series(train_key),
            trainable: summary.as_ref().and_then(|s| s.get("trainable_parameters")).and_then(Value::as_f64),
        });
    }
    if runs.is_empty() {
        bail!("{}: no run has finished yet", sweep_dir.display());
    }

    // Scores per configuration and LR.
    let mut scores: BTreeMap<String, BTreeMap<u64, (f64, Score)>> = BTreeMap::new();
    for run in &runs {
        let Some(f) = run.final_metric() else { continue };
        let entry = scores.entry(run.config.clone()).or_default().entry(run.lr.to_bits()).or_insert((run.lr, Score { mean: 0.0, min: f, max: f, seeds: 0 }));
        let s = &mut entry.1;
        s.mean = (s.mean * s.seeds as f64 + f) / (s.seeds + 1) as f64;
        s.min = s.min.min(f);
        s.max = s.max.max(f);
        s.seeds += 1;
    }
    let trainable: BTreeMap<String, f64> = runs.iter().filter_map(|r| Some((r.config.clone(), r.trainable?))).collect();
    // Configurations from the fewest trainable parameters to the most (rank 1, 4, 16, ..., full).
    let mut best: Vec<(String, (f64, Score))> = scores
        .iter()
        .filter_map(|(c, by_lr)| by_lr.values().copied().reduce(|a, b| if better(b.1.mean, a.1.mean) { b } else { a }).map(|b| (c.clone(), b)))
        .collect();
    best.sort_by(|a, b| trainable.get(&a.0).unwrap_or(&f64::MAX).total_cmp(trainable.get(&b.0).unwrap_or(&f64::MAX)).then(a.0.cmp(&b.0)));

    // Plots.
    let metric_name = if rl { "held-out greedy accuracy" } else { "held-out log loss" };
    let mut pngs = Vec::new();
    let mut curves = plot::Chart::new(format!("{metric_name} at each configuration's best LR"), "step", metric_name);
    let mut train_curves = plot::Chart::new(if rl { "training reward at the best LR" } else { "training loss at the best LR" }, "step", train_key);
    if !rl {
        for c in [&mut curves, &mut train_curves] {
            c.x_scale = plot::Scale::Log10;
            c.y_scale = plot::Scale::Log10;
        }
    }
    for (config, (lr, _)) in &best {
        let chosen: Vec<&Run> = runs.iter().filter(|r| &r.config == config && r.lr == *lr).collect();
        let label = format!("{config} (lr {})", short(*lr));
        curves.series.push(banded(&label, chosen.iter().map(|r| r.evals.as_slice()).collect()));
        train_curves.series.push(banded(&label, chosen.iter().map(|r| smooth(&r.train)).collect::<Vec<_>>().iter().map(Vec::as_slice).collect()));
    }
    let mut vs_lr = plot::Chart::new(format!("final {metric_name} against learning rate"), "learning rate", metric_name);
    vs_lr.x_scale = plot::Scale::Log10;
    for (config, _) in &best {
        let by_lr = &scores[config];
        let mut s = plot::Series::new(config.clone(), by_lr.values().map(|(lr, sc)| (*lr, sc.mean)).collect());
        s.band = Some(by_lr.values().map(|(lr, sc)| (*lr, sc.min, sc.max)).collect());
        vs_lr.series.push(s);
    }
    let mut best_lr = plot::Chart::new("best learning rate against trainable parameters", "trainable parameters", "best learning rate");
    best_lr.x_scale = plot::Scale::Log10;
    best_lr.y_scale = plot::Scale::Log10;
    for (config, (lr, _)) in &best {
        if let Some(&p) = trainable.get(config) {
            best_lr.series.push(plot::Series::new(config.clone(), vec![(p, *lr)]));
        }
    }
    for (name, chart) in [("curves.png", curves), ("train.png", train_curves), ("final_vs_lr.png", vs_lr), ("best_lr.png", best_lr)] {
        let path = out.join(name);
        chart.write_png(&path).with_context(|| format!("{}: cannot write", path.display()))?;
        pngs.push(path);
    }

    // The markdown.
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep report: `{}`\n", sweep_dir.display());
    let unfinished = match missing.len() {
        0 => String::new(),
        n if n <= 8 => format!("; not finished: {}", missing.join(", ")),
        n => format!("; {n} not finished yet"),
    };
    let _ = writeln!(md, "Generated by `noregret report {}` from the run directories alone ({} of {} runs finished{unfinished}).\n", sweep_dir.display(), runs.len(), plan.runs.len());
    let _ = writeln!(md, "Final metric: the mean of a run's last {LAST_K} evaluations of {metric_name} ({}). A configuration's score at an LR is the mean over seeds; the spread is min..max over seeds. Best LR: the best score.\n", if rl { "higher is better" } else { "lower is better" });
    let _ = writeln!(md, "## Best learning rate per configuration\n");
    let _ = writeln!(md, "| configuration | trainable parameters | best LR | final {metric_name} (mean) | spread over seeds | seeds |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|---:|");
    for (config, (lr, s)) in &best {
        let params = trainable.get(config).map(|p| format!("{p:.0}")).unwrap_or_else(|| "?".into());
        let _ = writeln!(md, "| {config} | {params} | {} | {:.4} | {:.4}..{:.4} | {} |", short(*lr), s.mean, s.min, s.max, s.seeds);
    }
    let full = best.iter().find(|(c, _)| c.contains("rank=full"));
    if let Some((_, (full_lr, _))) = full {
        let _ = writeln!(md, "\nBest LR relative to full fine-tuning's ({}):\n", short(*full_lr));
        for (config, (lr, _)) in best.iter().filter(|(c, _)| !c.contains("rank=full")) {
            let _ = writeln!(md, "- {config}: {:.1}×", lr / full_lr);
        }
    }
    let _ = writeln!(md, "\n## Every configuration and LR\n");
    let _ = writeln!(md, "| configuration | LR | final (mean) | min | max | seeds |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (config, _) in &best {
        for (lr, s) in scores[config].values() {
            let _ = writeln!(md, "| {config} | {} | {:.4} | {:.4} | {:.4} | {} |", short(*lr), s.mean, s.min, s.max, s.seeds);
        }
    }
    let _ = writeln!(md, "\n![curves](curves.png)\n\n![train](train.png)\n\n![final against LR](final_vs_lr.png)\n\n![best LR](best_lr.png)");
    let markdown = out.join("report.md");
    crate::run_dir::write_atomic(&markdown, md.as_bytes())?;
    Ok(Report { markdown, pngs })
}

/// Mean over runs at each step they share, with the min..max band.
fn banded(label: &str, runs: Vec<&[(f64, f64)]>) -> plot::Series {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in &runs {
        for &(x, y) in *r {
            by_step.entry(x.to_bits()).or_default().push(y);
        }
    }
    let rows: Vec<(f64, f64, f64, f64)> = by_step
        .iter()
        .filter(|(_, ys)| ys.len() == runs.len())
        .map(|(x, ys)| {
            let mean = ys.iter().sum::<f64>() / ys.len() as f64;
            (f64::from_bits(*x), mean, ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max))
        })
        .collect();
    let mut s = plot::Series::new(label, rows.iter().map(|r| (r.0, r.1)).collect());
    if runs.len() > 1 {
        s.band = Some(rows.iter().map(|r| (r.0, r.2, r.3)).collect());
    }
    s
}

/// A moving average over 20 points (training metrics are noisy per step).
fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    const W: usize = 20;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let lo = i.saturating_sub(W - 1);
            let window = &points[lo..=i];
            (x, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
        })
        .collect()
}

fn toml_f64(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(lr: f64) -> String {
    format!("{lr:.0e}").replace("e-0", "e-")
}
