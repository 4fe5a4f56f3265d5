//! `noregret init-model`: a randomly initialised checkpoint in HF format, with a character
//! tokenizer (the starting point of the built-in demo's supervised warm-up).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct InitModelArgs {
    /// arith (0.72M, the demo), tiny or small.
    #[arg(long, default_value = "arith")]
    pub preset: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Standard deviation of the initial weights.
    #[arg(long, default_value_t = 0.02)]
    pub init_std: f64,
}

pub fn run(args: InitModelArgs) -> Result<()> {
    let shape = policies::init::preset(&args.preset)?;
    policies::init::write_random_checkpoint(&args.out, &shape, args.seed, args.init_std)?;
    tracing::info!(out = %args.out.display(), preset = %args.preset, "wrote a random checkpoint");
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
