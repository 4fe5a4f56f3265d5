//! The uncommitted extraction modes (`bold`, `math_span`, `last_number`): used when the response
//! marks no answer, so they must tell a committed final value from everything else a response
//! ends with — a cut-off sentence, a verification, side information ("attained at x = 2"), a
//! restated given ("From the problem, 3x + 2 = 17"), a currency sign taken for a math delimiter.

use std::collections::VecDeque;
use std::sync::OnceLock;

use regex::Regex;

use crate::words;

struct Patterns {
    number: Regex,
    verification: Regex,
    conclusion: Regex,
    checked: Regex,
    side_clause: Regex,
    trailing_at: Regex,
    linking: Regex,
    assignments: Regex,
    math_marker: Regex,
    given: Regex,
    prose_break: Regex,
    lone_name: Regex,
    times_x: Regex,
    unknown_in_arithmetic: Regex,
    prose_word: Regex,
    word_3: Regex,
    joiner: Regex,
    assignment: Regex,
    bold_label: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("built-in regex {p}: {e}"));
        Patterns {
            // π multiples, radicals, mixed numbers, space-grouped thousands, decimals, fractions,
            // powers, e-notation, `× 10^k`, scale words, percent.
            number: re(concat!(
                r"\d+\s+(?:dollars?|hours?|hrs?|feet|foot|ft|pounds?|lbs?|minutes?|min|m|km|kg)\s+(?:and\s+)?",
                r"\d+\s+(?:cents?|minutes?|mins?|seconds?|s|inches|inch|in|ounces?|oz|cm|m|g)\b|",
                r"(?:\d+(?:\.\d+)?\s*)?π(?:\s*/\s*\d+)?|(?:\d+\s*)?√\s*\d+(?:\s*/\s*\d+)?",
                r"|-?(?:\d+ \d+/\d+|\d{1,3}(?: \d{3})+\b|\d[\d,]*(?:\.\d+)?(?:/\d+)?(?:\^\{?-?\d+\}?)?(?:[eE][-+]?\d+)?",
                r"(?:\s*(?:×|x|\*|·|\\times|\\cdot)\s*10\^(?:\{-?\d+\}|\(-?\d+\)|-?\d+))?)",
                r"(?:\s+(?:thousand|million|billion|trillion)\b)?(?:\s?%)?"
            )),
            verification: re(concat!(
                r"(?im)(?:^|[.!?:]\s+)\s*(?:\*\*)?(?:check(?:ing)?|verif(?:y|ying|ication)|to (?:verify|check|double[- ]check)",
                r"|let(?:'s| me| us) (?:double[- ]?)?(?:check|verify)|double[- ]check(?:ing)?|sanity check",
                r"|plugging (?:back|in)|substituting (?:back|in))\b"
            )),
            conclusion: re(r"(?i)\b(?:therefore|thus|hence|so the|answer|in total|altogether|final)\b"),
            checked: re(r"(?i)[=✓✔]|\b(?:correct|matches|works|true|holds|consistent)\b"),
            side_clause: re(concat!(
                r"(?i),\s*(?:attained|achieved|reached|occurring|obtained|using|with|which|where|when|since|because|after|given|not)\b",
                r"|\b(?:when|where|since|because|attained at|achieved at|occurring at|which occurs|if)\b",
                r"|\bat\s+\$?[A-Za-z]\s*=|\s\([^()]*[A-Za-z]{2}",
                // "as x approaches 0", "at 20 L/h", "at $5 each": where or at what rate.
                r"|\bas\s+[a-z]\s+(?:approaches|tends|goes)\b",
                r"|\bat\s+\$?\d[\d.,]*\s*(?:[A-Za-z]+/[A-Za-z]+|per\b|each\b|an?\s+(?:hour|minute|day|week)\b)"
            )),
            trailing_at: re(r"(?i)\b(?:at|for|when|where|with)\s*$"),
            assignments: re(concat!(
                r"(?i)(?:^|[\s,;(])([a-z]\s*=\s*-?\d+(?:\.\d+)?(?:/\d+)?",
                r"(?:\s*(?:,|;|and|,\s*and)\s*[a-z]\s*=\s*-?\d+(?:\.\d+)?(?:/\d+)?)+)$"
            )),
            linking: re(r"(?i)(?:\b(?:is|are|equals|be|becomes|gives|get)\b|=)\s*"),
            math_marker: re(r"[√π∞^≤≥<>≠\[\]]|\\[a-z]|\b[a-z]\b\s*[-+*/]"),
            word_3: re(r"(?:^|[^\\A-Za-z])([A-Za-z]{3,})"),
            given: re(concat!(
                r"(?i)^\s*(?:from the problem|according to the problem|the problem (?:states|says|tells us|gives)",
                r"|we are (?:given|told)|we're (?:given|told)|given(?::|\s+that)|suppose|assume|let [a-z]\b|let's say|recall that)"
            )),
            prose_break: re(r"[,;:=<>≤≥]|\b[A-Za-z]{2,}\b"),
            lone_name: re(r"^[A-Za-z](?:_\{?\w+\}?)?(?:\([^()]*\))?$"),
            times_x: re(r"\d\s+x\s+\d"),
            unknown_in_arithmetic: re(r"\d\s*\(?\s*[A-Za-z]\b|\b[A-Za-z]\s*[-+*/×·]|[-+*/×·]\s*\(?\s*[A-Za-z]\b"),
            prose_word: re(r"\s[A-Za-z]{3,}\b"),
            joiner: re(r"(?i)^\s*(?:,|;|and|,\s*and)\s*$"),
            assignment: re(r"^\s*([A-Za-z])(?:_\{?\w+\}?)?\s*=\s*[^=<>]+$"),
            bold_label: re(r"^([A-Za-z][A-Za-z ()'-]{0,40}):\s*(\S.*)$"),
        }
    })
}

