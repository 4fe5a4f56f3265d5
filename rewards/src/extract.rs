//! Finding the final answer in a model's response.

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

use crate::fallback;

/// Where an answer can come from. The default order is the order of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractMode {
    /// The last `\boxed{…}` or `\fbox{…}` (balanced braces; nested boxes unwrap).
    Boxed,
    /// GSM8K's `#### 42`.
    Gsm8k,
    /// "The final answer is 42" / "Final Answer: 42".
    FinalAnswer,
    /// "Answer: 42" / "the answer is 42".
    AnswerIs,
    /// The last `**bold**` span.
    Bold,
    /// The last `$…$`, `$$…$$`, `\(…\)` or `\[…\]` span.
    MathSpan,
    /// The last number in the text.
    LastNumber,
}

impl ExtractMode {
    pub const ALL: [ExtractMode; 7] = [
        ExtractMode::Boxed,
        ExtractMode::Gsm8k,
        ExtractMode::FinalAnswer,
        ExtractMode::AnswerIs,
        ExtractMode::Bold,
        ExtractMode::MathSpan,
        ExtractMode::LastNumber,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExtractMode::Boxed => "boxed",
            ExtractMode::Gsm8k => "gsm8k",
            ExtractMode::FinalAnswer => "final_answer",
            ExtractMode::AnswerIs => "answer_is",
            ExtractMode::Bold => "bold",
            ExtractMode::MathSpan => "math_span",
            ExtractMode::LastNumber => "last_number",
        }
    }
}

/// What extraction found.
#[derive(Debug, Clone, PartialEq)]
pub enum Extraction {
    Found { answer: String, mode: ExtractMode },
    /// No answer: missing, hedged between candidates, or cut off. The string says which.
    NotAnswer(String),
}

/// Why extraction found nothing when no mode matched (as opposed to a refusal: cut off, hedged…).
pub const NO_ANSWER: &str = "no answer found";

/// Longest answer text kept from a phrase such as "the answer is …".
const MAX_PHRASE_ANSWER: usize = 400;

struct Patterns {
    final_answer: Regex,
    answer_is: Regex,
    bold: Regex,
    hedge: Regex,
    choice: Regex,
    or_word: Regex,
    aside: Regex,
    restated: Regex,
    filler: Regex,
}

/// Compiled once, read-only afterwards: no mutable global state.
fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("built-in regex {p}: {e}"));
        Patterns {
            final_answer: re(r"(?i)final\s+answer\s*(?:\*\*)?\s*(?:is|:|=)?\s*(?:\*\*)?\s*:?"),
            answer_is: re(r"(?i)\banswer\s*(?:\*\*)?\s*(?:is|:|=)\s*(?:\*\*)?\s*:?"),
            bold: re(r"\*\*([^*\n]{1,200})\*\*"),
            // Where the answer in a phrase ends: a parenthetical aside or a clause after a comma.
            aside: re(r"\s\((?:[A-Za-z]{2,}|i\.e\.|e\.g\.|[^()]*=)|,\s+([A-Za-z]{2,})\b"),
            // "The 10th term is 31": a restated answer is what follows its last linking verb.
            restated: re(r"(?i)\s(?:is|are|was|were|equals|equal to|becomes|comes to|total of)\s"),
            // Words that qualify a value without changing it: "approximately 1.2 × 10^5".
            filler: re(r"(?i)^(?:approximately|approx\.?|about|roughly|around|nearly|exactly|just|only|precisely|equal to|~)\s+"),
            hedge: re(r"(?i)(?:\bor\b|\\lor\b|\bmaybe\b|\beither\b)"),
            or_word: re(r"(?i)\\text\{\s*or\s*\}|\\lor\b|\bor\b"),
            choice: re(r"\(([A-J])\)|\b(?:[Oo]ption|[Cc]hoice)\s+([A-J])\b"),
        }
    })
}

/// The last option letter named in a text (`(C)`, `option C`), for multiple-choice golds
/// whose response states the pick outside the extracted answer.
pub fn last_choice_letter(text: &str) -> Option<char> {
    let caps = patterns().choice.captures_iter(text).last()?;
    caps.get(1).or_else(|| caps.get(2)).and_then(|m| m.as_str().chars().next())
}

/// `x = 2 or x = 3` as the list `x = 2 , x = 3`: for golds that are lists of solutions.
pub fn or_as_comma(answer: &str) -> String {
    patterns().or_word.replace_all(answer, ",").into_owned()
}

/// Whether an answer offers alternatives ("3 or 4", "either…").
pub fn is_hedged(answer: &str) -> bool {
    patterns().hedge.is_match(answer)
}

