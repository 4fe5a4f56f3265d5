//! Verifications per second on one thread, ours against math-verify on the same corpus.
//!
//! `cargo bench -p rewards` (math-verify's Python from `NOREGRET_PYTHON`, default
//! `.venv/bin/python` under the workspace root).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    gold: String,
    response: String,
    correct: bool,
}

#[derive(Deserialize)]
struct Peer {
    cases: usize,
    passes: usize,
    seconds: f64,
    per_second: f64,
    slow_cases: usize,
    per_second_without_slow: f64,
    results: Vec<bool>,
}

fn main() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus_path = crate_dir.join("tests/corpus.jsonl");
    let text = std::fs::read_to_string(&corpus_path).expect("corpus readable");
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus line parses"))
        .collect();

    // Ours: repeat the corpus until at least a second has passed.
    let agree = cases.iter().filter(|c| rewards::verify(&c.gold, &c.response).correct == c.correct).count();
    let start = Instant::now();
    let mut passes = 0usize;
    while start.elapsed().as_secs_f64() < 1.0 {
        for c in &cases {
            std::hint::black_box(rewards::verify(&c.gold, &c.response));
        }
        passes += 1;
    }
    let ours_seconds = start.elapsed().as_secs_f64();
    let ours_rate = (cases.len() * passes) as f64 / ours_seconds;

    // math-verify on the same cases, in the same run.
    let workspace = crate_dir.parent().map(PathBuf::from).unwrap_or_default();
    let python = std::env::var("NOREGRET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join(".venv/bin/python"));
    let peer = Command::new(&python)
        .arg(crate_dir.join("bench/math_verify_peer.py"))
        .arg(&corpus_path)
        .args(["--min-seconds", "1"])
        .output();
    let peer: Result<Peer, String> = match peer {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).map_err(|e| e.to_string()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed").to_string()),
        Err(e) => Err(format!("cannot run {}: {e}", python.display())),
    };

    println!("corpus: {} cases ({})", cases.len(), corpus_path.display());
    println!();
    println!("| verifier | verifications/s (1 thread) | agrees with human labels |");
    println!("| --- | ---: | ---: |");
    println!(
        "| noregret `rewards` | {:.0} ({} passes in {:.2} s) | {}/{} |",
        ours_rate,
        passes,
        ours_seconds,
        agree,
        cases.len()
    );
    match peer {
        Ok(p) => {
            let peer_agree = p.results.iter().zip(&cases).filter(|(r, c)| **r == c.correct).count();
            println!(
                "| math-verify | {:.1} ({} pass(es) in {:.2} s) | {}/{} |",
                p.per_second, p.passes, p.seconds, peer_agree, p.cases
            );
            println!();
            println!("ratio: {:.0}x faster", ours_rate / p.per_second);
            if p.slow_cases > 0 {
                println!(
                    "math-verify without its {} case(s) over 1 s (timeouts): {:.1}/s, ratio {:.0}x",
                    p.slow_cases,
                    p.per_second_without_slow,
                    ours_rate / p.per_second_without_slow
                );
            }
        }
        Err(e) => println!("| math-verify | not available: {e} | |"),
    }
}
