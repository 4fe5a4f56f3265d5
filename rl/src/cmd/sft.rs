//! `noregret sft CONFIG`: supervised fine-tuning into a run directory.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::run_dir::CONFIG;
use crate::sft::config::SftExperiment;

#[derive(Args)]
pub struct SftArgs {
    /// The experiment (TOML). Not needed with --resume.
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set sft.lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the run in this directory from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
}

pub fn run(args: SftArgs, threads: Option<i32>) -> Result<()> {
    let exp = match (&args.config, &args.resume) {
        (_, Some(dir)) => {
            let mut exp = SftExperiment::load(&dir.join(CONFIG), &args.set)?;
            exp.run.out = Some(crate::experiment::absolute(dir));
            exp
        }
        (Some(path), None) => SftExperiment::load(path, &args.set)?,
        (None, None) => bail!("give an experiment file (noregret sft CONFIG) or --resume RUN_DIR"),
    };
    if args.dry_run {
        print!("{}", crate::config::to_toml(&exp)?);
        return Ok(());
    }
    crate::cmd::train::install_interrupt_handler("finishing the current step, then checkpointing");
    let outcome = crate::sft::run(exp, args.resume.is_some(), threads)?;
    println!("{}", serde_json::to_string_pretty(&outcome.summary)?);
    eprintln!("run: {}", outcome.run_dir.display());
    Ok(())
}
