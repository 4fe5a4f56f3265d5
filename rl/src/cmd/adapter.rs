//! `noregret adapter init`: a fresh LoRA adapter for a model, saved in PEFT format.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct AdapterArgs {
    #[command(subcommand)]
    pub what: AdapterCommand,
}

#[derive(Subcommand)]
pub enum AdapterCommand {
    /// Create an adapter: A ~ U(±1/√fan_in), B = 0 (the model is unchanged until trained).
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// The base model directory (for shapes).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub rank: i64,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// all (q,k,v,o,gate,up,down), attn, mlp, or a comma list such as q_proj,v_proj,lm_head.
    #[arg(long, default_value = "all")]
    pub targets: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw B from N(0, std²) instead of zeros, so the adapter changes the model (for tests and
    /// benchmarks of the adapter path).
    #[arg(long)]
    pub random_b: Option<f64>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: AdapterArgs) -> Result<()> {
    match args.what {
        AdapterCommand::Init(a) => init(a),
    }
}

fn init(args: InitArgs) -> Result<()> {
    let config = policies::ModelConfig::from_file(&args.model.join("config.json"))?;
    let targets = policies::lora::parse_targets(&args.targets)?;
    let lora = policies::LoraConfig::new(args.rank, args.alpha, targets)?;
    let adapter = policies::Adapter::init(&config, lora, args.seed, tch::Device::Cpu);
    if let Some(std) = args.random_b {
        adapter.randomize_b(std, args.seed);
    }
    policies::peft::save(&adapter, &args.out, &args.model.display().to_string())?;
    eprintln!("wrote {} ({} trainable parameters)", args.out.display(), adapter.num_parameters());
    Ok(())
}
