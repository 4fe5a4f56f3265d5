//! `noregret train` and `noregret sft` end to end on tiny checkpoints made here: run
//! directories, resume after a crash (bit-identical at max_staleness 0), torn checkpoints,
//! config errors, the sampler/learner agreement, full fine-tuning.

mod common;

use std::path::{Path, PathBuf};

use common::{error_line, noregret, ok, tiny_model};
use serde_json::Value;





/// A small RL experiment. The length penalty gives a random model rewards that differ within a
/// group, so every step really changes the adapter.
fn experiment(dir: &Path, model: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
path = "{model}"

[env.problems]
source = "arith"
level = "add2"
test_size = 20

[[reward]]
kind = "length_penalty"
target_chars = 1
max_chars = 6

[[reward]]
kind = "math"

[rollout]
group_size = 4
groups_per_step = 4
max_new_tokens = 6

[rl]
steps = 6
lr = 1e-3

[eval]
every = 3

[run]
out = "{out}"
checkpoint_every = 2
{extra}
"#,
        model = model.display(),
        out = dir.join("run").display()
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The fields of metrics.jsonl that depend on the data and the numbers, not on the clock.
fn numbers(run: &Path) -> Vec<Value> {
    lines(&run.join("metrics.jsonl"))
        .into_iter()
        .map(|l| {
            let keep = ["step", "version", "reward_mean", "loss", "agreement_max", "entropy", "grad_norm", "heldout_accuracy"];
            keep.iter().map(|k| l.get(*k).cloned().unwrap_or(Value::Null)).collect()
        })
        .collect()
}

#[test]
fn a_run_writes_its_directory_and_learns_something() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let exp = experiment(tmp.path(), &model, "");
    let out = noregret(&["train", exp.to_str().unwrap()], &[]);
    ok(&out);
    let run = tmp.path().join("run");
    for f in ["config.toml", "metrics.jsonl", "summary.json", "training.png", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/index.jsonl"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for k in ["heldout_accuracy_start", "heldout_accuracy_end", "steps", "wall_seconds", "base_model"] {
        assert!(summary.get(k).is_some_and(|v| !v.is_null()), "summary lacks {k}: {summary}");
    }
    assert_eq!(summary["steps"], 6);
    let metrics = lines(&run.join("metrics.jsonl"));
    let steps: Vec<&Value> = metrics.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 6);
    for l in &steps {
        // Sampler and learner are one code base: the same tokens get the same log-probs.
        assert!(l["agreement_tokens"].as_u64().unwrap() > 0, "{l}");
        assert!(l["agreement_max"].as_f64().unwrap() < 1e-4, "sampler/learner disagree: {l}");
        assert!(l["grad_norm"].as_f64().unwrap() > 0.0, "no gradient: {l}");
        for k in ["reward_mean", "entropy", "kl_sampler", "staleness_mean", "sampled_tokens_per_s", "learner_tokens_per_s", "step_seconds", "metrics/math/answer_found"] {
            assert!(l.get(k).is_some(), "metrics lack {k}: {l}");
        }
    }
    // The adapter moved away from B = 0.
    let store = policies::weights::WeightStore::open_files(&[run.join("adapter/adapter_model.safetensors")]).unwrap();
    let b = store.load("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", &store.shape("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").unwrap(), tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert!(b.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn a_crashed_run_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let whole_dir = tmp.path().join("whole");
    std::fs::create_dir_all(&whole_dir).unwrap();
    let exp = experiment(&whole_dir, &model, "");
    ok(&noregret(&["train", exp.to_str().unwrap()], &[]));

    for fault in ["after_step:3", "in_checkpoint:4"] {
        let dir = tmp.path().join(fault.replace(':', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let exp = experiment(&dir, &model, "");
        let crashed = noregret(&["train", exp.to_str().unwrap()], &[("NOREGRET_FAULT", fault)]);
        assert!(!crashed.status.success(), "the fault did not fire");
        let run = dir.join("run");
        if fault.starts_with("in_checkpoint") {
            // The torn checkpoint is a hidden temporary directory, never listed.
            let torn = std::fs::read_dir(run.join("checkpoints")).unwrap().filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"));
            assert!(torn, "no torn checkpoint left behind");
        }
        let resumed = ok(&noregret(&["train", "--resume", run.to_str().unwrap()], &[]));
        assert!(resumed.contains("from step 2") || resumed.contains("(step 2)"), "{resumed}");
        let a = std::fs::read(whole_dir.join("run/adapter/adapter_model.safetensors")).unwrap();
        let b = std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
        assert!(a == b, "{fault}: the resumed run's adapter differs from the uninterrupted one's");
        assert_eq!(numbers(&whole_dir.join("run")), numbers(&run), "{fault}: metrics differ");
    }
}

#[test]
fn corrupt_and_foreign_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let exp = experiment(tmp.path(), &model, "");
    ok(&noregret(&["train", exp.to_str().unwrap()], &[]));
    let run = tmp.path().join("run");
    // Another base model.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_model = other.join("model");
    policies::init::write_random_checkpoint(&other_model, &policies::init::preset("tiny").unwrap(), 9, 0.05).unwrap();
    let err = error_line(&noregret(&["train", "--resume", run.to_str().unwrap(), "--set", &format!("model.path={}", other_model.display())], &[]));
    assert!(err.contains("another base model"), "{err}");
    // Corrupt the newest checkpoint's tensors.
    let newest = run.join("checkpoints/step-000006/trainer.safetensors");
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let err = error_line(&noregret(&["train", "--resume", run.to_str().unwrap(), "--set", "rl.steps=8"], &[]));
    assert!(err.contains("corrupt") && err.contains("step-000006"), "{err}");
}

#[test]
fn config_mistakes_say_what_and_where() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let exp = experiment(tmp.path(), &model, "");
    let text = std::fs::read_to_string(&exp).unwrap();
    let write = |name: &str, t: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, t).unwrap();
        p
    };
    let typo = write("typo.toml", text.replace("lr = 1e-3", "lrr = 1e-3"));
    let err = error_line(&noregret(&["train", typo.to_str().unwrap()], &[]));
    let line = text.lines().position(|l| l.starts_with("lr = ")).unwrap() + 1;
    assert!(err.contains(&format!("typo.toml:{line}:")) && err.contains("lrr") && err.contains("[rl]"), "{err}");
    let wrong = write("wrong.toml", text.replace("steps = 6", "steps = \"six\""));
    let err = error_line(&noregret(&["train", wrong.to_str().unwrap()], &[]));
    assert!(err.contains("wrong.toml:") && err.contains("steps"), "{err}");
    let missing = write("missing.toml", text.replace(&model.display().to_string(), "/no/such/model"));
    let err = error_line(&noregret(&["train", missing.to_str().unwrap()], &[]));
    assert!(err.contains("/no/such/model"), "{err}");
    let err = error_line(&noregret(&["train", exp.to_str().unwrap(), "--set", "rl.lr=fast"], &[]));
    assert!(err.contains("rl.lr=fast"), "{err}");
    // --dry-run prints the resolved config with the override applied.
    let out = noregret(&["train", exp.to_str().unwrap(), "--dry-run", "--set", "adapter.rank=1"], &[]);
    ok(&out);
    let resolved: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(resolved["adapter"]["rank"].as_integer(), Some(1));
    assert_eq!(resolved["rollout"]["max_staleness"].as_integer(), Some(0));
    // A run directory in use is not overwritten.
    ok(&noregret(&["train", exp.to_str().unwrap(), "--set", "rl.steps=2"], &[]));
    let err = error_line(&noregret(&["train", exp.to_str().unwrap()], &[]));
    assert!(err.contains("already exists") && err.contains("--resume"), "{err}");
}

