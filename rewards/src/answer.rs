//! The shape of an answer: a number or expression, or a set, tuple, interval, matrix,
//! equation, multiple-choice letter or plain text. Built from tokens on top of [`parse_expr`].

use crate::expr::Expr;
use crate::lex::{self, Tok};
use crate::parse::parse_expr;
use crate::units::{self, Unit};
use crate::words;

/// Most elements in one set, tuple, list or matrix.
pub const MAX_ELEMENTS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl RelOp {
    /// The same relation read right to left (`a < b` is `b > a`).
    pub fn flipped(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Le => RelOp::Ge,
            RelOp::Gt => RelOp::Lt,
            RelOp::Ge => RelOp::Le,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Expr(Expr),
    /// `(a, b)`: ordered. A pair may also be read as an open interval.
    Tuple(Vec<Answer>),
    /// `\{a, b\}`: unordered.
    Set(Vec<Answer>),
    /// `a, b` without brackets: unordered ("enter all solutions, separated by commas").
    List(Vec<Answer>),
    Interval { lo: Expr, hi: Expr, lo_closed: bool, hi_closed: bool },
    Union(Vec<Answer>),
    Matrix(Vec<Vec<Expr>>),
    Relation { lhs: Expr, op: RelOp, rhs: Expr },
    Choice(char),
    Text(String),
    /// A number with a known unit (`50 mm`); a number with an unknown one is just the number.
    Quantity { value: Expr, unit: Unit },
}

fn opens(t: &Tok) -> bool {
    matches!(t, Tok::Sym('(') | Tok::Sym('[') | Tok::Sym('{') | Tok::SetOpen | Tok::Begin(_))
}

fn closes(t: &Tok) -> bool {
    matches!(t, Tok::Sym(')') | Tok::Sym(']') | Tok::Sym('}') | Tok::SetClose | Tok::End(_))
}

/// Splits at the tokens for which `is_sep` holds, outside any brackets.
fn split_top(toks: &[Tok], is_sep: impl Fn(&Tok) -> bool) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if opens(t) {
            depth += 1;
        } else if closes(t) {
            depth -= 1;
        } else if depth == 0 && is_sep(t) {
            parts.push(&toks[start..i]);
            start = i + 1;
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// Whether the bracket opened at index 0 closes exactly at the last token.
fn wrapped(toks: &[Tok]) -> bool {
    if toks.len() < 2 || !opens(&toks[0]) {
        return false;
    }
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        if opens(t) {
            depth += 1;
        } else if closes(t) {
            depth -= 1;
            if depth == 0 {
                return i == toks.len() - 1;
            }
        }
    }
    false
}

/// Words that end a numeric answer as a unit (`5 cm`, `12 dollars`): dropped.
fn is_unit_word(tok: &Tok) -> bool {
    match tok {
        Tok::Text(_) => true,
        Tok::Word { text, spaced } => {
            let t = text.as_str();
            let known = matches!(
                t,
                "cm" | "mm" | "km" | "kg" | "mg" | "ml" | "mL" | "ft" | "yd" | "mi" | "hr" | "hrs"
                    | "sec" | "min" | "mph" | "kph" | "lb" | "lbs" | "oz" | "units" | "unit" | "sq"
                    | "cents" | "dollars" | "degrees" | "meters" | "inches" | "feet" | "miles"
            );
            !is_reserved(t) && (known || (*spaced && t.chars().count() >= 2))
        }
        _ => false,
    }
}

/// Removes what carries no value: a trailing full stop, units after a number, `\$`.
fn trim_noise(mut toks: &[Tok]) -> &[Tok] {
    loop {
        match toks.last() {
            Some(Tok::Sym('.')) | Some(Tok::Sym(';')) => toks = &toks[..toks.len() - 1],
            Some(t) if is_unit_word(t) && toks.len() >= 2 && !toks[..toks.len() - 1].iter().all(is_wordy) => {
                toks = &toks[..toks.len() - 1]
            }
            // A `^2` or `^3` right after a unit (`cm^2`) goes with it.
            Some(Tok::Num { .. })
                if toks.len() >= 3
                    && toks[toks.len() - 2] == Tok::Sym('^')
                    && is_unit_word(&toks[toks.len() - 3])
                    && !toks[..toks.len() - 3].iter().all(is_wordy) =>
            {
                toks = &toks[..toks.len() - 3]
            }
            _ => break,
        }
    }
    while let Some(Tok::Text(_)) = toks.first() {
        // A leading `\text{…}` label (`\text{Area } = 5`) is handled by the relation rule; a
        // leading label with no `=` is dropped only if numbers follow.
        if toks[1..].iter().any(|t| matches!(t, Tok::Num { .. })) && !toks.contains(&Tok::Sym('=')) {
            toks = &toks[1..];
        } else {
            break;
        }
    }
    toks
}

fn is_reserved(word: &str) -> bool {
    lex::is_function_name(word) || matches!(word, "pi" | "e" | "inf" | "infinity" | "and" | "or")
}

/// Where a unit tail starts (`5 cm`, `60 km/h`, `12 \text{ m}^2`, `3 \text{ apples}`): the
/// first token from which every token belongs to a unit, after a value that is not only words.
/// A one-letter unit (`5 m`, `3 h`) counts only after a value without letters.
fn unit_start(toks: &[Tok]) -> Option<usize> {
    let starts = |i: usize| match &toks[i] {
        Tok::Text(_) => true,
        Tok::Word { text, spaced } => {
            let letters = text.chars().count();
            let plain_value = !toks[..i].iter().any(|t| matches!(t, Tok::Word { .. } | Tok::Text(_) | Tok::Cmd(_)));
            !is_reserved(text) && ((units::is_known(text) && (letters >= 2 || plain_value)) || (*spaced && letters >= 2))
        }
        _ => false,
    };
    let in_tail = |i: usize| match &toks[i] {
        Tok::Word { text, .. } => !is_reserved(text),
        Tok::Text(_) | Tok::Sym('/') | Tok::Sym('^') | Tok::Sym('*') | Tok::Sym('{') | Tok::Sym('}') => true,
        // Only powers: `m^2`, `s^{-1}`.
        Tok::Num { .. } | Tok::Sym('-') => matches!(toks[i - 1], Tok::Sym('^') | Tok::Sym('{') | Tok::Sym('-')),
        _ => false,
    };
    let first = (1..toks.len()).find(|&i| starts(i))?;
    let value_is_words = toks[..first].iter().all(is_wordy);
    (!value_is_words && (first..toks.len()).all(in_tail)).then_some(first)
}

/// A value with its unit tail: degrees and percent in words become marks, a known unit makes
/// a [`Answer::Quantity`], an unknown one is dropped.
fn attach_unit(value: Answer, tail: &[Tok]) -> Answer {
    let Answer::Expr(e) = value else { return value };
    let words: Vec<String> = tail
        .iter()
        .flat_map(|t| match t {
            Tok::Word { text, .. } => vec![text.to_lowercase()],
            Tok::Text(s) => words::split_words(s),
            _ => Vec::new(),
        })
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["degrees" | "degree" | "deg"] => return Answer::Expr(Expr::Degrees(Box::new(e))),
        ["percent"] | ["per", "cent"] => return Answer::Expr(Expr::Percent(Box::new(e))),
        _ => {}
    }
    match units::parse_unit(tail) {
        Some(unit) => Answer::Quantity { value: e, unit },
        None => Answer::Expr(e),
    }
}

