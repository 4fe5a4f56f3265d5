//! Runs the labelled corpus (`tests/corpus.jsonl`): every case must get the human label.

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    gold: String,
    response: String,
    correct: bool,
    note: String,
    #[serde(default)]
    math_verify: Option<bool>,
}

fn load() -> Vec<Case> {
    let text = include_str!("corpus.jsonl");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("corpus line {}: {e}", i + 1)))
        .collect()
}

#[test]
fn corpus_has_enough_cases() {
    let cases = load();
    assert!(cases.len() >= 1000, "only {} cases", cases.len());
    // Where math-verify was recorded as disagreeing, the note must say so.
    for c in &cases {
        if let Some(mv) = c.math_verify {
            assert_ne!(mv, c.correct, "math_verify field set but agrees: {}", c.note);
            assert!(c.note.contains("math-verify"), "note must explain the math-verify disagreement: {}", c.note);
        }
    }
}

#[test]
fn every_corpus_case_matches_its_label() {
    let mut failures = Vec::new();
    for (i, c) in load().iter().enumerate() {
        let v = rewards::verify(&c.gold, &c.response);
        if v.correct != c.correct {
            failures.push(format!(
                "line {}: gold {:?} response {:?}: expected {} got {} (extracted {:?}, reason {:?}) [{}]",
                i + 1,
                c.gold,
                c.response,
                c.correct,
                v.correct,
                v.extracted,
                v.reason,
                c.note
            ));
        }
    }
    assert!(failures.is_empty(), "{} corpus failures:\n{}", failures.len(), failures.join("\n"));
}
