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
    /// The rollout engine (micro-turns, a new adapter version every micro-turn) against
    /// whole-sequence generate with a fixed adapter: same prompts and lengths.
    Rollout(RolloutBench),
    /// Whole RL steps of `noregret train` (sample, score, learn) on "a+b=" problems: the
    /// settings of TRL's GRPOTrainer peer (bench/peer.py grpo).
    RlStep(RlStepBench),
}

#[derive(Args)]
pub struct RlStepBench {
    /// Base model directory.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 6)]
    pub steps: u64,
    /// Completions per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Completions per prompt.
    #[arg(long, default_value_t = 8)]
    pub group: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: i64,
    /// The lag budget: 0 alternates sampling and learning; 1 lets them overlap.
    #[arg(long, default_value_t = 0)]
    pub max_staleness: u64,
    /// Override a key of the run's config, e.g. --set rollout.samplers=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args)]
pub struct RolloutBench {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequences (one prompt each).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Prompt tokens (random letters, one token each with the benchmark tokenizers, after <bos>).
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// New tokens per sequence (eos ignored).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: i64,
    #[arg(long, default_value_t = 8)]
    pub micro_turn_tokens: usize,
    /// Rank of the all-layer adapter (non-zero B).
    #[arg(long, default_value_t = 2)]
    pub lora_rank: i64,
    #[arg(long, default_value_t = 1)]
    pub samplers: usize,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
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

pub fn run(args: BenchArgs, threads: Option<i32>) -> Result<()> {
    match args.what {
        BenchKind::Generate(g) => generate(g),
        BenchKind::TrainStep(t) => train_step(t),
        BenchKind::Rollout(r) => rollout(r),
        BenchKind::RlStep(r) => rl_step(r, threads),
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

fn rl_step(args: RlStepBench, threads: Option<i32>) -> Result<()> {
    anyhow::ensure!(args.group >= 1 && args.batch.is_multiple_of(args.group), "--batch must be a multiple of --group");
    let dir = tempfile_dir()?;
    let text = format!(
        "[model]\npath = {model:?}\n[adapter]\nrank = 2\nalpha = 32\n[env.problems]\nsource = \"arith\"\nlevel = \"add3\"\ntest_size = 8\n\
         [rollout]\ngroup_size = {group}\ngroups_per_step = {groups}\nmax_new_tokens = {new}\ntemperature = 1.0\nmax_staleness = {s}\n\
         [rl]\nsteps = {steps}\nlr = 1e-5\ndrop_uniform_groups = false\n[eval]\nevery = 0\nproblems = 1\n\
         [run]\nout = {out:?}\ncheckpoint_every = 0\nsamples_every = 0\n",
        model = args.model.display().to_string(),
        group = args.group,
        groups = args.batch / args.group,
        new = args.new_tokens,
        s = args.max_staleness,
        steps = args.steps,
        out = dir.join("run").display().to_string(),
    );
    let path = dir.join("rl-step.toml");
    std::fs::write(&path, text)?;
    let exp = crate::experiment::Experiment::load(&path, &args.set)?;
    let outcome = crate::train::run(exp, false, threads);
    let metrics = crate::run_dir::read_json_lines(&dir.join("run").join(crate::run_dir::METRICS));
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    // Steady state: every step after the first.
    let steps: Vec<&serde_json::Value> = metrics.iter().filter(|l| l.get("loss").is_some()).skip(1).collect();
    let median = |key: &str| {
        let mut v: Vec<f64> = steps.iter().filter_map(|l| l.get(key).and_then(serde_json::Value::as_f64)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!("{}", json!({
        "bench": "rl_step", "impl": "noregret", "model": args.model, "batch": args.batch, "group": args.group,
        "new_tokens": args.new_tokens, "steps": args.steps, "max_staleness": args.max_staleness,
        "s_per_step": median("step_seconds"), "wait_s": median("wait_seconds"), "learner_s": median("learner_seconds"),
        "sampling_s": median("sampler_busy_seconds"), "scoring_s": median("scoring_seconds"),
        "completion_tokens_mean": median("completion_tokens_mean"), "sampled_tokens_per_s": median("sampled_tokens_per_s"),
        "step_times_s": steps.iter().filter_map(|l| l.get("step_seconds")).collect::<Vec<_>>(),
        "threads": tch::get_num_threads(),
    }));
    Ok(())
}

/// A fresh scratch directory under the system's temp directory.
fn tempfile_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("noregret-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rollout(args: RolloutBench) -> Result<()> {
    use std::sync::Arc;
    anyhow::ensure!(args.batch >= 1 && args.samplers >= 1 && args.lora_rank >= 1, "--batch, --samplers and --lora-rank must be positive");
    let policy = args.model.load()?;
    let threads = tch::get_num_threads().max(1) as usize;
    let adapter = busy_adapter(&policy.model.config, args.lora_rank, policy.model.device())?;
    let mut rng = policies::rng::SplitMix::new(7);
    let prompts: Vec<String> = (0..args.batch)
        .map(|_| (0..args.prompt_len.saturating_sub(1)).map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char).collect())
        .collect();
    let params = policies::SamplingParams { max_new_tokens: args.new_tokens, ignore_eos: true, ..Default::default() };
    let model = Arc::new(policy.model);
    let tokenizer = Arc::new(policy.tokenizer);
    let lora = tch::no_grad(|| policies::LoraRuntime::single(&model.config, &adapter, model.kind()))?;
    let encoded: Vec<Vec<i64>> = prompts.iter().map(|p| tokenizer.encode(p, true)).collect::<policies::Result<_>>()?;
    let streams: Vec<u64> = (0..args.batch as u64).collect();
    let per_thread = (threads / args.samplers).max(1);
    let engine = |publish: bool, recompute: bool| {
        crate::bench_rollout::engine_run(model.clone(), tokenizer.clone(), &adapter, &prompts, &params, args.micro_turn_tokens, args.samplers, per_thread, recompute, publish)
    };
    let generate = || -> Result<(f64, u64)> {
        let start = Instant::now();
        let decode = |ids: &[i64]| tokenizer.decode(ids);
        let generation = policies::Generation { model: &model, lora: Some(&lora), eos_ids: &tokenizer.eos_ids, decode: &decode };
        let out = generation.run(&encoded, &streams, &params)?;
        Ok((start.elapsed().as_secs_f64(), out.iter().map(|c| c.tokens.len() as u64).sum()))
    };
    // The same generate on a thread of its own, as samplers run: a second OpenMP thread pool in
    // the process costs libgomp's spin-waiting (see docs/performance.md), so this is the
    // like-for-like baseline for the engine.
    let generate_on_thread = || -> Result<(f64, u64)> {
        let (model, tokenizer, encoded, streams, params, rank) = (model.clone(), tokenizer.clone(), encoded.clone(), streams.clone(), params.clone(), args.lora_rank);
        std::thread::spawn(move || -> Result<(f64, u64)> {
            let _no_grad = tch::no_grad_guard();
            policies::threads::set_thread_budget(threads);
            // The same adapter, made again here (adapters are not shared across threads).
            let adapter = busy_adapter(&model.config, rank, model.device())?;
            let lora = policies::LoraRuntime::single(&model.config, &adapter, model.kind())?;
            let start = Instant::now();
            let decode = |ids: &[i64]| tokenizer.decode(ids);
            let generation = policies::Generation { model: &model, lora: Some(&lora), eos_ids: &tokenizer.eos_ids, decode: &decode };
            let out = generation.run(&encoded, &streams, &params)?;
            Ok((start.elapsed().as_secs_f64(), out.iter().map(|c| c.tokens.len() as u64).sum()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generate thread panicked"))?
    };
    // Warm-up, then interleaved rounds: publish-every-micro-turn (cache kept / recomputed),
    // a fixed version, and generate.
    engine(true, false)?;
    // Memory of the samplers alone (before generate's own cache exists).
    let rss_engine = peak_rss_mib();
    generate()?;
    let (mut keep, mut recompute, mut fixed, mut whole, mut whole_thread) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut latency, mut latency_max, mut swaps) = (Vec::new(), 0f64, 0u64);
    for _ in 0..args.runs.max(1) {
        let r = engine(true, false)?;
        keep.push(r.tokens as f64 / r.seconds);
        latency.push(r.swap_latency_mean_s);
        latency_max = latency_max.max(r.swap_latency_max_s);
        swaps += r.swaps;
        let r = engine(true, true)?;
        recompute.push(r.tokens as f64 / r.seconds);
        let r = engine(false, false)?;
        fixed.push(r.tokens as f64 / r.seconds);
        let (s, t) = generate()?;
        whole.push(t as f64 / s);
        let (s, t) = generate_on_thread()?;
        whole_thread.push(t as f64 / s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (keep, recompute, fixed, whole, whole_thread) =
        (median(&mut keep), median(&mut recompute), median(&mut fixed), median(&mut whole), median(&mut whole_thread));
    println!("{}", json!({
        "bench": "rollout", "impl": "noregret", "model": args.model.model, "batch": args.batch, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "micro_turn_tokens": args.micro_turn_tokens, "lora_rank": args.lora_rank,
        "samplers": args.samplers, "threads": threads,
        "tok_per_s_new_version_every_micro_turn": keep,
        "tok_per_s_new_version_every_micro_turn_recompute": recompute,
        "tok_per_s_fixed_version": fixed,
        "tok_per_s_generate": whole,
        "tok_per_s_generate_on_thread": whole_thread,
        "overhead_vs_generate": 1.0 - keep / whole,
        "overhead_vs_generate_on_thread": 1.0 - keep / whole_thread,
        "overhead_vs_generate_on_thread_recompute": 1.0 - recompute / whole_thread,
        "swaps_per_run": swaps as f64 / args.runs.max(1) as f64,
        "swap_latency_ms": median(&mut latency) * 1e3, "swap_latency_max_ms": latency_max * 1e3,
        "peak_rss_mib_samplers": rss_engine,
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