fn is_wordy(t: &Tok) -> bool {
    matches!(t, Tok::Word { .. } | Tok::Text(_) | Tok::Sym(',') | Tok::Sym('.') | Tok::Sym('-') | Tok::Sym('\'') | Tok::Sym('!'))
}

/// Plain text (`even`, `no solution`, `Monday`) when the answer is words only and at least
/// one word is not a variable, function or constant name.
fn as_text(toks: &[Tok]) -> Option<String> {
    if toks.is_empty() || !toks.iter().all(is_wordy) {
        return None;
    }
    let mut words = Vec::new();
    for t in toks {
        match t {
            Tok::Word { text, .. } => words.push(text.to_lowercase()),
            Tok::Text(s) => words.extend(s.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase)),
            _ => {}
        }
    }
    words.retain(|w| !w.is_empty() && !matches!(w.as_str(), "the" | "a" | "an"));
    // Two-letter words are more often products of variables (`ab`) than text; `no` is the
    // common exception.
    let has_real_word = words.iter().any(|w| {
        (w.chars().count() >= 3 || w == "no")
            && !lex::is_function_name(w)
            && !matches!(w.as_str(), "pi" | "inf" | "infinity" | "oo")
    });
    (has_real_word || toks.iter().any(|t| matches!(t, Tok::Text(_)))).then(|| words.join(" "))
}

