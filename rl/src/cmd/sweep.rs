//! `noregret sweep CONFIG` and `noregret report SWEEP_DIR`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SweepArgs {
    /// The sweep file (TOML with a [sweep] table).
    pub config: PathBuf,
    /// Write the report when the sweep is done.
    #[arg(long)]
    pub report: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    /// A sweep's directory (with sweep.json and its runs).
    pub sweep_dir: PathBuf,
    /// Where to write report.md and the PNGs (default: the sweep's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn sweep(args: SweepArgs, threads: Option<i32>) -> Result<()> {
    let out = crate::sweep::run(&args.config, threads)?;
    eprintln!("sweep: {}", out.display());
    if args.report {
        let r = crate::report::write(&out, None)?;
        eprintln!("report: {}", r.markdown.display());
    }
    Ok(())
}

pub fn report(args: ReportArgs) -> Result<()> {
    let r = crate::report::write(&args.sweep_dir, args.out.as_deref())?;
    println!("{}", r.markdown.display());
    for p in r.pngs {
        println!("{}", p.display());
    }
    Ok(())
}
