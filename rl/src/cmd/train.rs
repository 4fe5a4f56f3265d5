//! `noregret train CONFIG`: RL on an experiment file, into a run directory.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use clap::Args;

use crate::experiment::Experiment;
use crate::run_dir::CONFIG;
use crate::train::INTERRUPTED;

/// What `train` and `sft` take: an experiment file (or a run to resume) and overrides.
#[derive(Args)]
pub struct RunArgs {
    /// The experiment (TOML). Not needed with --resume.
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set rl.lr=2e-4 --set adapter.rank=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the run in this directory from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Samplers in other processes, through this Redis server (`redis://HOST:PORT/DB`; the
    /// password comes from the config or NOREGRET_REDIS_PASSWORD, never from here).
    #[arg(long, value_name = "URL")]
    pub transport: Option<String>,
}

impl RunArgs {
    /// The experiment file to read (the run's own config.toml when resuming) and, when
    /// resuming, the run directory to keep.
    pub fn source(&self, command: &str) -> Result<(PathBuf, Option<PathBuf>)> {
        match (&self.config, &self.resume) {
            (_, Some(dir)) => Ok((dir.join(CONFIG), Some(crate::experiment::absolute(dir)))),
            (Some(path), None) => Ok((path.clone(), None)),
            (None, None) => bail!("give an experiment file (noregret {command} CONFIG) or --resume RUN_DIR"),
        }
    }
}

pub fn run(args: TrainArgs, threads: Option<i32>) -> Result<()> {
    let TrainArgs { run: args, transport } = args;
    crate::remote::refuse_password_overrides(&args.set)?;
    let mut set = args.set.clone();
    if let Some(url) = &transport {
        set.push(format!("rollout.transport={url}"));
    }
    let (path, resume) = args.source("train")?;
    let mut exp = Experiment::load(&path, &set)?;
    if resume.is_some() {
        exp.run.out = resume;
    }
    if args.dry_run {
        print!("{}", crate::config::to_toml(&exp)?);
        return Ok(());
    }
    install_interrupt_handler("finishing the current step, then checkpointing");
    let outcome = crate::train::run(exp, args.resume.is_some(), threads)?;
    println!("{}", serde_json::to_string_pretty(&outcome.summary)?);
    eprintln!("run: {}", outcome.run_dir.display());
    Ok(())
}

/// First Ctrl-C: stop cleanly (`what` says how). Second: exit at once.
pub fn install_interrupt_handler(what: &'static str) {
    let _ = ctrlc::set_handler(move || {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: {what} (Ctrl-C again to quit now)");
    });
}
