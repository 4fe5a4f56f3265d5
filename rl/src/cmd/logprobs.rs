//! `noregret logprobs`: log p(token_i | tokens_<i) for token lists on stdin, in f32.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::model_args::ModelArgs;

#[derive(Args)]
pub struct LogprobsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequences per forward batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

#[derive(Deserialize)]
struct TokensLine {
    tokens: Vec<i64>,
}

pub fn run(args: LogprobsArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let (policy, lora) = args.model.load_with_adapter()?;
    let vocab = policy.model.config.vocab_size;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut pending: Vec<Vec<i64>> = Vec::new();
    let stdin = std::io::stdin();
    crate::jsonl::for_each_line(stdin.lock(), "stdin", |number, line: TokensLine| {
        anyhow::ensure!(!line.tokens.is_empty(), "stdin:{number}: \"tokens\" is empty");
        if let Some(bad) = line.tokens.iter().find(|&&t| t < 0 || t >= vocab) {
            anyhow::bail!("stdin:{number}: token id {bad} is outside the vocabulary (size {vocab})");
        }
        policy.model.check_len(line.tokens.len()).map_err(|e| anyhow::anyhow!("stdin:{number}: {e}"))?;
        pending.push(line.tokens);
        if pending.len() == args.batch_size {
            write_batch(&policy.model, lora.as_ref(), &std::mem::take(&mut pending), &mut out)?;
        }
        Ok(())
    })?;
    write_batch(&policy.model, lora.as_ref(), &pending, &mut out)
}

fn write_batch(model: &policies::Model, lora: Option<&policies::LoraRuntime>, batch: &[Vec<i64>], out: &mut impl Write) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let _guard = tch::no_grad_guard();
    let width = batch.iter().map(Vec::len).max().unwrap_or(1) as i64;
    // Right padding: causal attention keeps it from touching the real tokens.
    let padded: Vec<i64> = batch.iter().flat_map(|t| t.iter().copied().chain(std::iter::repeat_n(0, width as usize - t.len()))).collect();
    let tokens = Tensor::from_slice(&padded).view([batch.len() as i64, width]).to_device(model.device());
    let rows: Vec<Vec<f32>> = if width < 2 {
        vec![Vec::new(); batch.len()]
    } else {
        let logp = model.token_logprobs(&tokens, lora).to_kind(Kind::Float).to_device(Device::Cpu);
        Vec::<Vec<f32>>::try_from(&logp)?
    };
    for (seq, row) in batch.iter().zip(rows) {
        let n = seq.len().saturating_sub(1);
        writeln!(out, "{}", serde_json::json!({ "logprobs": &row[..n] }))?;
    }
    out.flush()?;
    Ok(())
}
