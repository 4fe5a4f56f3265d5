//! `noregret sweep CONFIG`: a grid of `train` or `sft` runs over any config keys, each a normal
//! run directory under the sweep's directory, one after another or N at a time within a thread
//! budget. A stopped sweep resumes: finished runs are skipped, an interrupted one resumes from
//! its checkpoint.
//!
//! ```toml
//! [sweep]
//! base = "arith.toml"          # a train or sft experiment, relative to this file
//! command = "train"            # or "sft"
//! out = "runs/sweep-rank"
//! parallel = 1                 # runs at a time
//! seeds = [0, 1]               # shorthand for a run.seed axis
//! set = { "rl.steps" = 600 }   # the same for every run
//!
//! [[sweep.grid]]               # each table is a full product; the sweep is their union
//! "adapter.rank" = [1, 2, 4]
//! "rl.lr" = [1e-4, 3e-4, 1e-3]
//!
//! [[sweep.grid]]
//! "adapter.rank" = ["full"]
//! "rl.lr" = [1e-5, 3e-5, 1e-4]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::run_dir::{CHECKPOINTS, CONFIG, SUMMARY};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub sweep: SweepSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepCommand {
    Train,
    Sft,
}

impl SweepCommand {
    pub fn name(self) -> &'static str {
        match self {
            SweepCommand::Train => "train",
            SweepCommand::Sft => "sft",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    pub base: PathBuf,
    #[serde(default = "train")]
    pub command: SweepCommand,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    #[serde(default = "one")]
    pub parallel: usize,
    /// CPU threads for the whole sweep (default: the cores this process may use), shared
    /// evenly by the runs going at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default)]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    pub grid: Vec<BTreeMap<String, Vec<toml::Value>>>,
}

fn train() -> SweepCommand {
    SweepCommand::Train
}
fn one() -> usize {
    1
}

/// One run of the sweep: its directory name and the overrides that make it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    pub name: String,
    /// The grid's keys and values for this run (also the report's axes).
    pub point: BTreeMap<String, toml::Value>,
}

/// What `sweep.json` records: enough for `report` to read the sweep back from its directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub command: SweepCommand,
    pub base: PathBuf,
    pub set: BTreeMap<String, toml::Value>,
    pub runs: Vec<PlannedRun>,
}

pub const PLAN: &str = "sweep.json";

impl SweepFile {
    pub fn load(path: &Path) -> Result<(SweepFile, PathBuf)> {
        let mut file: SweepFile = crate::config::load(path, &[])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        file.sweep.base = crate::experiment::absolute(&dir.join(&file.sweep.base));
        let out = match &file.sweep.out {
            Some(o) => crate::experiment::absolute(o),
            None => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
                crate::experiment::absolute(&PathBuf::from("runs").join(stem))
            }
        };
        if file.sweep.grid.is_empty() || file.sweep.grid.iter().any(|g| g.is_empty() || g.values().any(Vec::is_empty)) {
            bail!("{}: [[sweep.grid]] needs at least one table, each key with at least one value", path.display());
        }
        if file.sweep.parallel == 0 {
            bail!("{}: [sweep] parallel must be at least 1", path.display());
        }
        Ok((file, out))
    }

    /// Every run: the union of each grid table's product, each with each seed.
    pub fn plan(&self) -> Plan {
        let s = &self.sweep;
        let mut runs: Vec<PlannedRun> = Vec::new();
        for table in &s.grid {
            let mut axes: Vec<(String, Vec<toml::Value>)> = table.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if !s.seeds.is_empty() && !table.contains_key("run.seed") {
                axes.push(("run.seed".into(), s.seeds.iter().map(|&v| toml::Value::Integer(v as i64)).collect()));
            }
            let mut points: Vec<BTreeMap<String, toml::Value>> = vec![BTreeMap::new()];
            for (key, values) in &axes {
                points = points
                    .iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut p = p.clone();
                            p.insert(key.clone(), v.clone());
                            p
                        })
                    })
                    .collect();
            }
            for point in points {
                let name = run_name(&point);
                if !runs.iter().any(|r| r.name == name) {
                    runs.push(PlannedRun { name, point });
                }
            }
        }
        Plan { command: s.command, base: s.base.clone(), set: s.set.clone(), runs }
    }
}

