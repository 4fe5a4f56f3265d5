//! Bad input: a one-line error naming the file (or input line) and what is wrong, a non-zero
//! exit, and never a panic.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

fn noregret(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_noregret"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run noregret");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Assert a clean failure and return the error line.
fn fails(out: &Output) -> String {
    common::error_line(out)
}

fn checkpoint(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    let shape = json!({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "num_key_value_heads": 1, "intermediate_size": 48, "head_dim": 16});
    policies::init::write_random_checkpoint(&path, &shape, 0, 0.1).unwrap();
    path
}

fn edit_config(model: &Path, key: &str, value: serde_json::Value) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn missing_model_directory() {
    let err = fails(&noregret(&["sample", "--model", "/no/such/model", "--prompt", "x"], ""));
    assert!(err.contains("/no/such/model") && err.contains("not found"), "{err}");
}

#[test]
fn missing_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    std::fs::remove_file(model.join("config.json")).unwrap();
    let err = fails(&noregret(&["sample", "--model", model.to_str().unwrap(), "--prompt", "x"], ""));
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn missing_tokenizer_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let err = fails(&noregret(&["sample", "--model", model.to_str().unwrap(), "--prompt", "x"], ""));
    assert!(err.contains("tokenizer.json") && err.contains("not found"), "{err}");
}

#[test]
fn unknown_model_type() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    edit_config(&model, "model_type", json!("mamba"));
    let err = fails(&noregret(&["logprobs", "--model", model.to_str().unwrap()], ""));
    assert!(err.contains("config.json") && err.contains("\"mamba\""), "{err}");
}

#[test]
fn tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    edit_config(&model, "intermediate_size", json!(64));
    let err = fails(&noregret(&["logprobs", "--model", model.to_str().unwrap()], ""));
    assert!(err.contains("model.safetensors") && err.contains("gate_proj") && err.contains("shape"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    let file = model.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&noregret(&["logprobs", "--model", model.to_str().unwrap()], ""));
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn token_id_outside_vocab() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    let out = noregret(&["logprobs", "--model", model.to_str().unwrap()], "{\"tokens\": [1, 2, 3]}\n{\"tokens\": [1, 100000]}\n");
    let err = fails(&out);
    assert!(err.contains("stdin:2") && err.contains("100000") && err.contains("vocabulary"), "{err}");
}

#[test]
fn malformed_json_line_names_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    let out = noregret(&["logprobs", "--model", model.to_str().unwrap()], "{\"tokens\": [1, 2]}\n\n{\"tokens\": [1,\n");
    let err = fails(&out);
    assert!(err.contains("stdin:3") && err.contains("malformed JSON"), "{err}");
}

#[test]
fn malformed_prompts_file_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"1+1=\"}\n{\"text\": \"no prompt field\"}\n").unwrap();
    let err = fails(&noregret(&["sample", "--model", model.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()], ""));
    assert!(err.contains("prompts.jsonl:2"), "{err}");
}

#[test]
fn logprobs_output_has_one_line_per_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = checkpoint(tmp.path());
    let out = noregret(&["logprobs", "--model", model.to_str().unwrap()], "{\"tokens\": [1, 2, 3]}\n{\"tokens\": [5], \"other\": 1}\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["logprobs"].as_array().unwrap().len(), 0);
}

#[test]
fn verify_grades_lines_in_order_and_names_a_bad_line() {
    let input = "{\"gold\": \"42\", \"response\": \"so the answer is \\\\boxed{42}\", \"id\": 7}\n{\"gold\": \"1/2\", \"response\": \"#### 0.5\"}\n{\"gold\": \"3\", \"response\": \"no idea\"}\n";
    let out = noregret(&["verify"], input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], json!({"correct": true, "extracted": "42"}));
    assert_eq!(lines[1]["correct"], json!(true));
    assert_eq!(lines[2]["correct"], json!(false));
    let err = fails(&noregret(&["verify"], "{\"gold\": \"1\", \"response\": \"1\"}\n{\"gold\": 5}\n"));
    assert!(err.contains("line 2"), "{err}");
}
