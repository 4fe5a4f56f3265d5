//! The verifier: extract the response's answer, parse both sides, compare.

use serde::Deserialize;

use crate::answer::{parse_answer, parse_choice, Answer};
use crate::equiv::answers_equivalent;
use crate::extract::{extract, gold_answer, is_hedged, last_choice_letter, or_as_comma, ExtractMode, Extraction, NO_ANSWER};
use crate::unicode::normalize;

/// Longest gold or response accepted (bytes); longer input is "not equivalent".
pub const MAX_INPUT_BYTES: usize = 512 * 1024;
/// Longest extracted answer parsed (characters).
pub const MAX_ANSWER_CHARS: usize = 2000;

/// The verifier's judgement on one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub correct: bool,
    /// The response's final answer as extracted, `None` when there is none.
    pub extracted: Option<String>,
    /// Why the answer is not correct (or how it was read), for logs and debugging.
    pub reason: Option<String>,
}

/// Which extraction modes apply, in priority order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    #[serde(default = "default_modes")]
    pub modes: Vec<ExtractMode>,
}

fn default_modes() -> Vec<ExtractMode> {
    ExtractMode::ALL.to_vec()
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig { modes: default_modes() }
    }
}

/// A verifier with a fixed configuration. Cheap to share between threads.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    config: VerifierConfig,
}

fn not_correct(extracted: Option<String>, reason: impl Into<String>) -> Verdict {
    Verdict { correct: false, extracted, reason: Some(reason.into()) }
}

/// Whitespace- and decoration-insensitive text, for the "written the same" shortcut.
fn squash(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_whitespace() && *c != '$').collect();
    if out.contains('\\') {
        for noise in ["\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle"] {
            if out.contains(noise) {
                out = out.replace(noise, "");
            }
        }
        out = out.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac");
    }
    let kept = out.trim_end_matches('.').len();
    out.truncate(kept);
    out
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Verifier {
        Verifier { config }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The response's final answer under this configuration.
    pub fn extract(&self, response: &str) -> Extraction {
        if response.len() > MAX_INPUT_BYTES {
            return self.extract_normalized(response);
        }
        self.extract_normalized(&normalize(response))
    }

    fn extract_normalized(&self, response: &str) -> Extraction {
        if response.len() > MAX_INPUT_BYTES {
            return Extraction::NotAnswer(format!("response longer than {MAX_INPUT_BYTES} bytes"));
        }
        extract(response, &self.config.modes)
    }

    pub fn verify(&self, gold: &str, response: &str) -> Verdict {
        if gold.len() > MAX_INPUT_BYTES {
            return not_correct(None, format!("gold longer than {MAX_INPUT_BYTES} bytes"));
        }
        if response.len() > MAX_INPUT_BYTES {
            return not_correct(None, format!("response longer than {MAX_INPUT_BYTES} bytes"));
        }
        let response = normalize(response);
        let gold = gold_answer(&normalize(gold));
        let answer = match self.extract_normalized(&response) {
            Extraction::Found { answer, .. } => answer,
            // A multiple-choice pick named only in prose: "the correct choice is (D)."
            Extraction::NotAnswer(why) if why == NO_ANSWER && matches!(parse_answer(&gold), Ok(Answer::Choice(_))) => {
                match last_choice_letter(&response) {
                    Some(c) => c.to_string(),
                    None => return not_correct(None, why),
                }
            }
            Extraction::NotAnswer(why) => return not_correct(None, why),
        };
        let verdict = |correct: bool, reason: Option<String>| Verdict { correct, extracted: Some(answer.clone()), reason };
        if answer.chars().count() > MAX_ANSWER_CHARS {
            let short: String = answer.chars().take(200).collect();
            return not_correct(Some(short), format!("answer longer than {MAX_ANSWER_CHARS} characters"));
        }
        if gold.chars().count() > MAX_ANSWER_CHARS {
            return verdict(false, Some(format!("gold answer longer than {MAX_ANSWER_CHARS} characters")));
        }
        // The gold is parsed at most once and only when needed: most correct answers match as text.
        let mut gold_parsed = None;
        let mut answer_text = answer.clone();
        if is_hedged(&answer) && !is_hedged(&gold) {
            // "x = 2 or x = 3" lists the solutions when the gold is a list of them; for a
            // single-valued gold it hedges between candidates.
            let parsed = gold_parsed.insert(parse_answer(&gold));
            let gold_is_list = matches!(parsed, Ok(Answer::List(v) | Answer::Set(v)) if v.len() > 1);
            if !gold_is_list {
                return verdict(false, Some("answer hedged between candidates".into()));
            }
            answer_text = or_as_comma(&answer);
        }
        if squash(&answer_text) == squash(&gold) && !answer_text.contains('\0') {
            return verdict(true, None);
        }
        let gold_parsed = match gold_parsed.unwrap_or_else(|| parse_answer(&gold)) {
            Ok(g) => g,
            Err(e) => return verdict(false, Some(format!("gold not understood: {e}"))),
        };
        let resp_parsed = match &gold_parsed {
            Answer::Choice(_) => parse_choice(&answer_text)
                .or_else(|| last_choice_letter(&response))
                .map(Answer::Choice)
                .ok_or_else(|| "not a choice letter".to_string()),
            _ => parse_answer(&answer_text),
        };
        let resp_parsed = match resp_parsed {
            Ok(r) => r,
            Err(e) => return verdict(false, Some(format!("answer not understood: {e}"))),
        };
        match answers_equivalent(&gold_parsed, &resp_parsed) {
            Ok(true) => verdict(true, None),
            Ok(false) => verdict(false, Some("not equivalent".into())),
            Err(e) => verdict(false, Some(format!("not equivalent: {e}"))),
        }
    }
}

/// Verifies with the default configuration (all extraction modes, default order).
pub fn verify(gold: &str, response: &str) -> Verdict {
    Verifier::default().verify(gold, response)
}
