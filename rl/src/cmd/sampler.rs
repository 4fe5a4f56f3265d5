//! `noregret sampler --connect redis://… CONFIG`: a sampler process for a learner that runs
//! `noregret train` with a Redis transport, on any machine with the base model on disk. It
//! plays the work the learner releases with the learner's newest adapter and appends the
//! finished groups; it may join and leave at any time, and exits when the run is finished.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;

use crate::experiment::{Experiment, KvOnSwap};
use crate::plan::ThreadPlan;
use crate::train::INTERRUPTED;
use rollout::broker::sampler::{wait_for_learner, GroupsOut, Mirror, RemoteWork};
use rollout::{Control, Engine, EngineConfig, SamplerConfig, Shared};

#[derive(Args)]
pub struct SamplerArgs {
    /// The run's experiment file: the base model on this machine ([model]), the env and the
    /// rewards, which must match the learner's.
    pub config: PathBuf,
    /// The Redis server, `redis://HOST:PORT/DB` (default: the config's [rollout] transport).
    /// The password comes from the config or NOREGRET_REDIS_PASSWORD, never from here.
    #[arg(long, value_name = "URL")]
    pub connect: Option<String>,
    /// Override a config key, e.g. --set model.path=/data/base (repeatable; not the password).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sampler threads in this process, each with its own batch of sequences (default 1).
    #[arg(long, default_value_t = 1)]
    pub samplers: usize,
    /// Sequences each sampler thread generates side by side (default: its share of a batch
    /// when the config's [rollout] samplers processes share the work).
    #[arg(long)]
    pub slots: Option<usize>,
    /// This sampler's name on the server (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
}

/// How often the process reports counters and renews the work it holds.
const TICK: Duration = Duration::from_millis(200);
const STATS_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: SamplerArgs, threads: Option<i32>) -> Result<()> {
    crate::remote::refuse_password_overrides(&args.set)?;
    let exp = Experiment::load(&args.config, &args.set)?;
    let url = args.connect.clone().or_else(|| exp.rollout.transport.clone()).ok_or_else(|| {
        anyhow!("give the learner's server: --connect redis://HOST:PORT/DB (or [rollout] transport in {})", args.config.display())
    })?;
    let config = crate::remote::broker_config(&exp, &url)?;
    crate::cmd::train::install_interrupt_handler("handing back the work in hand, then leaving");
    let keep_waiting = || !INTERRUPTED.load(Ordering::SeqCst);
    let Some(registration) = wait_for_learner(&config, &keep_waiting)? else { bail!("interrupted while waiting for a learner") };
    let fingerprint = policies::weights::fingerprint(&exp.model.path)?;
    if fingerprint != registration.fingerprint {
        bail!(
            "{}: this sampler's base model {} has fingerprint {fingerprint}, the learner's has {}; both must use the same base model",
            url,
            exp.model.path.display(),
            registration.fingerprint
        );
    }
    crate::remote::check_contract(&crate::remote::contract(&exp), &registration.contract)?;

    let policy = crate::model_args::load_policy(&exp.model.path, exp.model.dtype.as_deref(), &exp.model.device)?;
    let cuda = policy.model.device() != tch::Device::Cpu;
    let cores = ThreadPlan::cores(threads);
    let plan = ThreadPlan::new(&exp.rollout, exp.group_size(), cuda, cores);
    let samplers = args.samplers.max(1);
    let model = Arc::new(policy.model);
    let reward: Option<Arc<dyn rewards::Reward>> =
        if exp.reward.is_empty() { None } else { Some(Arc::from(rewards::build(&exp.reward).map_err(|e| anyhow!("[[reward]]: {e}"))?)) };
    let factory = exp.env.build_factory(reward).map_err(|e| anyhow!("[env]: {e}"))?;
    let factory = crate::faults::hang_on_group(factory, exp.group_size());

    let name = args.name.clone().unwrap_or_else(default_name);
    let control = Arc::new(Control::new());
    let mirror = Mirror::start(&config, model.clone(), registration)?;
    let (versions, seen) = (mirror.slot(), mirror.state());
    let mirror_thread = mirror.spawn(control.clone());
    let work = Arc::new(RemoteWork::new(&config, &name, factory, exp.group_size(), seen.clone(), control.clone())?);
    let transport = Arc::new(GroupsOut::new(&config, work.clone())?);
    let sampler = SamplerConfig {
        slots: args.slots.unwrap_or(plan.slots),
        micro_turn_tokens: exp.rollout.micro_turn_tokens,
        sampling: exp.sampling(),
        max_episode_tokens: exp.rollout.max_episode_tokens,
        threads: if cuda { 1 } else { (cores / samplers).max(1) },
        deterministic: exp.rollout.max_staleness == 0,
        recompute_on_swap: exp.rollout.kv_on_swap == KvOnSwap::Recompute,
    };
    let engine_config = EngineConfig { samplers, sampler, reward_workers: plan.reward_workers };
    let shared = Shared { model, tokenizer: Arc::new(policy.tokenizer), versions, work: work.clone(), transport: transport.clone(), control: control.clone() };
    let engine = Engine::start(engine_config, &name, shared);
    transport.report(engine.stats());
    eprintln!("sampler {name}: sampling for the learner on {url} (version {})", seen.current().1);

    let (mut renewed, mut reported) = (Instant::now(), Instant::now());
    let outcome = loop {
        std::thread::sleep(TICK);
        if let Some(failure) = control.failure() {
            break Err(anyhow!("{failure}"));
        }
        if seen.finished() {
            eprintln!("sampler {name}: the learner finished its run");
            break Ok(());
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break Ok(());
        }
        if renewed.elapsed() >= config.claim_after / 3 {
            if let Err(e) = work.renew() {
                break Err(e.into());
            }
            renewed = Instant::now();
        }
        if reported.elapsed() >= STATS_EVERY {
            if let Err(e) = transport.push_stats() {
                break Err(e.into());
            }
            reported = Instant::now();
        }
    };
    engine.stop();
    let _ = mirror_thread.join();
    if outcome.is_ok() {
        // Leaving on purpose: what this process held starts elsewhere at once.
        work.release()?;
        transport.push_stats()?;
    }
    outcome
}

/// `host-pid`: unique among the samplers of a run, readable in the server's consumer list.
fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
    format!("{}-{}", host.unwrap_or_else(|| "sampler".into()), std::process::id())
}
