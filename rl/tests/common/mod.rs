//! Running the `noregret` binary from the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Run `noregret --threads 2 ARGS` with extra environment variables and `stdin`.
pub fn noregret_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noregret"));
    cmd.args(["--threads", "2"]).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run noregret");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A command may exit before reading its input (a bad flag): that is not a test failure.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait for noregret")
}

pub fn noregret(args: &[&str], env: &[(&str, &str)]) -> Output {
    noregret_with(args, env, b"")
}

/// Assert success; return stderr.
pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "failed: {stderr}");
    stderr
}

/// Assert a clean failure (exit 1, no panic) and return its one `error:` line.
pub fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    lines[0].to_string()
}

/// A random checkpoint of the `tiny` preset (character tokenizer) in `dir/model`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    policies::init::write_random_checkpoint(&path, &policies::init::preset("tiny").unwrap(), 1, 0.05).unwrap();
    path
}
