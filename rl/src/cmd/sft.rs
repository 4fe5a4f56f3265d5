//! `noregret sft CONFIG`: supervised fine-tuning into a run directory.

use anyhow::Result;

use crate::cmd::train::RunArgs;
use crate::sft::config::SftExperiment;

pub fn run(args: RunArgs, threads: Option<i32>) -> Result<()> {
    let (path, resume) = args.source("sft")?;
    let mut exp = SftExperiment::load(&path, &args.set)?;
    if resume.is_some() {
        exp.run.out = resume;
    }
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
