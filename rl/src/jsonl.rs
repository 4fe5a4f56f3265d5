//! Reading JSON lines with errors that name the source and the line number.

use std::io::BufRead;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Parse every non-blank line of `input` as `T`, calling `each(line_number, value)` in order.
/// A malformed line stops with `{source}:{line}: ...`.
pub fn for_each_line<T: DeserializeOwned>(
    input: impl BufRead,
    source: &str,
    mut each: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("{source}:{number}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: T = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{source}:{number}: malformed JSON line: {e}"))?;
        each(number, value)?;
    }
    Ok(())
}
