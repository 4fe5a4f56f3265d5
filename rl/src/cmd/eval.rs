//! `noregret eval`: held-out pass@1 (greedy) and pass@k (sampled) of a model, with or without
//! an adapter, on the env of an experiment file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use rollout::Snapshot;

use crate::eval::{evaluate, EvalSpec};
use crate::experiment::Experiment;
use crate::model_args::ModelArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An experiment file: its [env] (problems, template, rewards) and [rollout] sampling
    /// settings are used; its [model] is not (--model is).
    #[arg(long)]
    pub env: PathBuf,
    /// Override a key of the experiment file (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Use the first N held-out problems (default: the file's [eval] problems, else all).
    #[arg(long)]
    pub problems: Option<usize>,
    /// Samples per problem for pass@k at the rollout temperature (default: the file's [eval] samples).
    #[arg(long)]
    pub samples: Option<usize>,
    /// One JSON line per problem: prompt, gold, response, correct (greedy).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: EvalArgs, threads: Option<i32>) -> Result<()> {
    // The experiment's [model] is replaced by --model; keep its other sections.
    let mut overrides = args.set.clone();
    overrides.push(format!("model.path={}", args.model.model.display()));
    let exp = Experiment::load(&args.env, &overrides)?;
    let policy = args.model.load()?;
    let adapter = args.model.adapter.as_ref().map(|dir| policies::peft::load(dir, &policy.model)).transpose()?;
    let reward: Option<Arc<dyn rewards::Reward>> = if exp.reward.is_empty() {
        None
    } else {
        Some(Arc::from(rewards::build(&exp.reward).map_err(|e| anyhow!("[[reward]]: {e}"))?))
    };
    let source = exp.env.build(reward).map_err(|e| anyhow!("[env]: {e}"))?;
    let cores = crate::plan::ThreadPlan::cores(threads);
    policies::threads::set_thread_budget(cores);
    let spec = EvalSpec {
        problems: args.problems.or(exp.eval.problems),
        samples: args.samples.unwrap_or(exp.eval.samples),
        sampling: exp.sampling(),
        max_episode_tokens: exp.rollout.max_episode_tokens,
        threads: cores,
        slots: 256,
    };
    let result = evaluate(Arc::new(policy.model), Arc::new(policy.tokenizer), Snapshot::new(0, adapter), &source, &spec)?;
    if let Some(path) = &args.out {
        let mut text = String::new();
        for row in &result.rows {
            text.push_str(&serde_json::to_string(row)?);
            text.push('\n');
        }
        crate::run_dir::write_atomic(path, text.as_bytes()).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    Ok(())
}
