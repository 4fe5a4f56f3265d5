//! A model with its tokenizer: what the CLI, the samplers and the learner load.

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::error::{Error, Result};
use crate::generate::{Completion, Generation};
use crate::invalid;
use crate::lora::LoraRuntime;
use crate::model::Model;
use crate::sampling::SamplingParams;
use crate::tokenizer::TextTokenizer;

pub struct Policy {
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: TextTokenizer,
}

impl Policy {
    pub fn load(dir: &Path, dtype: Option<Kind>, device: Device) -> Result<Policy> {
        if !dir.is_dir() {
            return Err(Error::bad_file(dir, "model directory not found"));
        }
        let model = Model::load(dir, dtype, device)?;
        let tokenizer = TextTokenizer::load(dir, &model.config.eos_token_ids)?;
        Ok(Policy { dir: dir.to_path_buf(), model, tokenizer })
    }

    /// Sample one completion per prompt (see [`Generation::run`]).
    pub fn generate(&self, lora: Option<&LoraRuntime>, prompts: &[Vec<i64>], streams: &[u64], params: &SamplingParams) -> Result<Vec<Completion>> {
        let decode = |ids: &[i64]| self.tokenizer.decode(ids);
        let generation = Generation { model: &self.model, lora, eos_ids: &self.tokenizer.eos_ids, decode: &decode };
        generation.run(prompts, streams, params)
    }
}

/// Parse `cpu`, `cuda` or `cuda:N`, refusing CUDA when libtorch sees no GPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec.trim() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => return Err(invalid!("unknown device {spec:?} (expected cpu, cuda or cuda:N)")),
        },
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(invalid!("device {spec:?} requested but libtorch sees {count} CUDA device(s)"));
        }
    }
    Ok(device)
}
