//! `noregret train CONFIG`: RL on an experiment file, into a run directory.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use clap::Args;

use crate::experiment::Experiment;
use crate::run_dir::CONFIG;
use crate::train::INTERRUPTED;

#[derive(Args)]
pub struct TrainArgs {
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
    /// Samplers in other processes, through this Redis server (`redis://HOST:PORT/DB`; the
    /// password comes from the config or NOREGRET_REDIS_PASSWORD, never from here).
    #[arg(long, value_name = "URL")]
    pub transport: Option<String>,
}

pub fn run(args: TrainArgs, threads: Option<i32>) -> Result<()> {
    let exp = load(&args)?;
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

fn load(args: &TrainArgs) -> Result<Experiment> {
    crate::remote::refuse_password_overrides(&args.set)?;
    let mut set = args.set.clone();
    if let Some(url) = &args.transport {
        set.push(format!("rollout.transport={url}"));
    }
    match (&args.config, &args.resume) {
        (_, Some(dir)) => {
            let mut exp = Experiment::load(&dir.join(CONFIG), &set)?;
            exp.run.out = Some(crate::experiment::absolute(dir));
            Ok(exp)
        }
        (Some(path), None) => Experiment::load(path, &set),
        (None, None) => bail!("give an experiment file (noregret train CONFIG) or --resume RUN_DIR"),
    }
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