/// Words a sentence does not end on unless it was cut off.
const CONNECTORS: &[&str] = &[
    "and", "or", "then", "so", "the", "a", "an", "to", "of", "by", "we", "is", "are", "was", "were", "be", "that",
    "which", "with", "for", "from", "into", "plus", "minus", "times", "divided", "multiplied", "gives", "get", "if",
    "when", "because", "since", "let", "us", "this", "its", "as", "than", "at", "on", "whether", "where", "but",
    "our", "each", "per", "would", "will", "can", "must", "need", "has", "have", "equals", "how", "many", "much",
];

/// Whether the response stops mid-sentence (a generation cut off by the length limit): it ends
/// on an operator, a comma or colon, an open bracket in its last sentence, or a connecting word.
pub fn cut_off(text: &str) -> bool {
    let t = text.trim_end();
    let Some(last) = t.chars().last() else { return false };
    if matches!(last, ',' | ':' | '+' | '-' | '/' | '=' | '(' | '[' | '{' | '\\' | '^' | '_' | '&' | '×' | '÷' | '·') {
        return true;
    }
    let sentence = last_sentence(t);
    let opens = sentence.matches(['(', '[']).count();
    let closes = sentence.matches([')', ']']).count();
    if opens > closes {
        return true;
    }
    if last.is_alphabetic() {
        let word = t.rsplit(|c: char| !c.is_alphabetic()).next().unwrap_or("");
        return CONNECTORS.contains(&word.to_lowercase().as_str());
    }
    false
}

/// The text before a trailing verification ("Check: 2(4) + 3 = 11 ✓"), when that section checks
/// something (an equation, a tick, "correct"), draws no conclusion of its own, and something
/// was said before it.
pub fn committed_region(text: &str) -> &str {
    // Every marker contains one of these: a plain substring search rules most texts out.
    if !["heck", "erif", "lugging", "ubstitut"].iter().any(|k| text.contains(k)) {
        return text;
    }
    let p = patterns();
    let Some(m) = p.verification.find_iter(text).last() else { return text };
    let (before, after) = (&text[..m.start()], &text[m.start()..]);
    if p.conclusion.is_match(after) || !p.checked.is_match(after) || !before.chars().any(|c| c.is_ascii_digit()) {
        return text;
    }
    before
}

