//! How a command loads a model: the `--model/--dtype/--device/--adapter` flags every
//! subcommand that runs one shares.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

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
        load_policy(&self.model, self.dtype.as_deref(), &self.device)
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


/// Load a checkpoint directory on `device` (`cpu`, `cuda`, `cuda:N`), in `dtype` (`float32`,
/// `bfloat16`, `float16`; default: the checkpoint's).
pub fn load_policy(dir: &Path, dtype: Option<&str>, device: &str) -> Result<policies::Policy> {
    let dtype = match dtype {
        Some(name) => Some(
            policies::config::parse_dtype(name)
                .ok_or_else(|| anyhow::anyhow!("unknown dtype {name:?} (expected float32, bfloat16 or float16)"))?,
        ),
        None => None,
    };
    let device = policies::parse_device(device)?;
    Ok(policies::Policy::load(dir, dtype, device)?)
}
