//! `noregret verify`: grade responses against gold answers with the native math verifier.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct VerifyArgs {}

pub fn run(_args: VerifyArgs) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stats = rewards::cli::verify_jsonl(stdin.lock(), stdout.lock()).map_err(|e| anyhow::anyhow!("stdin: {e}"))?;
    tracing::info!(lines = stats.lines, correct = stats.correct, no_answer = stats.no_answer, "verified");
    Ok(())
}