/// A directory name from a point: `adapter.rank=2, rl.lr=3e-4` → `rank-2_lr-3e-4`.
pub fn run_name(point: &BTreeMap<String, toml::Value>) -> String {
    point
        .iter()
        .map(|(k, v)| {
            let key = k.rsplit('.').next().unwrap_or(k);
            let value = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Float(f) => format!("{f:e}").replace("e0", "").replace('+', ""),
                other => other.to_string(),
            };
            let value: String = value.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
            format!("{key}-{value}")
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// `--set key=value` arguments for a point (values written as TOML).
fn overrides(set: &BTreeMap<String, toml::Value>, point: &BTreeMap<String, toml::Value>, out: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for (k, v) in set.iter().chain(point) {
        args.push("--set".to_string());
        args.push(format!("{k}={v}"));
    }
    args.push("--set".to_string());
    args.push(format!("run.out={}", toml::Value::String(out.display().to_string())));
    args
}

/// Where a run stands, from its directory alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    NotStarted,
    /// Started, with at least one complete checkpoint.
    Resumable,
    /// Started but killed before its first checkpoint: start again.
    Stale,
    Finished,
}

pub fn run_state(dir: &Path) -> RunState {
    if dir.join(SUMMARY).exists() {
        RunState::Finished
    } else if dir.join(CHECKPOINTS).join("index.jsonl").exists() {
        RunState::Resumable
    } else if dir.join(CONFIG).exists() {
        RunState::Stale
    } else {
        RunState::NotStarted
    }
}

/// Run (or resume) every planned run that is not finished, `parallel` at a time.
pub fn run(path: &Path, threads_flag: Option<i32>) -> Result<PathBuf> {
    let (file, out) = SweepFile::load(path)?;
    let plan = file.plan();
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let plan_path = out.join(PLAN);
    if let Ok(text) = std::fs::read_to_string(&plan_path) {
        let old: Plan = serde_json::from_str(&text).with_context(|| format!("{}: not a sweep plan", plan_path.display()))?;
        // The same sweep, or the same one with more points (a grid extended): its finished
        // runs still count. Anything else would mix two experiments in one directory.
        let extends = old.command == plan.command && old.base == plan.base && old.set == plan.set && old.runs.iter().all(|r| plan.runs.contains(r));
        if !extends {
            bail!("{}: holds a different sweep (other base, settings or points); use another [sweep] out or remove it", out.display());
        }
    }
    crate::run_dir::write_atomic(&plan_path, serde_json::to_string_pretty(&plan)?.as_bytes())?;
    let parallel = file.sweep.parallel;
    let budget = file.sweep.threads.unwrap_or_else(|| crate::plan::ThreadPlan::cores(threads_flag));
    let per_run = (budget / parallel).max(1);
    let exe = std::env::current_exe().context("cannot find the noregret executable")?;
    let mut pending: Vec<&PlannedRun> = plan.runs.iter().filter(|r| run_state(&out.join(&r.name)) != RunState::Finished).collect();
    let total = plan.runs.len();
    eprintln!("sweep {}: {} runs, {} to do, {parallel} at a time with {per_run} threads each", out.display(), total, pending.len());
    pending.reverse();
    let mut running: Vec<(String, Child, Instant)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < parallel {
            let Some(r) = pending.pop() else { break };
            let dir = out.join(&r.name);
            let mut cmd = Command::new(&exe);
            cmd.args(["--threads", &per_run.to_string(), plan.command.name()]);
            match run_state(&dir) {
                RunState::Resumable => {
                    cmd.args(["--resume", &dir.display().to_string()]);
                }
                state => {
                    if state == RunState::Stale {
                        std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot clear", dir.display()))?;
                    }
                    cmd.arg(&plan.base).args(overrides(&plan.set, &r.point, &dir));
                }
            }
            std::fs::create_dir_all(&out)?;
            let log = std::fs::File::create(out.join(format!("{}.log", r.name)))?;
            cmd.stdout(log.try_clone()?).stderr(log);
            let child = cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
            eprintln!("  start {}", r.name);
            running.push((r.name.clone(), child, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (name, mut child, started) in running {
            match child.try_wait()? {
                Some(status) if status.success() => eprintln!("  done  {name} ({:.0} s)", started.elapsed().as_secs_f64()),
                Some(status) => {
                    eprintln!("  FAILED {name} ({status}); see {}", out.join(format!("{name}.log")).display());
                    failures.push(name);
                }
                None => still.push((name, child, started)),
            }
        }
        running = still;
    }
    if !failures.is_empty() {
        bail!("{} of {total} runs failed: {}", failures.len(), failures.join(", "));
    }
    Ok(out)
}
