//! `noregret bench`: the numbers the README quotes, measured the same way as the Python peers in
//! `bench/` (same shapes, same counting), one JSON line per configuration.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::model_args::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchKind,
}

#[derive(Subcommand)]
pub enum BenchKind {
    /// Sampled tokens/s: B random prompts of P tokens, exactly T new tokens each (no eos stop).
    Generate(GenerateBench),
    /// One policy-gradient learner step: forward, log-softmax, backward, AdamW.
    TrainStep(TrainStepBench),
}

#[derive(Args)]
pub struct TrainStepBench {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
    #[arg(long, default_value_t = 96)]
    pub seq_len: i64,
    /// Adapter rank on all linear layers; 0 trains every weight (full fine-tuning).
    #[arg(long, default_value_t = 2)]
    pub lora_rank: i64,
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// After timing, run one more step with libtorch's profiler on and write its op-level
    /// trace here (open in chrome://tracing or ui.perfetto.dev; `bench/trace_summary.py` sums it).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

#[derive(Args)]
pub struct GenerateBench {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub batch: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: i64,
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Rank of an all-layer adapter with non-zero B (0: no adapter).
    #[arg(long, default_value_t = 0)]
    pub lora_rank: i64,
    /// After timing, trace one more generation of the last batch size here (as for train-step).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchKind::Generate(g) => generate(g),
        BenchKind::TrainStep(t) => train_step(t),
    }
}

/// Median of `runs` timings of `f`, after one warm-up call; then, when `trace` names a file,
/// one more call recorded by libtorch's profiler into it.
pub fn median_seconds(runs: usize, trace: Option<&Path>, mut f: impl FnMut() -> Result<()>) -> Result<(f64, Vec<f64>)> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    if let Some(path) = trace {
        let _recording = policies::trace::Trace::start(path)?;
        f()?;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], times))
}

/// An all-layer adapter whose B is random, so the adapter math really changes the output.
pub fn busy_adapter(cfg: &policies::ModelConfig, rank: i64, device: Device) -> Result<policies::Adapter> {
    let config = policies::LoraConfig::new(rank, 32.0, policies::Module::LAYER_MODULES.to_vec())?;
    let adapter = policies::Adapter::init(cfg, config, 0, device);
    adapter.randomize_b(0.02, 0);
    Ok(adapter)
}

fn generate(args: GenerateBench) -> Result<()> {
    let policy = args.model.load()?;
    let model = &policy.model;
    let vocab = model.config.vocab_size;
    let adapter = if args.lora_rank > 0 { Some(busy_adapter(&model.config, args.lora_rank, model.device())?) } else { None };
    let lora = adapter.as_ref().map(|a| policies::LoraRuntime::single(&model.config, a, model.kind())).transpose()?;
    let params = policies::SamplingParams { max_new_tokens: args.new_tokens, ignore_eos: true, ..Default::default() };
    let threads = tch::get_num_threads();
    for &b in &args.batch {
        tch::manual_seed(0);
        let ids = Tensor::randint_low(4, vocab, [b as i64, args.prompt_len as i64], (Kind::Int64, Device::Cpu));
        let prompts: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&ids)?;
        let streams: Vec<u64> = (0..b as u64).collect();
        let trace = args.trace.as_deref().filter(|_| b == *args.batch.last().unwrap_or(&b));
        let (median, times) = median_seconds(args.runs, trace, || {
            let out = policy.generate(lora.as_ref(), &prompts, &streams, &params)?;
            anyhow::ensure!(out.iter().all(|c| c.tokens.len() as i64 == args.new_tokens), "short generation");
            Ok(())
        })?;
        let tokens = (b as i64 * args.new_tokens) as f64;
        println!("{}", json!({
            "bench": "generate", "impl": "noregret", "model": policy.dir, "batch": b, "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens, "lora_rank": args.lora_rank, "threads": threads,
            "median_s": median, "times_s": times, "tok_per_s": tokens / median,
            "ms_per_step": median * 1e3 / args.new_tokens as f64,
        }));
    }
    Ok(())
}

fn train_step(args: TrainStepBench) -> Result<()> {
    let mut policy = args.model.load()?;
    let cfg = policy.model.config.clone();
    let device = policy.model.device();
    let adapter = if args.lora_rank > 0 { Some(busy_adapter(&cfg, args.lora_rank, device)?) } else { None };
    let params = match &adapter {
        Some(a) => a.parameters(),
        None => policy.model.full_parameters(),
    };
    let trainable: usize = params.iter().map(Tensor::numel).sum();
    let mut opt = crate::optim::AdamW::new(params, crate::optim::AdamWConfig::default());
    tch::manual_seed(0);
    let tokens = Tensor::randint_low(4, cfg.vocab_size, [args.batch, args.seq_len], (Kind::Int64, device));
    let advantages = Tensor::randn([args.batch, 1], (Kind::Float, device));
    let model = &policy.model;
    let packer = adapter.as_ref().map(|a| policies::LoraPacker::new(&cfg, &[a])).transpose()?;
    let (median, times) = median_seconds(args.runs, args.trace.as_deref(), || {
        let lora = match (&packer, &adapter) {
            (Some(p), Some(a)) => Some(p.pack(&[a], model.kind())?),
            _ => None,
        };
        let logp = model.token_logprobs(&tokens, lora.as_ref());
        let loss = -(&advantages * logp).mean(Kind::Float);
        loss.backward();
        opt.step();
        opt.zero_grad();
        Ok(())
    })?;
    println!("{}", json!({
        "bench": "train_step", "impl": "noregret", "model": policy.dir, "batch": args.batch, "seq_len": args.seq_len,
        "lora_rank": args.lora_rank, "trainable": trainable, "optimizer_state": opt.state_numel(),
        "threads": tch::get_num_threads(), "median_s": median, "times_s": times,
        "tok_per_s": (args.batch * args.seq_len) as f64 / median, "peak_rss_mib": peak_rss_mib(),
    }));
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
