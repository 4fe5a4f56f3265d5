//! Command-line definitions. Each subcommand's work lives in `cmd/`.

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd;

#[derive(Parser)]
#[command(name = "noregret", version, about = "RL post-training with low-rank LoRA on libtorch")]
pub struct Cli {
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long, global = true)]
    pub threads: Option<i32>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Sample completions; one JSON line per sample on stdout.
    Sample(cmd::sample::SampleArgs),
    /// Read {"tokens": [...]} lines on stdin; write {"logprobs": [...]} lines.
    Logprobs(cmd::logprobs::LogprobsArgs),
    /// Measure speed (generation, training steps) on a checkpoint.
    Bench(cmd::bench::BenchArgs),
    /// Read {"gold", "response"} lines on stdin; write {"correct", "extracted"} lines.
    Verify(cmd::verify::VerifyArgs),
    /// Create LoRA adapters.
    Adapter(cmd::adapter::AdapterArgs),
    /// Merge an adapter into its base model and write a Hugging Face checkpoint.
    Export(cmd::export::ExportArgs),
    /// Write a randomly initialised checkpoint (HF format, character tokenizer).
    InitModel(cmd::init_model::InitModelArgs),
    /// RL on an experiment file (TOML), into a run directory.
    Train(cmd::train::TrainArgs),
    /// Sample for a learner on another machine (`train` with a redis:// transport).
    Sampler(cmd::sampler::SamplerArgs),
    /// Supervised fine-tuning on an experiment file (TOML), into a run directory.
    Sft(cmd::train::RunArgs),
    /// Held-out pass@1 (greedy) and pass@k of a model, with or without an adapter.
    Eval(cmd::eval::EvalArgs),
    /// A grid of train or sft runs over any config keys (resumable).
    Sweep(cmd::sweep::SweepArgs),
    /// Plots and a markdown table from a sweep's run directories.
    Report(cmd::sweep::ReportArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        anyhow::ensure!(n > 0, "--threads must be positive");
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::Sample(args) => cmd::sample::run(args),
        Command::Logprobs(args) => cmd::logprobs::run(args),
        Command::InitModel(args) => cmd::init_model::run(args),
        Command::Bench(args) => cmd::bench::run(args, cli.threads),
        Command::Export(args) => cmd::export::run(args),
        Command::Adapter(args) => cmd::adapter::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Train(args) => cmd::train::run(args, cli.threads),
        Command::Sampler(args) => cmd::sampler::run(args, cli.threads),
        Command::Sft(args) => cmd::sft::run(args, cli.threads),
        Command::Eval(args) => cmd::eval::run(args, cli.threads),
        Command::Sweep(args) => cmd::sweep::sweep(args, cli.threads),
        Command::Report(args) => cmd::sweep::report(args),
    }
}
