//! `noregret sample`: completions as JSON lines, with behaviour log-probs.

use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::model_args::ModelArgs;

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// One prompt.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// JSONL file of {"prompt": "..."} lines.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Samples per prompt.
    #[arg(short = 'n', long = "num-samples", default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: i64,
    /// 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Render prompts with the model's chat template (as a user message).
    #[arg(long)]
    pub chat: bool,
    /// Sequences per forward batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

#[derive(Deserialize)]
struct PromptLine {
    prompt: String,
}

pub fn run(args: SampleArgs) -> Result<()> {
    anyhow::ensure!(args.n >= 1, "-n must be at least 1");
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let prompts: Vec<String> = match (&args.prompt, &args.prompts) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(path)) => {
            let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let mut out = Vec::new();
            crate::jsonl::for_each_line(BufReader::new(file), &path.display().to_string(), |_, line: PromptLine| {
                out.push(line.prompt);
                Ok(())
            })?;
            anyhow::ensure!(!out.is_empty(), "{}: no prompts", path.display());
            out
        }
        (None, None) => anyhow::bail!("give --prompt or --prompts"),
    };
    let (policy, lora) = args.model.load_with_adapter()?;
    let params = policies::SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
        ignore_eos: false,
        seed: args.seed,
    };
    params.validate()?;
    let encoded: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| {
            if args.chat {
                policy.tokenizer.encode_chat(&[policies::Message::new("user", p)], true)
            } else {
                policy.tokenizer.encode(p, true)
            }
        })
        .collect::<policies::Result<_>>()?;

    // Every (prompt, sample) pair is one sequence with its own random stream.
    let jobs: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|p| (0..args.n).map(move |s| (p, s))).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for chunk in jobs.chunks(args.batch_size) {
        let batch: Vec<Vec<i64>> = chunk.iter().map(|&(p, _)| encoded[p].clone()).collect();
        let streams: Vec<u64> = chunk.iter().map(|&(p, s)| (p * args.n + s) as u64).collect();
        let completions = policy.generate(lora.as_ref(), &batch, &streams, &params)?;
        for (&(p, s), c) in chunk.iter().zip(completions) {
            let line = serde_json::json!({
                "prompt_index": p,
                "sample_index": s,
                "prompt": prompts[p],
                "text": c.text,
                "tokens": c.tokens,
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}