pub fn extract(text: &str, modes: &[ExtractMode]) -> Extraction {
    let uncommitted = [ExtractMode::Bold, ExtractMode::MathSpan, ExtractMode::LastNumber];
    // The text the uncommitted modes read, found once, when the first of them is reached.
    let mut region: Option<&str> = None;
    for &mode in modes {
        if uncommitted.contains(&mode) && region.is_none() {
            // Without a marked answer, a response cut off mid-sentence has none.
            if fallback::cut_off(text) {
                return Extraction::NotAnswer("response cut off mid-reasoning".into());
            }
            region = Some(fallback::committed_region(text));
        }
        let committed = region.unwrap_or(text);
        let found = match mode {
            ExtractMode::Boxed => match boxed(text) {
                BoxResult::Found(s) => Some(s),
                BoxResult::None => None,
                BoxResult::NotAnswer(why) => return Extraction::NotAnswer(why),
            },
            ExtractMode::Gsm8k => gsm8k(text),
            ExtractMode::FinalAnswer => after_phrase(text, &patterns().final_answer),
            ExtractMode::AnswerIs => after_phrase(text, &patterns().answer_is),
            ExtractMode::Bold => fallback::bold(committed, &patterns().bold),
            ExtractMode::MathSpan => fallback::last_math_span(committed),
            ExtractMode::LastNumber => match fallback::last_number(committed) {
                Ok(found) => found,
                Err(why) => return Extraction::NotAnswer(why),
            },
        };
        if let Some(answer) = found.map(|a| a.trim().to_string()).filter(|a| !a.is_empty()) {
            return Extraction::Found { answer, mode };
        }
    }
    Extraction::NotAnswer(NO_ANSWER.into())
}

/// The answer inside a gold string: its box, its `####` line, or the whole string.
pub fn gold_answer(gold: &str) -> String {
    if let BoxResult::Found(s) = boxed(gold) {
        return s;
    }
    if let Some(s) = gsm8k(gold) {
        return s;
    }
    gold.trim().to_string()
}

enum BoxResult {
    Found(String),
    None,
    NotAnswer(String),
}