/// `C`, `(C)`, `C)`, `\text{(C)}`: a multiple-choice letter (A to J, capitals only).
fn as_choice(toks: &[Tok]) -> Option<char> {
    let letter = |s: &str| -> Option<char> {
        let inner = s.trim().trim_start_matches('(').trim_end_matches([')', '.', ':']);
        let mut chars = inner.chars();
        let c = chars.next()?;
        (chars.next().is_none() && ('A'..='J').contains(&c)).then_some(c)
    };
    match toks {
        [Tok::Word { text, .. }] | [Tok::Text(text)] => letter(text),
        [Tok::Sym('('), Tok::Word { text, .. }, Tok::Sym(')')] => letter(text),
        [Tok::Word { text, .. }, Tok::Sym(')')] => letter(text),
        _ => None,
    }
}

fn is_and(t: &Tok) -> bool {
    match t {
        Tok::Word { text, .. } => text == "and",
        Tok::Text(text) => text.trim() == "and",
        _ => false,
    }
}

/// A number in words (`twenty-four`, `three quarters`, `negative seven`), possibly followed by
/// a few other words (`fifteen apples`, `two hours`) that are not themselves number words.
fn number_in_words(toks: &[Tok]) -> Option<Answer> {
    if !toks.iter().all(|t| matches!(t, Tok::Word { .. } | Tok::Text(_) | Tok::Sym('-'))) {
        return None;
    }
    let mut all = Vec::new();
    for t in toks {
        match t {
            Tok::Word { text, .. } | Tok::Text(text) => all.extend(words::split_words(text)),
            _ => {}
        }
    }
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (value, used) = words::leading_number(&refs)?;
    let rest = &refs[used..];
    if rest.len() > 4 || rest.iter().any(|w| words::is_number_word(w)) {
        return None;
    }
    let number = Answer::Expr(Expr::num(value));
    Some(if rest.is_empty() { number } else { attach_unit(number, &[Tok::Text(rest.join(" "))]) })
}

/// `18 dollars and 90 cents`, `3 hours 20 minutes`, `2 ft 3 in`: amounts of one dimension
/// written in several known units add up (in the first one's unit).
fn compound_quantity(toks: &[Tok], depth: usize) -> Option<Answer> {
    const MAX_PARTS: usize = 4;
    let is_word = |t: &Tok| matches!(t, Tok::Word { .. } | Tok::Text(_));
    let mut cuts: Vec<usize> = (1..toks.len()).filter(|&i| matches!(toks[i], Tok::Num { .. }) && is_word(&toks[i - 1])).collect();
    if cuts.is_empty() || cuts.len() >= MAX_PARTS || !matches!(toks.first(), Some(Tok::Num { .. })) {
        return None;
    }
    cuts.insert(0, 0);
    cuts.push(toks.len());
    let mut total: Option<(Expr, Unit)> = None;
    for w in cuts.windows(2) {
        let mut part = &toks[w[0]..w[1]];
        if part.last().is_some_and(is_and) {
            part = &part[..part.len() - 1];
        }
        let Ok(Answer::Quantity { value, unit }) = parse_tokens(part, depth + 1) else { return None };
        total = Some(match total {
            None => (value, unit),
            Some((sum, first)) if first.dims == unit.dims => {
                let factor = Expr::num(&unit.scale / &first.scale);
                (Expr::Add(Box::new(sum), Box::new(Expr::Mul(Box::new(value), Box::new(factor)))), first)
            }
            Some(_) => return None,
        });
    }
    total.map(|(value, unit)| Answer::Quantity { value, unit })
}

/// The whole real line, in words.
fn is_real_line(text: &str) -> bool {
    matches!(text, "all real numbers" | "all reals" | "real numbers" | "all real values" | "every real number")
}

fn real_line() -> Answer {
    Answer::Interval { lo: Expr::Neg(Box::new(Expr::Infinity)), hi: Expr::Infinity, lo_closed: false, hi_closed: false }
}

