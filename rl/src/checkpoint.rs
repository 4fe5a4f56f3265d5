//! Checkpoints: everything a resumed run needs to continue exactly where it stopped.
//!
//! `checkpoints/step-000040/` holds `trainer.safetensors` (the trained tensors and the AdamW
//! moments), `state.json` (step, version, stream position, counters, the base model's
//! fingerprint, what is trained, and the SHA-256 of the tensor file) and, for adapters, a PEFT
//! copy under `adapter/`. A checkpoint is written into a hidden temporary directory and renamed
//! into place; only then is it appended to `checkpoints/index.jsonl`. A crash mid-write leaves
//! a temporary directory that resume ignores; a listed checkpoint whose files do not match
//! their hash, or that was made for another model or adapter, is refused with a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::run_dir::{read_json_lines, RunDir, CHECKPOINTS};

pub const FORMAT: u32 = 1;
const TENSORS: &str = "trainer.safetensors";
const STATE: &str = "state.json";
const INDEX: &str = "index.jsonl";

/// The loop's state besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// Batches done.
    pub step: u64,
    /// The adapter version the learner is at.
    pub version: u64,
    pub optimizer_steps: i64,
    pub stream: rollout::StreamPosition,
    /// The base model's fingerprint and what is trained (`lora r=2 alpha=32 targets=all`).
    pub model_fingerprint: String,
    pub trainable: String,
    /// Counters that carry over (dropped groups, eval at start, wall time so far...).
    pub carry: BTreeMap<String, Value>,
    /// SHA-256 of the tensor file.
    pub tensors_sha256: String,
}

/// The trained tensors and their optimiser moments.
pub struct TrainTensors {
    pub params: Vec<Tensor>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
}

pub fn dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Write checkpoint `state.step` atomically, then list it; keep the newest `keep` (0: all).
/// `peft`: writes the PEFT copy of the adapter into the given directory.
/// Writes extra files (a PEFT copy of the adapter) into a checkpoint directory being made.
pub type ExtraFiles<'a> = &'a dyn Fn(&Path) -> Result<()>;

pub fn save(run: &RunDir, mut state: TrainState, tensors: &TrainTensors, keep: usize, peft: Option<ExtraFiles>) -> Result<PathBuf> {
    let root = run.file(CHECKPOINTS);
    std::fs::create_dir_all(&root).with_context(|| format!("{}: cannot create", root.display()))?;
    let name = dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (kind, list) in [("param", &tensors.params), ("exp_avg", &tensors.exp_avg), ("exp_avg_sq", &tensors.exp_avg_sq)] {
        for (i, t) in list.iter().enumerate() {
            named.push((format!("{kind}.{i}"), t.detach()));
        }
    }
    let tensor_path = tmp.join(TENSORS);
    policies::weights::save_safetensors(&tensor_path, &named)?;
    state.tensors_sha256 = sha256_file(&tensor_path)?;
    state.format = FORMAT;
    if let Some(write_peft) = peft {
        write_peft(&tmp.join("adapter"))?;
    }
    crate::run_dir::write_atomic(&tmp.join(STATE), serde_json::to_string_pretty(&state)?.as_bytes())?;
    crate::faults::crash_if("in_checkpoint", state.step);
    let dest = root.join(&name);
    if dest.exists() {
        // A step redone after a resume replaces its earlier checkpoint.
        std::fs::remove_dir_all(&dest).with_context(|| format!("{}: cannot replace", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("{}: cannot move into place", dest.display()))?;
    run.append(&format!("{CHECKPOINTS}/{INDEX}"), &json!({"step": state.step, "dir": name, "version": state.version}))?;
    if keep > 0 {
        prune(&root, keep)?;
    }
    Ok(dest)
}

/// Remove all but the newest `keep` checkpoint directories.
fn prune(root: &Path, keep: usize) -> Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    dirs.sort();
    if dirs.len() > keep {
        for d in &dirs[..dirs.len() - keep] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    Ok(())
}

/// The newest complete checkpoint listed in the run's index, checked against `fingerprint`
/// and `trainable`. Temporary directories of interrupted writes are not listed, so they are
/// never picked; pruned ones are skipped.
pub fn latest(run: &RunDir, fingerprint: &str, trainable: &str) -> Result<(TrainState, TrainTensors, PathBuf)> {
    let root = run.file(CHECKPOINTS);
    let index = read_json_lines(&root.join(INDEX));
    for entry in index.iter().rev() {
        let Some(name) = entry.get("dir").and_then(Value::as_str) else { continue };
        let dir = root.join(name);
        if !dir.join(STATE).exists() {
            continue;
        }
        let (state, tensors) = load(&dir)?;
        if state.model_fingerprint != fingerprint {
            bail!("{}: made for another base model (fingerprint {}, this run's model is {fingerprint})", dir.display(), state.model_fingerprint);
        }
        if state.trainable != trainable {
            bail!("{}: made for `{}`, this run trains `{trainable}`", dir.display(), state.trainable);
        }
        return Ok((state, tensors, dir));
    }
    bail!("{}: no complete checkpoint to resume from", root.display())
}

/// Read one checkpoint directory, refusing it if its files do not match what it recorded.
pub fn load(dir: &Path) -> Result<(TrainState, TrainTensors)> {
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).with_context(|| format!("{}: cannot read", state_path.display()))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a noregret checkpoint state: {e}", state_path.display()))?;
    if state.format != FORMAT {
        bail!("{}: checkpoint format {} (this noregret reads {FORMAT})", state_path.display(), state.format);
    }
    let tensor_path = dir.join(TENSORS);
    let actual = sha256_file(&tensor_path)?;
    if actual != state.tensors_sha256 {
        bail!("{}: corrupt checkpoint (SHA-256 {actual}, recorded {})", tensor_path.display(), state.tensors_sha256);
    }
    let store = policies::weights::WeightStore::open_files(std::slice::from_ref(&tensor_path))?;
    let mut lists: [Vec<Tensor>; 3] = Default::default();
    for (k, kind) in ["param", "exp_avg", "exp_avg_sq"].iter().enumerate() {
        for i in 0.. {
            let name = format!("{kind}.{i}");
            let Some(shape) = store.shape(&name) else { break };
            lists[k].push(store.load(&name, &shape, tch::Kind::Float, tch::Device::Cpu)?);
        }
    }
    let [params, exp_avg, exp_avg_sq] = lists;
    if params.is_empty() || params.len() != exp_avg.len() || params.len() != exp_avg_sq.len() {
        bail!("{}: incomplete checkpoint ({} parameters, {} + {} moments)", tensor_path.display(), params.len(), exp_avg.len(), exp_avg_sq.len());
    }
    Ok((state, TrainTensors { params, exp_avg, exp_avg_sq }))
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}