/// Start of the sentence that contains byte `at`: after the last `. `, `! `, `? ` or newline.
fn sentence_start(text: &str, at: usize) -> usize {
    let head = &text[..at];
    let by_stop = [". ", "! ", "? "].iter().filter_map(|s| head.rfind(s).map(|k| k + s.len())).max();
    let by_line = head.rfind('\n').map(|k| k + 1);
    by_stop.into_iter().chain(by_line).max().unwrap_or(0)
}

fn last_sentence(text: &str) -> &str {
    let t = text.trim_end().trim_end_matches(['.', '!', '?']);
    &t[sentence_start(t, t.len())..]
}

/// The last `**bold**` span that is not a bare label; a leading label is dropped
/// (`**Total: 15**` → `15`).
pub fn bold(text: &str, bold_re: &Regex) -> Option<String> {
    // A bold line with more text after it is a heading (`**Solution**`), not an answer.
    let heading = |m: regex::Match<'_>| {
        let line_start = text[..m.start()].rfind('\n').map_or(0, |k| k + 1);
        let line_end = text[m.end()..].find('\n').map_or(text.len(), |k| m.end() + k);
        let alone = text[line_start..line_end].trim().len() == m.as_str().len();
        alone && !text[line_end..].trim().is_empty()
    };
    // From the last span back, cheap checks first: each heading is alone on its line, so the line
    // scans add up to one pass over the text.
    let spans: Vec<(regex::Match<'_>, &str)> = bold_re
        .captures_iter(text)
        .filter_map(|c| Some((c.get(0)?, c.get(1)?.as_str().trim())))
        .collect();
    let (_, span) = spans.into_iter().rev().filter(|(_, s)| !s.ends_with(':') && !s.is_empty()).find(|(m, _)| !heading(*m))?;
    Some(strip_label(span).trim_matches('$').trim().to_string())
}

/// `Total: 15` → `15`: a label of words before a colon.
pub fn strip_label(s: &str) -> &str {
    match patterns().bold_label.captures(s) {
        Some(c) if !c[1].chars().any(|ch| ch.is_ascii_digit()) => c.get(2).map_or(s, |m| m.as_str()),
        _ => s,
    }
}

const SPAN_DELIMITERS: [(&str, &str); 4] = [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")];

/// A `$` that opens prose rather than maths: `$5 for the ticket and $13.90 …`.
fn is_currency(open: &str, body: &str) -> bool {
    open == "$" && body.starts_with(|c: char| c.is_ascii_digit()) && !body.contains('\\') && patterns().prose_word.is_match(body)
}

/// A closed math span: byte range of the whole span in the text, and its body.
struct Span {
    start: usize,
    end: usize,
    body: String,
}

/// The last few closed math spans, scanning left to right so that `$` pairs up correctly.
fn math_spans(text: &str) -> VecDeque<Span> {
    const KEEP: usize = 8;
    let mut spans = VecDeque::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let opener = SPAN_DELIMITERS.iter().find(|(open, _)| rest.starts_with(open));
        if let Some((open, close)) = opener {
            let body = &rest[open.len()..];
            let Some(end) = body.find(close) else { break };
            if !is_currency(open, &body[..end]) {
                if spans.len() == KEEP {
                    spans.pop_front();
                }
                spans.push_back(Span { start: i, end: i + open.len() + end + close.len(), body: body[..end].to_string() });
                i += open.len() + end + close.len();
                continue;
            }
        }
        // Skip to the next candidate delimiter.
        let step = rest.chars().next().map_or(1, char::len_utf8);
        match rest[step..].find(['$', '\\']) {
            Some(k) => i += step + k,
            None => break,
        }
    }
    spans
}

