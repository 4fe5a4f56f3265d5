//! A run is a directory: `config.toml` (resolved), `metrics.jsonl` (a line per step),
//! `samples.jsonl` (transcripts), `summary.json`, PNG plots, `adapter/` (PEFT) and
//! `checkpoints/`. Everything a report, a resume or a sweep needs is read back from here.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";
pub const SAMPLES: &str = "samples.jsonl";
pub const SUMMARY: &str = "summary.json";
pub const CHECKPOINTS: &str = "checkpoints";
pub const ADAPTER: &str = "adapter";

pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// A new run: refuses a directory that already holds one (use `--resume` for that), so
    /// nothing of an earlier run is lost.
    pub fn create(path: &Path) -> Result<RunDir> {
        if path.join(METRICS).exists() || path.join(CHECKPOINTS).exists() {
            bail!("{}: a run already exists here; resume it with --resume {} or choose another [run] out", path.display(), path.display());
        }
        std::fs::create_dir_all(path).with_context(|| format!("{}: cannot create the run directory", path.display()))?;
        Ok(RunDir { path: path.to_path_buf() })
    }

    /// An existing run, to resume.
    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.join(CONFIG).is_file() {
            bail!("{}: not a run directory (no {CONFIG})", path.display());
        }
        Ok(RunDir { path: path.to_path_buf() })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.file(name), bytes)
    }

    pub fn write_json(&self, name: &str, value: &Value) -> Result<()> {
        self.write(name, format!("{}\n", serde_json::to_string_pretty(value)?).as_bytes())
    }

    /// Append one JSON line (and flush it: a crash loses at most the line being written).
    pub fn append(&self, name: &str, value: &Value) -> Result<()> {
        let path = self.file(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        writeln!(f, "{value}").with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    }

    /// On resume: keep only the lines of steps up to `step` (later ones are redone), and drop a
    /// line torn by a crash.
    pub fn truncate_after(&self, name: &str, step: u64) -> Result<()> {
        let path = self.file(name);
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l).ok().and_then(|v| v.get("step").and_then(Value::as_u64)).is_some_and(|s| s <= step)
            })
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        write_atomic(&path, out.as_bytes())
    }

    /// Every parseable line of a JSON-lines file of the run (a torn last line is skipped).
    pub fn read_lines(&self, name: &str) -> Vec<Value> {
        read_json_lines(&self.file(name))
    }
}

pub fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// Write through a temporary file in the same directory and rename it into place: a reader
/// (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    policies::weights::write_atomic(path, bytes).map_err(anyhow::Error::from)
}