/// Malformed LaTeX that a reader still understands: a `}` that closes nothing is dropped and
/// braces left open at the end are closed (`\frac{1}{2` is ½). Parentheses are left alone.
fn balance_braces(toks: Vec<Tok>) -> Vec<Tok> {
    let mut depth = 0usize;
    let mut out = Vec::with_capacity(toks.len());
    for t in toks {
        match t {
            Tok::Sym('{') => depth += 1,
            Tok::Sym('}') if depth == 0 => continue,
            Tok::Sym('}') => depth -= 1,
            _ => {}
        }
        out.push(t);
    }
    out.extend(std::iter::repeat_n(Tok::Sym('}'), depth));
    out
}

/// Parses an answer string.
pub fn parse_answer(input: &str) -> Result<Answer, String> {
    let toks = balance_braces(lex::tokenize(input)?);
    parse_tokens(&toks, 0)
}

/// Parses an answer that is known to be a multiple-choice pick; also reads a leading letter
/// followed by its option text (`(C) 42`).
/// Lower-case letters count here (`\boxed{c}` for option C), since the gold says it is a choice.
pub fn parse_choice(input: &str) -> Option<char> {
    let toks = lex::tokenize(&input.to_uppercase()).ok()?;
    if let Some(c) = as_choice(trim_noise(&toks)) {
        return Some(c);
    }
    let head = match toks.as_slice() {
        [Tok::Sym('('), w @ Tok::Word { .. }, Tok::Sym(')'), ..] => w,
        [w @ Tok::Word { .. }, Tok::Sym(')') | Tok::Sym('.') | Tok::Sym(':'), ..] => w,
        _ => return None,
    };
    as_choice(std::slice::from_ref(head))
}

fn parse_tokens(toks: &[Tok], depth: usize) -> Result<Answer, String> {
    if depth > 8 {
        return Err("answer structure nested too deep".into());
    }
    let mut toks = toks;
    while let Some(Tok::Sym('.') | Tok::Sym(';')) = toks.last() {
        toks = &toks[..toks.len() - 1];
    }
    if let Some(sum) = compound_quantity(toks, depth) {
        return Ok(sum);
    }
    if let Some(at) = unit_start(toks) {
        return Ok(attach_unit(parse_tokens(&toks[..at], depth + 1)?, &toks[at..]));
    }
    let toks = trim_noise(toks);
    if toks.is_empty() {
        return Err("empty answer".into());
    }
    if let Some(c) = as_choice(toks) {
        return Ok(Answer::Choice(c));
    }
    if let Some(n) = number_in_words(toks) {
        return Ok(n);
    }
    if let Some(text) = as_text(toks) {
        if is_real_line(&text) {
            return Ok(real_line());
        }
        return Ok(Answer::Text(text));
    }
    if let Some(expanded) = expand_plus_minus(toks)? {
        let items = expanded.iter().map(|t| parse_tokens(t, depth + 1)).collect::<Result<_, _>>()?;
        return Ok(Answer::Set(items));
    }
    // `x \in [1, 2)` answers with the set on the right.
    let in_parts = split_top(toks, |t| *t == Tok::Cmd("in".into()));
    if in_parts.len() == 2 {
        return parse_tokens(in_parts[1], depth + 1);
    }
    let union = split_top(toks, |t| *t == Tok::Cmd("cup".into()));
    if union.len() > 1 {
        return Ok(Answer::Union(parse_items(&union, depth)?));
    }
    let items = split_top(toks, |t| *t == Tok::Sym(',') || *t == Tok::Sym(';') || is_and(t));
    if items.len() > 1 {
        return Ok(Answer::List(parse_items(&items, depth)?));
    }
    parse_item(toks, depth)
}

fn parse_items(parts: &[&[Tok]], depth: usize) -> Result<Vec<Answer>, String> {
    if parts.len() > MAX_ELEMENTS {
        return Err(format!("more than {MAX_ELEMENTS} elements"));
    }
    parts.iter().filter(|p| !p.is_empty()).map(|p| parse_tokens(p, depth + 1)).collect()
}

/// `a \pm b` stands for the two answers `a + b` and `a - b`.
fn expand_plus_minus(toks: &[Tok]) -> Result<Option<Vec<Vec<Tok>>>, String> {
    let positions: Vec<usize> = toks
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, Tok::Cmd(c) if c == "pm" || c == "mp"))
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        return Ok(None);
    }
    if positions.len() > 2 {
        return Err("more than two ± signs".into());
    }
    let mut out = Vec::new();
    for sign in ['+', '-'] {
        let mut v = toks.to_vec();
        for &i in &positions {
            let is_mp = matches!(&toks[i], Tok::Cmd(c) if c == "mp");
            let s = if is_mp == (sign == '+') { '-' } else { '+' };
            v[i] = Tok::Sym(s);
        }
        out.push(v);
    }
    Ok(Some(out))
}