/// The last math span, read with its neighbours in the same sentence: assignments joined by
/// commas or "and" (`$x = 3$, $y = -1$`) form one answer; a span after a side clause
/// (`$-7$, attained at $x = 2$`) gives way to the one before it.
pub fn last_math_span(text: &str) -> Option<String> {
    let spans = math_spans(text);
    let last = spans.back()?;
    let p = patterns();
    let same_sentence = |a: &Span, b: &Span| {
        let gap = &text[a.end..b.start];
        !gap.contains(". ") && !gap.contains('\n')
    };
    let n = spans.len();
    if n >= 2 {
        let prev = &spans[n - 2];
        let gap = &text[prev.end..last.start];
        let located = p.trailing_at.is_match(gap) && p.assignment.is_match(&last.body);
        if same_sentence(prev, last) && (p.side_clause.is_match(gap) || located) {
            return Some(prev.body.clone());
        }
    }
    // Assignments joined into one answer: to different variables (a point, `x = 3, y = -1`) or
    // all to the same one (the solutions, `x = 1, x = 2`).
    let var_of = |s: &Span| p.assignment.captures(&s.body).map(|c| c[1].to_string());
    let mut joined = vec![last];
    let mut vars = vec![var_of(last)];
    if vars[0].is_some() {
        for k in (0..n - 1).rev() {
            let (a, b) = (&spans[k], joined[0]);
            let v = var_of(a);
            // `vars` is all one variable or all different ones; it stays so.
            let same = vars.iter().all(|w| *w == v);
            let distinct = !vars.contains(&v) && (vars.len() < 2 || vars[0] != vars[1]);
            if v.is_none() || !(same || distinct) || !same_sentence(a, b) || !p.joiner.is_match(&text[a.end..b.start]) {
                break;
            }
            joined.insert(0, a);
            vars.push(v);
        }
    }
    Some(joined.iter().map(|s| s.body.trim()).collect::<Vec<_>>().join(", "))
}

/// Why a number is not an answer, or `None` when it may be one.
fn not_an_answer(text: &str, start: usize) -> Option<&'static str> {
    let p = patterns();
    let sentence = &text[sentence_start(text, start)..start];
    // "Given that …, 5 boxes hold 20 pens": a main clause after the comma is not a given.
    if p.given.is_match(sentence) && !sentence.contains(", ") {
        return Some("the response only restates the problem");
    }
    // `3x + 2 = 17`: a constant of an equation that is not solved.
    let before = sentence.trim_end().trim_end_matches('$').trim_end();
    let lhs_end = before.strip_suffix('=').map(str::len)?;
    let lhs_text = &before[..lhs_end];
    // A limit, sum or integral binds its variable: `lim_{x→0} sin(x)/x − 1 = 0` is a value.
    if ["lim", "→", "∑", "∫", "sum_", "int_", "\\"].iter().any(|m| lhs_text.contains(m)) {
        return None;
    }
    let cut = p.prose_break.find_iter(lhs_text).last().map_or(0, |m| m.end());
    let lhs = lhs_text[cut..].trim();
    // An unknown in arithmetic: a one-letter word next to a coefficient or an operator
    // (`3x + 2`, `2(w + 2w)`), not a name such as `m∠A` or `AB`.
    let has_variable = one_letter_unknown(lhs) && p.unknown_in_arithmetic.is_match(lhs) && !p.times_x.is_match(lhs);
    let name = lhs.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).replace(' ', "");
    (has_variable && !p.lone_name.is_match(&name)).then_some("the last number is a constant of an unsolved equation")
}

/// Whether a one-letter word stands for an unknown: not a unit after a spaced number (`5 m`).
fn one_letter_unknown(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        let alone = (i == 0 || !bytes[i - 1].is_ascii_alphabetic()) && bytes.get(i + 1).is_none_or(|b| !b.is_ascii_alphabetic());
        if !bytes[i].is_ascii_alphabetic() || !alone {
            return false;
        }
        // `i` is at an ASCII letter, so a character boundary.
        let before = text[..i].trim_end_matches(' ');
        !(before.len() < i && before.ends_with(|c: char| c.is_ascii_digit()))
    })
}