/// A box's contents: `(start of the command, end after the closing brace, contents)`.
fn box_at(text: &str, start: usize, cmd_len: usize) -> Option<(usize, usize, String)> {
    let bytes = text.as_bytes();
    let mut i = start + cmd_len;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    if i >= bytes.len() {
        return None;
    }
    if bytes[i] != b'{' {
        // `\boxed 5`: one space-delimited token.
        if i == start + cmd_len {
            return None;
        }
        let end = text[i..].find(|c: char| c.is_whitespace() || c == '$').map_or(text.len(), |k| i + k);
        return Some((start, end, text[i..end].to_string()));
    }
    let mut depth = 0usize;
    let mut j = i;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 1, // `\{` and `\}` are set braces, not grouping
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((start, j + 1, text[i + 1..j].to_string()));
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// Where `\\boxed` and `\\fbox` start, in order, with the command's length. Found from the
/// backslashes (a one-byte search), which is much faster on long texts than two substring scans.
fn box_starts(text: &str) -> Vec<(usize, usize)> {
    text.match_indices('\\')
        .filter_map(|(i, _)| {
            let rest = &text[i..];
            if rest.starts_with("\\boxed") {
                Some((i, 6))
            } else if rest.starts_with("\\fbox") {
                Some((i, 5))
            } else {
                None
            }
        })
        .collect()
}

/// The last box; boxes joined by "and"/commas form a list; boxes joined by "or" are a hedge.
fn boxed(text: &str) -> BoxResult {
    let starts = box_starts(text);
    let Some(&(last, len)) = starts.last() else { return BoxResult::None };
    let Some((mut first_start, _, content)) = box_at(text, last, len).or_else(|| unclosed_box(text, last, len)) else {
        return BoxResult::NotAnswer("the last \\boxed is not closed".into());
    };
    let mut contents = vec![unwrap_nested_boxes(content)];
    // Walk back over earlier boxes that sit right before this one.
    for &(s, l) in starts.iter().rev().skip(1).take(16) {
        let Some((prev_start, prev_end, prev)) = box_at(text, s, l) else { break };
        if prev_end > first_start {
            continue; // a box inside the later box's braces
        }
        let gap = text[prev_end..first_start].trim().trim_matches('$').trim();
        let gap_lower = gap.to_lowercase();
        let joiner = gap.is_empty() || gap == "," || gap_lower == "and" || gap_lower == ", and";
        if gap.len() <= 12 && is_hedged(&gap_lower) {
            return BoxResult::NotAnswer("hedged between boxed answers".into());
        }
        if !joiner || gap.is_empty() && prev == contents[0] {
            break;
        }
        contents.insert(0, unwrap_nested_boxes(prev));
        first_start = prev_start;
    }
    contents.dedup();
    BoxResult::Found(contents.join(", "))
}

/// A box that lost its closing brace but not the rest of the response (`$\boxed{\frac{3}{4}$. I
/// hope…`): its contents run to the end of its math span or line. A box still open at the end of
/// the text is a truncated generation and stays unread.
fn unclosed_box(text: &str, start: usize, cmd_len: usize) -> Option<(usize, usize, String)> {
    let open = start + cmd_len + text[start + cmd_len..].find(|c: char| c != ' ')?;
    if !text[open..].starts_with('{') {
        return None;
    }
    let body = &text[open + 1..];
    let end = ["$", "\\]", "\\)", "\n"].iter().filter_map(|d| body.find(d)).min()?;
    let after = &body[end..];
    if after.trim_start_matches(['$', '\\', ']', ')']).trim().is_empty() {
        return None;
    }
    Some((start, open + 1 + end, body[..end].to_string()))
}

fn unwrap_nested_boxes(mut s: String) -> String {
    for _ in 0..8 {
        let t = s.trim();
        let inner = ["\\boxed", "\\fbox"].iter().find_map(|cmd| {
            let rest = t.strip_prefix(cmd)?;
            let (_, end, c) = box_at(t, 0, cmd.len())?;
            (end == t.len() && !rest.is_empty()).then_some(c)
        });
        match inner {
            Some(c) => s = c,
            None => break,
        }
    }
    s
}

fn gsm8k(text: &str) -> Option<String> {
    let at = text.rfind("####")?;
    let rest = text[at + 4..].trim_start();
    let line = rest.lines().next().unwrap_or("");
    Some(clean_phrase_answer(line))
}

/// The answer after "final answer is" or "answer:": a math span if the line starts with one,
/// else the rest of the sentence.
fn after_phrase(text: &str, phrase: &Regex) -> Option<String> {
    let m = phrase.find_iter(text).last()?;
    let rest = text[m.end()..].trim_start();
    if let Some(span) = leading_math_span(rest) {
        return Some(span);
    }
    let line = rest.lines().next().unwrap_or("");
    // Stop at the end of the sentence: a full stop followed by a space.
    let sentence = match line.find(". ") {
        Some(k) => &line[..k],
        None => line,
    };
    if let Some(span) = first_math_span(sentence) {
        return Some(span);
    }
    let answer = clean_phrase_answer(phrase_value(sentence));
    (answer.chars().count() <= MAX_PHRASE_ANSWER).then_some(answer)
}

/// The answer in the rest of an answer sentence: before an aside ("9 (since 3² = 9)", "60 km/h,
/// twice the bus's speed", "8, not 6"), after the linking verb of a restatement ("The 10th term
/// is 31", "There are 36 outcomes"), without a label ("Total: 15").
fn phrase_value(sentence: &str) -> &str {
    let p = patterns();
    let aside = p.aside.captures_iter(sentence).find(|c| !matches!(c.get(1).map(|w| w.as_str()), Some("and" | "or")));
    let mut s = match aside.and_then(|c| c.get(0)) {
        Some(m) if m.start() > 0 => &sentence[..m.start()],
        _ => sentence,
    };
    let first_word: String = s.trim_start_matches(['*', ' ']).chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let restated = first_word.len() >= 2 && !crate::words::is_number_word(&first_word.to_lowercase());
    if let Some(m) = p.restated.find_iter(s).last().filter(|_| restated) {
        s = &s[m.end()..];
    }
    let s = fallback::strip_label(s.trim().trim_matches('*').trim());
    p.filler.find(s).map_or(s, |m| &s[m.end()..])
}

fn clean_phrase_answer(s: &str) -> String {
    let s = s.trim().trim_matches('*').trim();
    let s = s.trim_end_matches(['.', ',', ';', '!']).trim();
    s.trim_matches('$').trim().to_string()
}

const SPAN_DELIMITERS: [(&str, &str); 4] = [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")];

fn leading_math_span(s: &str) -> Option<String> {
    for (open, close) in SPAN_DELIMITERS {
        if let Some(rest) = s.strip_prefix(open) {
            let end = rest.find(close)?;
            return Some(rest[..end].to_string());
        }
    }
    None
}

fn first_math_span(s: &str) -> Option<String> {
    let start = SPAN_DELIMITERS.iter().filter_map(|(open, _)| s.find(open)).min()?;
    leading_math_span(&s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str) -> Extraction {
        extract(text, &ExtractMode::ALL)
    }

    fn found(text: &str) -> String {
        match ex(text) {
            Extraction::Found { answer, .. } => answer,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn boxes() {
        assert_eq!(found("so \\boxed{\\frac{1}{2}} done"), "\\frac{1}{2}");
        assert_eq!(found("\\boxed{1} then \\boxed{\\{1,2\\}}"), "\\{1,2\\}");
        assert_eq!(found("\\boxed{3} and \\boxed{4}"), "3, 4");
        assert_eq!(found("\\boxed{\\boxed{7}}"), "7");
        assert_eq!(found("$\\boxed 5$"), "5");
        assert!(matches!(ex("\\boxed{3} or \\boxed{4}"), Extraction::NotAnswer(_)));
        assert!(matches!(ex("\\boxed{12"), Extraction::NotAnswer(_)));
    }

    #[test]
    fn phrases() {
        assert_eq!(found("blah\n#### 1,234"), "1,234");
        assert_eq!(found("The final answer is $42$. I hope it is correct."), "42");
        assert_eq!(found("**Answer:** 17"), "17");
        assert_eq!(found("So the answer is 3/4."), "3/4");
        assert_eq!(found("we get $x=1$ and then $y = 2$ and nothing"), "y = 2");
        assert_eq!(found("I think 12 apples, then 15."), "15");
        assert!(matches!(ex("no digits here"), Extraction::NotAnswer(_)));
    }
}