fn parse_item(toks: &[Tok], depth: usize) -> Result<Answer, String> {
    if let [Tok::Cmd(c)] = toks {
        if c == "emptyset" {
            return Ok(Answer::Set(Vec::new()));
        }
        if c == "reals" {
            return Ok(real_line());
        }
    }
    if let (Some(Tok::Begin(env)), Some(Tok::End(_))) = (toks.first(), toks.last()) {
        return parse_matrix(env, &toks[1..toks.len() - 1]);
    }
    if wrapped(toks) {
        let inner = &toks[1..toks.len() - 1];
        let (open, close) = (&toks[0], &toks[toks.len() - 1]);
        if *open == Tok::SetOpen {
            let parts = split_top(inner, |t| *t == Tok::Sym(','));
            if inner.is_empty() {
                return Ok(Answer::Set(Vec::new()));
            }
            return Ok(Answer::Set(parse_items(&parts, depth)?));
        }
        let bracket = matches!(open, Tok::Sym('(') | Tok::Sym('[')) && matches!(close, Tok::Sym(')') | Tok::Sym(']'));
        let parts = split_top(inner, |t| *t == Tok::Sym(','));
        // `[[1, 2], [3, 4]]`: a list of rows, not an interval.
        let rows = parts.iter().all(|p| {
            let p = trim_noise(p);
            wrapped(p) && matches!(p[0], Tok::Sym('(') | Tok::Sym('[')) && split_top(&p[1..p.len() - 1], |t| *t == Tok::Sym(',')).len() > 1
        });
        if bracket && parts.len() > 1 && rows {
            return Ok(Answer::Tuple(parse_items(&parts, depth)?));
        }
        if bracket && parts.len() > 1 {
            let closed_lo = *open == Tok::Sym('[');
            let closed_hi = *close == Tok::Sym(']');
            let infinite_end = parts.len() == 2
                && parts.iter().any(|p| matches!(trim_noise(p), [Tok::Cmd(c)] | [Tok::Sym('-'), Tok::Cmd(c)] if c == "infty"));
            if parts.len() == 2 && (closed_lo || closed_hi || infinite_end) {
                let lo = parse_expr(trim_noise(parts[0]))?;
                let hi = parse_expr(trim_noise(parts[1]))?;
                return Ok(Answer::Interval { lo, hi, lo_closed: closed_lo, hi_closed: closed_hi });
            }
            if *open == Tok::Sym('(') || closed_lo == closed_hi {
                return Ok(Answer::Tuple(parse_items(&parts, depth)?));
            }
        }
        if *open == Tok::Sym('{') && *close == Tok::Sym('}') {
            return parse_tokens(inner, depth + 1);
        }
        // `\left[\begin{array}…\end{array}\right]`: brackets around a matrix.
        if matches!(inner.first(), Some(Tok::Begin(_))) && wrapped(inner) {
            return parse_item(inner, depth + 1);
        }
    }
    if let Some(relation) = parse_relation(toks)? {
        return Ok(relation);
    }
    Ok(Answer::Expr(parse_expr(toks)?))
}

fn rel_op(t: &Tok) -> Option<RelOp> {
    match t {
        Tok::Sym('=') => Some(RelOp::Eq),
        Tok::Sym('<') => Some(RelOp::Lt),
        Tok::Sym('>') => Some(RelOp::Gt),
        Tok::Le => Some(RelOp::Le),
        Tok::Ge => Some(RelOp::Ge),
        Tok::Ne => Some(RelOp::Ne),
        _ => None,
    }
}

