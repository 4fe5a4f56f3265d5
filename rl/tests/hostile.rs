//! Hostile input on every path a user feeds noregret: JSON lines on stdin, experiment files,
//! model directories (config, weights, tokenizer), adapters, SFT data and checkpoints. Each is
//! mutated at random (a seeded generator, so failures reproduce) and every outcome must be a
//! success or a clean failure: exit status 1 with one `error:` line, never a panic, an abort or
//! a signal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

/// SplitMix64: seeded, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A few byte-level mutations: flips, deletions, insertions of tricky bytes, truncation,
/// duplication of a slice.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let tricky: &[&[u8]] = &[b"\"", b"{", b"}", b"[", b"]", b"\n", b"\\", b"=", b"-1", b"1e309", b"99999999999999999999", b"null", b"\xff\xfe", b"\0", b"NaN", b"\"\"\"", b"#"];
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            b.extend_from_slice(tricky[rng.below(tricky.len())]);
            continue;
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            2 => {
                let t = tricky[rng.below(tricky.len())];
                b.splice(at..at, t.iter().copied());
            }
            3 => b.truncate(at),
            _ => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
    b
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    common::noregret_with(args, &[], stdin)
}

/// Success, or exit 1 with exactly one `error:` line; anything else fails the test with the case.
fn clean(out: &Output, case: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{case}: panicked:\n{stderr}");
    match out.status.code() {
        Some(0) => {}
        Some(1) => {
            let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
            assert_eq!(errors, 1, "{case}: want one error line:\n{stderr}");
        }
        other => panic!("{case}: exit {other:?} (a signal or abort):\n{stderr}"),
    }
}

fn tiny(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    let shape = serde_json::json!({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "num_key_value_heads": 1, "intermediate_size": 48, "head_dim": 16});
    policies::init::write_random_checkpoint(&path, &shape, 0, 0.1).unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

const CASES: u64 = 24;

#[test]
fn json_lines_on_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let m = model.to_str().unwrap();
    let seeds = [
        ("logprobs", "{\"tokens\": [1, 22, 23, 15, 24]}\n{\"tokens\": [1, 5]}\n"),
        ("verify", "{\"gold\": \"42\", \"response\": \"the answer is \\\\boxed{42}\"}\n"),
    ];
    let mut rng = Rng(1);
    for (cmd, seed) in seeds {
        for i in 0..CASES {
            let input = mutate(seed.as_bytes(), &mut rng);
            let args: Vec<&str> = if cmd == "logprobs" { vec!["logprobs", "--model", m] } else { vec!["verify"] };
            clean(&run(&args, &input), &format!("{cmd} case {i}: {:?}", String::from_utf8_lossy(&input)));
        }
    }
    // A sequence far longer than the model's positions (this panicked once).
    let long = format!("{{\"tokens\": [{}]}}\n", vec!["5"; 40_000].join(","));
    let out = run(&["logprobs", "--model", m], long.as_bytes());
    clean(&out, "40,000 tokens");
    assert!(String::from_utf8_lossy(&out.stderr).contains("positions"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn model_directories_and_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let adapter = tmp.path().join("adapter");
    let out = run(&["adapter", "init", "--model", model.to_str().unwrap(), "--rank", "2", "--out", adapter.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rng = Rng(2);
    let files = ["config.json", "tokenizer.json", "generation_config.json", "tokenizer_config.json", "model.safetensors"];
    for i in 0..CASES * 2 {
        let broken = tmp.path().join(format!("m{i}"));
        copy_dir(&model, &broken);
        let name = files[rng.below(files.len())];
        let original = std::fs::read(broken.join(name)).unwrap();
        std::fs::write(broken.join(name), mutate(&original, &mut rng)).unwrap();
        let out = run(&["sample", "--model", broken.to_str().unwrap(), "--prompt", "12+3=", "--max-new-tokens", "4"], b"");
        clean(&out, &format!("model case {i} ({name})"));
        let _ = std::fs::remove_dir_all(&broken);
    }
    for i in 0..CASES {
        let broken = tmp.path().join(format!("a{i}"));
        copy_dir(&adapter, &broken);
        let name = ["adapter_config.json", "adapter_model.safetensors"][rng.below(2)];
        let original = std::fs::read(broken.join(name)).unwrap();
        std::fs::write(broken.join(name), mutate(&original, &mut rng)).unwrap();
        let out = run(&["sample", "--model", model.to_str().unwrap(), "--adapter", broken.to_str().unwrap(), "--prompt", "1+1=", "--max-new-tokens", "2"], b"");
        clean(&out, &format!("adapter case {i} ({name})"));
    }
}

#[test]
fn experiment_files_sft_data_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let config = format!(
        "[model]\npath = \"{}\"\n\n[adapter]\nrank = 2\n\n[env.problems]\nsource = \"arith\"\nlevel = \"add1\"\ntest_size = 5\n\n\
         [rollout]\ngroup_size = 2\ngroups_per_step = 2\nmax_new_tokens = 3\n\n[rl]\nsteps = 2\nlr = 1e-4\n\n[eval]\nevery = 0\n\n[run]\nout = \"{}\"\ncheckpoint_every = 1\n",
        model.display(),
        tmp.path().join("run").display()
    );
    let mut rng = Rng(3);
    for i in 0..CASES * 2 {
        let path = tmp.path().join(format!("c{i}.toml"));
        std::fs::write(&path, mutate(config.as_bytes(), &mut rng)).unwrap();
        clean(&run(&["train", path.to_str().unwrap(), "--dry-run"], b""), &format!("config case {i}: {:?}", std::fs::read_to_string(&path).unwrap_or_default()));
    }
    // SFT data lines.
    let data = "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"2+2=\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n";
    for i in 0..CASES {
        let file = tmp.path().join(format!("d{i}.jsonl"));
        std::fs::write(&file, mutate(data.repeat(3).as_bytes(), &mut rng)).unwrap();
        let sft = tmp.path().join(format!("s{i}.toml"));
        std::fs::write(
            &sft,
            format!(
                "[model]\npath = \"{}\"\n[data]\ntrain = \"{}\"\ntest_fraction = 0.3\n[sft]\nsteps = 1\nbatch_size = 2\n[eval]\nevery = 0\n[run]\nout = \"{}\"\ncheckpoint_every = 0\n",
                model.display(),
                file.display(),
                tmp.path().join(format!("sftrun{i}")).display()
            ),
        )
        .unwrap();
        clean(&run(&["sft", sft.to_str().unwrap()], b""), &format!("sft data case {i}"));
    }
    // Checkpoints: a real run, then damaged copies of its files.
    let path = tmp.path().join("ok.toml");
    std::fs::write(&path, &config).unwrap();
    let out = run(&["train", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = tmp.path().join("run");
    let ckpt = run_dir.join("checkpoints/step-000002");
    for i in 0..CASES {
        let name = ["state.json", "trainer.safetensors"][rng.below(2)];
        let original = std::fs::read(ckpt.join(name)).unwrap();
        std::fs::write(ckpt.join(name), mutate(&original, &mut rng)).unwrap();
        clean(&run(&["train", "--resume", run_dir.to_str().unwrap(), "--set", "rl.steps=3"], b""), &format!("checkpoint case {i} ({name})"));
        std::fs::write(ckpt.join(name), original).unwrap();
        // A resume that got through wrote step 3: take it back out for the next case.
        let _ = std::fs::remove_dir_all(run_dir.join("checkpoints/step-000003"));
        let _ = std::fs::remove_file(run_dir.join("summary.json"));
    }
}
