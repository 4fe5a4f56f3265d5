//! Shared helpers for the integration tests: small random checkpoints made in Rust.

use std::path::PathBuf;

use serde_json::json;

/// A 2-layer GQA Llama with spread-out weights, written into a fresh temp dir.
pub fn tiny_checkpoint(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model");
    let shape = json!({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 96, "head_dim": 16});
    policies::init::write_random_checkpoint(&path, &shape, seed, 0.3).expect("write checkpoint");
    (dir, path)
}