/// The last number of the text, unless it is not an answer (`Err` says why). A number after a
/// side clause in the same sentence gives way to one before it; an exponent or subscript is
/// not a number of its own; a final sentence without digits may state the answer in words.
pub fn last_number(text: &str) -> Result<Option<String>, String> {
    const KEEP: usize = 8;
    let p = patterns();
    let mut found: VecDeque<(usize, usize)> = VecDeque::new();
    for m in p.number.find_iter(text) {
        let (mut start, end) = (m.start(), m.start() + m.as_str().trim_end_matches(',').len());
        let before = text[..start].trim_end_matches('{');
        if before.ends_with(['^', '_']) {
            continue;
        }
        // `10-12`: a hyphen after a digit or letter is not a sign.
        if text[start..].starts_with('-') && before.ends_with(|c: char| c.is_alphanumeric() || c == ')') {
            start += 1;
        }
        if found.len() == KEEP {
            found.pop_front();
        }
        found.push_back((start, end));
    }
    let trimmed = text.trim_end();
    let final_start = sentence_start(trimmed, trimmed.trim_end_matches(['.', '!', '?']).len());
    if let Some(math) = prose_math(&trimmed[final_start..]) {
        return Ok(Some(math));
    }
    // A number in words wins when the final sentence has no digits, or when it is stated as a
    // result ("so she has fifteen left") after the sentence's last digits.
    let in_words = number_in_words(&trimmed[final_start..]).map(|(w, e, stated)| (w, final_start + e, stated));
    let Some(&(mut start, mut end)) = found.back() else {
        return Ok(in_words.map(|(w, ..)| w));
    };
    let digits_in_final = end > final_start;
    if let Some((w, ..)) = in_words.filter(|(_, e, stated)| *e > end && (*stated || !digits_in_final)) {
        return Ok(Some(w));
    }
    // Side clause: the last number before the first side marker that has a number before it,
    // when the clause runs to the end of the sentence ("…, when the tank is full, it holds 50"
    // goes on after its clause).
    let sentence_from = sentence_start(text, start);
    let earlier: Vec<&(usize, usize)> = found.iter().filter(|(s, _)| *s >= sentence_from).collect();
    let sentence_end = text[end..].find(['\n', '.']).map_or(text.len(), |k| end + k);
    // A marker is trailing when no ", " starts after it (before the last number).
    let last_comma = text[sentence_from..end].rfind(", ").map(|k| sentence_from + k);
    for m in p.side_clause.find_iter(&text[sentence_from..sentence_end]) {
        let marker = sentence_from + m.start();
        if marker >= start {
            break;
        }
        let trailing = last_comma.is_none_or(|c| c <= marker);
        if let Some(&&(s, e)) = earlier.iter().rev().find(|(_, e)| *e <= marker).filter(|_| trailing) {
            (start, end) = (s, e);
            break;
        }
    }
    if let Some(why) = not_an_answer(text, start) {
        return Err(why.to_string());
    }
    Ok(Some(text[start..end].to_string()))
}

/// Maths written as prose at the end of the final sentence, after its last linking verb or
/// equals sign: "the range is [−2, 5]", "so 1/√5 = √5/5", "the limit is ∞". Only when it looks
/// like maths (a radical, π, ∞, a power, a relation, brackets, a variable in an operation, "real
/// numbers") and holds no side clause; plain numbers are left to the number rules.
fn prose_math(sentence: &str) -> Option<String> {
    const MAX_CHARS: usize = 80;
    let p = patterns();
    let sentence = sentence.trim_end_matches(['.', '!', '?', ' ']);
    // "we get x = 3 and y = -1": several solved unknowns.
    if let Some(m) = p.assignments.captures(sentence).and_then(|c| c.get(1)) {
        return Some(m.as_str().to_string());
    }
    let m = p.linking.find_iter(sentence).last()?;
    let tail = sentence[m.end()..].trim();
    // Words of prose ("roughly", "bacteria") mean this is not a formula; function names are.
    let prose = p.word_3.captures_iter(tail).any(|c| !crate::lex::is_function_name(&c[1]));
    let real_line = matches!(tail.to_lowercase().as_str(), "all real numbers" | "the set of all real numbers");
    let plausible = !tail.is_empty()
        && tail.len() <= MAX_CHARS
        && (real_line || (p.math_marker.is_match(tail) && !prose))
        && !p.side_clause.is_match(tail)
        && !tail.contains('$');
    (plausible && crate::answer::parse_answer(tail).is_ok()).then(|| tail.to_string())
}

