//! `noregret export`: an adapter merged into its base model, written as a Hugging Face checkpoint
//! that transformers (or vLLM) loads like any other.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::model_args::ModelArgs;

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Fold the adapter into the base weights (W + (α/r)·B·A). Without it, the adapter alone is
    /// re-written in PEFT format.
    #[arg(long)]
    pub merge: bool,
    #[arg(long)]
    pub out: PathBuf,
}

/// Files that travel with a checkpoint unchanged.
const SIDE_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "chat_template.jinja"];

pub fn run(args: ExportArgs) -> Result<()> {
    let adapter_dir = args.model.adapter.clone().context("export needs --adapter DIR")?;
    anyhow::ensure!(
        args.out.canonicalize().ok() != args.model.model.canonicalize().ok(),
        "--out must differ from --model (the base checkpoint is never overwritten)"
    );
    let mut policy = args.model.load()?;
    let adapter = policies::peft::load(&adapter_dir, &policy.model)?;
    if !args.merge {
        policies::peft::save(&adapter, &args.out, &policy.dir.display().to_string())?;
        eprintln!("wrote adapter to {}", args.out.display());
        return Ok(());
    }
    policy.model.merge_adapter(&adapter)?;
    write_checkpoint(&policy.model, &policy.dir, &args.out)?;
    eprintln!("wrote merged checkpoint to {}", args.out.display());
    Ok(())
}

/// `model`'s weights as a Hugging Face checkpoint in `out`, with the tokenizer and generation
/// files of the checkpoint it was loaded from (`source`).
pub fn write_checkpoint(model: &policies::Model, source: &Path, out: &Path) -> Result<()> {
    let weights = model.named_weights();
    policies::weights::save_safetensors(&out.join("model.safetensors"), &weights)?;
    let mut config = model.config.raw.clone();
    config["tie_word_embeddings"] = serde_json::Value::Bool(model.config.tie_word_embeddings);
    policies::init::write_json(&out.join("config.json"), &config)?;
    for name in SIDE_FILES {
        copy_if_present(&source.join(name), &out.join(name))?;
    }
    Ok(())
}

fn copy_if_present(from: &Path, to: &Path) -> Result<()> {
    if from.exists() {
        let bytes = std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
        policies::weights::write_atomic(to, &bytes)?;
    }
    Ok(())
}
