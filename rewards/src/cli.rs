//! `noregret verify`: JSON lines `{"gold": …, "response": …}` in, one verdict line out each.

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value as Json;

use crate::verify::Verifier;

/// Counts over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Lines verified (blank lines are skipped and not counted).
    pub lines: usize,
    pub correct: usize,
    /// Lines whose response had no answer.
    pub no_answer: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("line {line}: expected a JSON object with string fields \"gold\" and \"response\": {message}")]
    BadLine { line: usize, message: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize)]
struct OutLine<'a> {
    correct: bool,
    extracted: Option<&'a str>,
}

fn field<'a>(obj: &'a serde_json::Map<String, Json>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(format!("field \"{name}\" is not a string but {}", kind(other))),
        None => Err(format!("field \"{name}\" is missing")),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Reads JSON lines from `input` and writes `{"correct":…,"extracted":…}` per line to
/// `output`, in order, flushing each line. Other fields of the input are ignored.
pub fn verify_jsonl<R: BufRead, W: Write>(input: R, mut output: W) -> Result<VerifyStats, CliError> {
    verify_jsonl_with(&Verifier::default(), input, &mut output)
}

/// [`verify_jsonl`] with a configured verifier.
pub fn verify_jsonl_with<R: BufRead, W: Write>(
    verifier: &Verifier,
    input: R,
    mut output: W,
) -> Result<VerifyStats, CliError> {
    let mut stats = VerifyStats::default();
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CliError::BadLine { line: line_no, message };
        let value: Json = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let Json::Object(obj) = &value else {
            return Err(bad(format!("found {}", kind(&value))));
        };
        let gold = field(obj, "gold").map_err(bad)?;
        let response = field(obj, "response").map_err(bad)?;
        let verdict = verifier.verify(gold, response);
        stats.lines += 1;
        stats.correct += usize::from(verdict.correct);
        stats.no_answer += usize::from(verdict.extracted.is_none());
        let out = OutLine { correct: verdict.correct, extracted: verdict.extracted.as_deref() };
        let text = serde_json::to_string(&out).map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        writeln!(output, "{text}")?;
        output.flush()?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_order() {
        let input = "{\"gold\":\"42\",\"response\":\"so \\\\boxed{42}\",\"id\":7}\n\n{\"gold\":\"1/2\",\"response\":\"nothing\"}\n";
        let mut out = Vec::new();
        let stats = verify_jsonl(input.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"correct\":true,\"extracted\":\"42\"}\n{\"correct\":false,\"extracted\":null}\n");
        assert_eq!(stats, VerifyStats { lines: 2, correct: 1, no_answer: 1 });
    }

    #[test]
    fn bad_lines_name_their_number() {
        let input = "{\"gold\":\"1\",\"response\":\"1\"}\n{\"gold\":1,\"response\":\"1\"}\n";
        let err = verify_jsonl(input.as_bytes(), Vec::new()).unwrap_err().to_string();
        assert!(err.starts_with("line 2: expected a JSON object with string fields \"gold\" and \"response\""), "{err}");
        assert!(!err.contains('\n'));
        let err = verify_jsonl("not json".as_bytes(), Vec::new()).unwrap_err().to_string();
        assert!(err.starts_with("line 1: "), "{err}");
    }
}