/// The last number written in words in a sentence ("forty boxes", "two thirds"). A bare "one"
/// counts only after "exactly", "only", "is", "are" or "equals" ("no one" is not a number).
fn number_in_words(sentence: &str) -> Option<(String, usize, bool)> {
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    let mut start = None;
    for (i, c) in sentence.char_indices().chain(std::iter::once((sentence.len(), ' '))) {
        match (c.is_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i, sentence[s..i].to_lowercase()));
                start = None;
            }
            _ => {}
        }
        if spans.len() > 400 {
            return None; // a final "sentence" this long is not a sentence
        }
    }
    let mut best = None;
    let mut i = 0;
    while i < spans.len() {
        let word = spans[i].2.as_str();
        let opens = words::is_number_word(word) || matches!(word, "a" | "an");
        if !opens {
            i += 1;
            continue;
        }
        // Extend over words separated only by spaces or hyphens.
        let mut j = i;
        while j + 1 < spans.len()
            && sentence[spans[j].1..spans[j + 1].0].chars().all(|c| c == ' ' || c == '-')
            && (words::is_number_word(&spans[j + 1].2) || matches!(spans[j + 1].2.as_str(), "and" | "a" | "an" | "point"))
        {
            j += 1;
        }
        let run: Vec<&str> = spans[i..=j].iter().map(|s| s.2.as_str()).collect();
        if let Some((_, used)) = words::leading_number(&run) {
            let prev = i.checked_sub(1).map(|k| spans[k].2.as_str());
            let bare_one = used == 1 && matches!(word, "one" | "a" | "an");
            let committed = matches!(prev, Some("exactly" | "only" | "is" | "are" | "equals" | "be"));
            // Stated as a result ("has fifteen", "is twelve"), not mentioned in passing.
            let stated = matches!(
                prev,
                Some("is" | "are" | "was" | "were" | "has" | "have" | "had" | "get" | "gets" | "got" | "makes" | "equals"
                    | "be" | "remain" | "remains" | "leaves" | "with" | "exactly" | "only")
            );
            if !bare_one || committed {
                let end = spans[i + used - 1].1;
                best = Some((sentence[spans[i].0..end].to_string(), end, stated));
            }
            i += used;
        } else {
            i += 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_off_responses() {
        assert!(cut_off("so the width is 8, and then we need to"));
        assert!(cut_off("Subtracting 2 from both sides:"));
        assert!(cut_off("The volume is 8 (in cubic"));
        assert!(!cut_off("I have 12 apples and then get 3 more for 15"));
        assert!(!cut_off("The answer is 5."));
    }

    #[test]
    fn numbers() {
        assert_eq!(last_number("So she needs 2 1/2 cups."), Ok(Some("2 1/2".into())));
        assert_eq!(last_number("about 1.2 x 10^5 cells"), Ok(Some("1.2 x 10^5".into())));
        assert_eq!(last_number("The maximum area is 12 when the width is 3."), Ok(Some("12".into())));
        assert_eq!(last_number("the score was 10-12"), Ok(Some("12".into())));
        assert!(last_number("From the problem, 3x + 2 = 17.").is_err());
        assert_eq!(last_number("Thus 2x + 1 = 19 gives x = 9."), Ok(Some("9".into())));
        assert_eq!(last_number("They need forty boxes."), Ok(Some("forty".into())));
        assert_eq!(last_number("She spent 5, so she has fifteen left."), Ok(Some("fifteen".into())));
        assert_eq!(last_number("we get x = 3 and y = -1."), Ok(Some("x = 3 and y = -1".into())));
        assert_eq!(last_number("so 2x = 12 and x = 6."), Ok(Some("6".into())));
        assert_eq!(last_number("It costs 18 dollars and 90 cents."), Ok(Some("18 dollars and 90 cents".into())));
        assert_eq!(last_number("No one knows."), Ok(None));
    }

    #[test]
    fn spans() {
        assert_eq!(last_math_span("gives $x = 3$, $y = -1$."), Some("x = 3, y = -1".into()));
        assert_eq!(last_math_span("is $-7$, attained at $x = 2$."), Some("-7".into()));
        assert_eq!(last_math_span("pays $5 for it and $13 more, $18 in total"), None);
    }
}
