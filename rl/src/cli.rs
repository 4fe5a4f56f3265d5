//! Command-line definitions. Each subcommand's work lives in `cmd/`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

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
}

/// How to load a model: shared by every subcommand that runs one.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Weights dtype: float32, bfloat16 or float16 (default: the config's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A LoRA adapter directory in PEFT format (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<policies::Policy> {
        let dtype = match &self.dtype {
            Some(name) => Some(
                policies::config::parse_dtype(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown --dtype {name:?} (expected float32, bfloat16 or float16)"))?,
            ),
            None => None,
        };
        let device = policies::parse_device(&self.device)?;
        Ok(policies::Policy::load(&self.model, dtype, device)?)
    }

    /// The policy and, with `--adapter`, the adapter ready for inference.
    pub fn load_with_adapter(&self) -> Result<(policies::Policy, Option<policies::LoraRuntime>)> {
        let policy = self.load()?;
        let lora = match &self.adapter {
            Some(dir) => {
                let model = &policy.model;
                let adapter = policies::peft::load(dir, model)?;
                Some(tch::no_grad(|| policies::LoraRuntime::single(&model.config, &adapter, model.kind()))?)
            }
            None => None,
        };
        Ok((policy, lora))
    }
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
        Command::Bench(args) => cmd::bench::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Adapter(args) => cmd::adapter::run(args),
        Command::Verify(args) => cmd::verify::run(args),
    }
}