/// `lhs op rhs`, and chains: `a < x < b` is an interval; `x = 2 + 3 = 5` keeps its ends.
fn parse_relation(toks: &[Tok]) -> Result<Option<Answer>, String> {
    // `\sqrt{3} ≈ 1.732`: the right side approximates the left, which is the answer, unless the
    // left is only a name (`x ≈ 1.73`).
    let approx = split_top(toks, |t| *t == Tok::Sym('≈'));
    if approx.len() > 1 {
        let first = trim_noise(approx[0]);
        let named = first.is_empty()
            || matches!(first, [Tok::Word { text, .. }] if text.chars().count() == 1)
            || first.iter().all(|t| matches!(t, Tok::Text(_)));
        let part = if named { approx[1] } else { approx[0] };
        return parse_item(trim_noise(part), 1).map(Some);
    }
    let parts = split_top(toks, |t| rel_op(t).is_some());
    if parts.len() == 1 {
        return Ok(None);
    }
    let ops: Vec<RelOp> = toks
        .iter()
        .scan(0i32, |depth, t| {
            if opens(t) {
                *depth += 1;
            } else if closes(t) {
                *depth -= 1;
            }
            Some((*depth, t))
        })
        .filter(|(d, t)| *d == 0 && rel_op(t).is_some())
        .filter_map(|(_, t)| rel_op(t))
        .collect();
    // `= 5` (the left side left out) is the value on the right.
    if parts[0].is_empty() && parts.len() == 2 {
        return parse_item(trim_noise(parts[1]), 1).map(Some);
    }
    let label = |p: &[Tok]| p.iter().all(|t| matches!(t, Tok::Text(_)));
    let parsed: Vec<Result<Expr, String>> = parts.iter().filter(|p| !label(p)).map(|p| parse_expr(trim_noise(p))).collect();
    let last_part = parts[parts.len() - 1];
    if ops.iter().all(|o| *o == RelOp::Eq) && parsed.len() > 1 && parsed[..parsed.len() - 1].iter().any(Result::is_err) {
        // A left side that is not a value (`\lim_{x\to0} \frac{\sin x}{x} = 1`, `(x, y) = (3, -1)`,
        // `f'(x) = 2x`) names the answer on the right.
        return parse_item(trim_noise(last_part), 1).map(Some);
    }
    let exprs = parsed.into_iter().collect::<Result<Vec<_>, _>>()?;
    if exprs.len() < parts.len() {
        // `\text{Area} = 5`: a label on the left.
        return Ok(exprs.into_iter().last().map(Answer::Expr));
    }
    if exprs.len() == 3 && ops.len() == 2 && matches!(exprs[1], Expr::Var(_)) {
        let ascending = ops.iter().all(|o| matches!(o, RelOp::Lt | RelOp::Le));
        let descending = ops.iter().all(|o| matches!(o, RelOp::Gt | RelOp::Ge));
        if ascending || descending {
            let (lo, hi, lo_op, hi_op) = if ascending {
                (exprs[0].clone(), exprs[2].clone(), ops[0], ops[1])
            } else {
                (exprs[2].clone(), exprs[0].clone(), ops[1], ops[0])
            };
            return Ok(Some(Answer::Interval {
                lo,
                hi,
                lo_closed: matches!(lo_op, RelOp::Le | RelOp::Ge),
                hi_closed: matches!(hi_op, RelOp::Le | RelOp::Ge),
            }));
        }
    }
    if ops.iter().all(|o| *o == RelOp::Eq) || exprs.len() == 2 {
        let mut exprs = exprs;
        let rhs = exprs.pop().ok_or("empty relation")?;
        let lhs = exprs.swap_remove(0);
        return Ok(Some(Answer::Relation { lhs, op: ops[0], rhs }));
    }
    Err("unsupported chain of relations".into())
}

fn parse_matrix(env: &str, body: &[Tok]) -> Result<Answer, String> {
    if !env.ends_with("matrix") && env != "array" {
        return Err(format!("unsupported environment {env}"));
    }
    let mut rows = Vec::new();
    for row in split_top(body, |t| *t == Tok::RowSep) {
        if row.is_empty() {
            continue; // a trailing `\\`
        }
        let cells = split_top(row, |t| *t == Tok::Sym('&'));
        if cells.len() > MAX_ELEMENTS {
            return Err("matrix too large".into());
        }
        rows.push(cells.iter().map(|c| parse_expr(trim_noise(c))).collect::<Result<Vec<_>, _>>()?);
        if rows.len() > MAX_ELEMENTS {
            return Err("matrix too large".into());
        }
    }
    let width = rows.first().map(Vec::len).unwrap_or(0);
    if rows.iter().any(|r| r.len() != width) {
        return Err("ragged matrix".into());
    }
    Ok(Answer::Matrix(rows))
}