#[test]
fn full_fine_tuning_and_a_lag_budget_run_too() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let exp = experiment(tmp.path(), &model, "");
    let run = tmp.path().join("run");
    ok(&noregret(&["train", exp.to_str().unwrap(), "--set", "adapter.rank=full", "--set", "rl.lr=1e-4", "--set", "rollout.max_staleness=2"], &[]));
    assert!(run.join("model/model.safetensors").exists() && run.join("model/config.json").exists());
    let metrics = lines(&run.join("metrics.jsonl"));
    assert!(metrics.iter().filter(|l| l.get("loss").is_some()).all(|l| l["staleness_max"].as_u64().unwrap() <= 2));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["trained"], "full");
}

#[test]
fn sft_lowers_held_out_loss_for_low_and_high_rank_and_full() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    for (name, rank, lr) in [("r1", "1", "2e-3"), ("r32", "32", "2e-3"), ("full", "\"full\"", "1e-3")] {
        let out = tmp.path().join(name);
        let text = format!(
            "[model]\npath = \"{}\"\n[adapter]\nrank = {rank}\n[data.problems]\nsource = \"arith\"\nlevel = \"add1\"\ntest_size = 10\n[sft]\nsteps = 40\nbatch_size = 32\nlr = {lr}\n[eval]\nevery = 0\naccuracy_problems = 0\n[run]\nout = \"{}\"\ncheckpoint_every = 0\n",
            model.display(),
            out.display()
        );
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let o = noregret(&["sft", path.to_str().unwrap()], &[]);
        ok(&o);
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        let (start, end) = (summary["heldout_loss_start"].as_f64().unwrap(), summary["heldout_loss_end"].as_f64().unwrap());
        assert!(end < 0.8 * start, "{name}: held-out loss {start} -> {end}");
        if name == "full" {
            assert!(out.join("model/model.safetensors").exists());
        } else {
            // LoRA: the adapter is the output; the base checkpoint is untouched.
            assert!(out.join("adapter/adapter_model.safetensors").exists() && !out.join("model").exists());
        }
    }
    assert!(std::fs::read(model.join("model.safetensors")).unwrap() == before, "the base model changed");
}

#[test]
fn ctrl_c_checkpoints_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let exp = experiment(tmp.path(), &model, "");
    let run = tmp.path().join("run");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_noregret"))
        .args(["--threads", "2", "train", exp.to_str().unwrap(), "--set", "rl.steps=100000", "--set", "run.checkpoint_every=1000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a few steps, then Ctrl-C.
    let started = std::time::Instant::now();
    while lines_if_any(&run.join("metrics.jsonl")) < 4 {
        assert!(started.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sent = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed().as_secs() < 10, "stopping took {:?}", sent.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted at step") && !stderr.contains("panicked"), "{stderr}");
    // The step it stopped at is checkpointed; resuming it finishes cleanly.
    let stopped = lines(&run.join("metrics.jsonl")).iter().filter_map(|l| l["step"].as_u64()).max().unwrap();
    let resumed = ok(&noregret(&["train", "--resume", run.to_str().unwrap(), "--set", &format!("rl.steps={}", stopped + 2)], &[]));
    assert!(resumed.contains(&format!("(step {stopped})")), "{resumed}");
}

fn lines_if_any(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}
