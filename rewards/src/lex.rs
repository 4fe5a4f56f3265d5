//! Tokenizer for LaTeX and plain-text math answers.
//!
//! It does the normalisation that is easier on characters than on a tree: spacing commands,
//! `\left`/`\right`, unicode symbols, thousands separators, repeating decimals, scientific
//! notation, degree and percent signs, and `\text{…}` contents.

/// Most tokens one answer may have.
pub const MAX_TOKENS: usize = 4000;
/// Deepest `\text{…}` re-tokenisation.
const MAX_TEXT_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A decimal literal: `digits` holds ASCII digits with at most one `.`; the value is
    /// `digits` (plus the `repeating` block) times `10^exp10`.
    Num { digits: String, repeating: Option<String>, exp10: i64 },
    /// A run of letters. `spaced` says whether whitespace preceded it (units: `5 cm`).
    Word { text: String, spaced: bool },
    /// A LaTeX command, without the backslash, after aliasing (`dfrac` → `frac`).
    Cmd(String),
    /// The contents of `\text{…}` and friends when they are words, not math.
    Text(String),
    Sym(char),
    SetOpen,
    SetClose,
    Le,
    Ge,
    Ne,
    RowSep,
    Degree,
    Percent,
    /// `\begin{env}` / `\end{env}`.
    Begin(String),
    End(String),
}

pub type LexResult = Result<Vec<Tok>, String>;

pub fn tokenize(input: &str) -> LexResult {
    let mut lexer = Lexer { chars: input.chars().collect(), pos: 0, out: Vec::new(), bracket_depth: 0 };
    lexer.run(0)?;
    Ok(fold_scientific(fold_degrees(lexer.out)))
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    out: Vec<Tok>,
    /// Depth of `(`, `[` and `\{`: thousands separators are read only outside them, where a
    /// comma cannot separate tuple elements.
    bracket_depth: i32,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn push(&mut self, tok: Tok) -> Result<(), String> {
        if self.out.len() >= MAX_TOKENS {
            return Err(format!("answer has more than {MAX_TOKENS} tokens"));
        }
        self.out.push(tok);
        Ok(())
    }

    fn starts_with(&self, s: &str) -> bool {
        let mut rest = self.chars[self.pos.min(self.chars.len())..].iter();
        s.chars().all(|c| rest.next() == Some(&c))
    }

    fn run(&mut self, nesting: usize) -> Result<(), String> {
        let mut spaced = false;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '~' {
                self.pos += 1;
                spaced = true;
                continue;
            }
            if c.is_control() {
                return Err(format!("control character U+{:04X} in answer", c as u32));
            }
            let was_spaced = std::mem::take(&mut spaced);
            if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                self.number()?;
            } else if c == '\\' {
                self.command(nesting)?;
            } else if c.is_alphabetic() && c != 'π' {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphabetic() && c != 'π') {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                self.push(Tok::Word { text, spaced: was_spaced })?;
            } else {
                self.pos += 1;
                self.symbol(c)?;
            }
        }
        Ok(())
    }

    fn symbol(&mut self, c: char) -> Result<(), String> {
        let tok = match c {
            '−' | '–' | '—' | '‐' | '‑' => Tok::Sym('-'),
            '×' | '·' | '⋅' | '∙' | '∗' => Tok::Sym('*'),
            '÷' | '∕' => Tok::Sym('/'),
            '≤' | '⩽' => Tok::Le,
            '≥' | '⩾' => Tok::Ge,
            '≠' => Tok::Ne,
            '≈' => Tok::Sym('≈'),
            'ℝ' => Tok::Cmd("reals".into()),
            '°' => Tok::Degree,
            '%' => Tok::Percent,
            'π' => Tok::Cmd("pi".into()),
            '∞' => Tok::Cmd("infty".into()),
            '√' => Tok::Cmd("sqrt".into()),
            '∛' | '∜' => {
                // `∛x` is `\sqrt[3]{x}`: the index goes in brackets, as the parser reads it.
                self.push(Tok::Cmd("sqrt".into()))?;
                self.push(Tok::Sym('['))?;
                let index = if c == '∛' { "3" } else { "4" };
                self.push(Tok::Num { digits: index.into(), repeating: None, exp10: 0 })?;
                Tok::Sym(']')
            }
            '∪' => Tok::Cmd("cup".into()),
            '∩' => Tok::Cmd("cap".into()),
            '∈' => Tok::Cmd("in".into()),
            '±' => Tok::Cmd("pm".into()),
            '∓' => Tok::Cmd("mp".into()),
            '∅' => Tok::Cmd("emptyset".into()),
            '…' => Tok::Cmd("dots".into()),
            '⟨' => Tok::Sym('('),
            '⟩' => Tok::Sym(')'),
            '{' if self.starts_with(",}") => {
                // `1{,}000`: LaTeX's way to stop a comma adding space.
                self.pos += 2;
                Tok::Sym(',')
            }
            '²' | '³' => {
                self.push(Tok::Sym('^'))?;
                let digit = if c == '²' { "2" } else { "3" };
                Tok::Num { digits: digit.into(), repeating: None, exp10: 0 }
            }
            // Currency signs carry no value (`\$` and `$` are already dropped).
            '$' | '€' | '£' | '¥' | '₹' => return Ok(()),
            '*' if self.peek() == Some('*') => {
                // `**` is Python's power.
                self.pos += 1;
                Tok::Sym('^')
            }
            '(' | '[' => {
                self.bracket_depth += 1;
                Tok::Sym(c)
            }
            ')' | ']' => {
                self.bracket_depth -= 1;
                Tok::Sym(c)
            }
            '<' if self.peek() == Some('=') => {
                self.pos += 1;
                Tok::Le
            }
            '>' if self.peek() == Some('=') => {
                self.pos += 1;
                Tok::Ge
            }
            '!' if self.peek() == Some('=') => {
                self.pos += 1;
                Tok::Ne
            }
            '.' if self.starts_with("..") => {
                self.pos += 2;
                Tok::Cmd("dots".into())
            }
            _ => Tok::Sym(c),
        };
        self.push(tok)
    }

    fn take_digits(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// A thousands separator (`,`, `\,`, `{,}`, `\ `, a space) followed by exactly three digits:
    /// returns the separator's length.
    fn thousands_separator(&self) -> Option<usize> {
        // A plain space too (`1 234`), but not before a fraction: `2 100/3` is a mixed number.
        let sep = [",", "\\,", "{,}", "\\ ", "\\!", "\\;", " "].into_iter().find(|s| self.starts_with(s))?;
        let n = sep.chars().count();
        let three = (0..3).all(|k| self.peek_at(n + k).is_some_and(|c| c.is_ascii_digit()));
        let more = self.peek_at(n + 3).is_some_and(|c| c.is_ascii_digit() || (sep == " " && c == '/'));
        (three && !more).then_some(n)
    }

    fn number(&mut self) -> Result<(), String> {
        let mut digits = self.take_digits();
        if !digits.is_empty() && digits.len() <= 3 {
            while let Some(sep) = self.thousands_separator() {
                // A bare comma inside brackets separates elements: `(1,000)` stays a pair.
                if sep == 1 && self.bracket_depth > 0 {
                    break;
                }
                self.pos += sep;
                digits.push_str(&self.take_digits());
            }
        }
        let mut has_point = false;
        if self.peek() == Some('.') && !self.starts_with("...") {
            has_point = true;
            self.pos += 1;
            digits.push('.');
            digits.push_str(&self.take_digits());
        }
        let mut repeating = None;
        if has_point {
            repeating = self.repeating_block(&digits)?;
        }
        let exp10 = self.scientific_exponent();
        if digits.len() > 1000 {
            return Err("number literal longer than 1000 digits".into());
        }
        self.push(Tok::Num { digits, repeating, exp10 })
    }

    /// `\overline{3}`, `\dot{3}` or a trailing `...` after a decimal.
    fn repeating_block(&mut self, digits: &str) -> Result<Option<String>, String> {
        for cmd in ["\\overline{", "\\dot{", "\\bar{"] {
            if self.starts_with(cmd) {
                let save = self.pos;
                self.pos += cmd.chars().count();
                let block = self.take_digits();
                if self.peek() == Some('}') && !block.is_empty() {
                    self.pos += 1;
                    return Ok(Some(block));
                }
                self.pos = save;
            }
        }
        let ellipsis = ["...", "\\ldots", "\\dots", "\\cdots", "…"]
            .into_iter()
            .find(|e| self.starts_with(e));
        if let Some(e) = ellipsis {
            let frac = digits.split_once('.').map(|(_, f)| f).unwrap_or("");
            if let Some(block) = detect_period(frac) {
                self.pos += e.chars().count();
                return Ok(Some(block));
            }
        }
        Ok(None)
    }

    /// `1.5e3`, `2E-4`: an `e` right after a number and followed by digits.
    fn scientific_exponent(&mut self) -> i64 {
        if !matches!(self.peek(), Some('e') | Some('E')) {
            return 0;
        }
        let mut k = 1;
        let negative = match self.peek_at(1) {
            Some('-') | Some('−') => {
                k = 2;
                true
            }
            Some('+') => {
                k = 2;
                false
            }
            _ => false,
        };
        let start = self.pos + k;
        let mut end = start;
        while self.chars.get(end).is_some_and(|c| c.is_ascii_digit()) {
            end += 1;
        }
        // A letter right after the digits means this was not a number (`2e3x` is rare; `2ex` is e·x).
        if end == start || end - start > 7 || self.chars.get(end).is_some_and(|c| c.is_alphabetic()) {
            return 0;
        }
        let text: String = self.chars[start..end].iter().collect();
        self.pos = end;
        let n: i64 = text.parse().unwrap_or(0);
        if negative {
            -n
        } else {
            n
        }
    }

    fn read_command_name(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Reads a `{…}` group (balanced) and returns its inside; `None` if there is none.
    fn read_group(&mut self) -> Option<String> {
        while self.peek().is_some_and(|c| c == ' ') {
            self.pos += 1;
        }
        if self.peek() != Some('{') {
            return None;
        }
        let start = self.pos + 1;
        let mut depth = 0usize;
        let mut i = self.pos;
        while let Some(&c) = self.chars.get(i) {
            match c {
                '\\' => i += 1,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos = i + 1;
                        return Some(self.chars[start..i].iter().collect());
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    fn command(&mut self, nesting: usize) -> Result<(), String> {
        self.pos += 1; // the backslash
        let Some(next) = self.peek() else { return Ok(()) };
        if !next.is_ascii_alphabetic() {
            self.pos += 1;
            return match next {
                '{' => {
                    self.bracket_depth += 1;
                    self.push(Tok::SetOpen)
                }
                '}' => {
                    self.bracket_depth -= 1;
                    self.push(Tok::SetClose)
                }
                '\\' => self.push(Tok::RowSep),
                '%' => self.push(Tok::Percent),
                '|' => self.push(Tok::Sym('|')),
                // Spacing, math-mode delimiters and escaped currency carry no meaning here.
                _ => Ok(()),
            };
        }
        let name = self.read_command_name();
        let tok = match name.as_str() {
            "left" | "right" | "big" | "Big" | "bigl" | "bigr" | "Bigl" | "Bigr" | "bigg" | "Bigg"
            | "biggl" | "biggr" | "Biggl" | "Biggr" | "middle" => {
                if self.peek() == Some('.') {
                    self.pos += 1; // `\left.` is an invisible delimiter
                }
                return Ok(());
            }
            "quad" | "qquad" | "displaystyle" | "textstyle" | "scriptstyle" | "limits" | "nolimits"
            | "mathbf" | "boldsymbol" | "mathit" | "mathsf" | "mathcal" | "bm" | "bf"
            | "it" | "rm" | "phantom" | "hspace" | "vspace" | "enspace" | "thinspace" | "negthinspace"
            | "underline" | "mathopen" | "mathclose" | "mathrel" | "mathbin" | "mathord" => {
                if matches!(name.as_str(), "hspace" | "vspace" | "phantom") {
                    let _ = self.read_group();
                }
                return Ok(());
            }
            "text" | "textbf" | "textit" | "textrm" | "texttt" | "textnormal" | "mbox" | "hbox"
            | "textsf" | "emph" => return self.text_group(nesting),
            "mathbb" => {
                // `\mathbb{R}` is the real line; other blackboard letters stay letters.
                let inner = self.read_group().unwrap_or_default();
                match inner.trim() {
                    "R" => Tok::Cmd("reals".into()),
                    "" => return Ok(()),
                    other => return self.sub_tokenize(other, nesting),
                }
            }
            "mathrm" | "operatorname" => {
                let inner = self.read_group().unwrap_or_default();
                let inner = inner.trim();
                if is_function_name(inner) {
                    Tok::Cmd(inner.to_string())
                } else if inner.chars().count() == 1 {
                    Tok::Word { text: inner.to_string(), spaced: false }
                } else if inner.chars().all(|c| c.is_alphabetic() || c == ' ') {
                    Tok::Text(inner.to_string())
                } else {
                    return self.sub_tokenize(inner, nesting);
                }
            }
            "begin" | "end" => {
                let env = self.read_group().unwrap_or_default();
                if env.starts_with("array") {
                    let _ = self.read_group(); // column spec
                }
                let env = env.trim_end_matches('*').to_string();
                if name == "begin" {
                    Tok::Begin(env)
                } else {
                    Tok::End(env)
                }
            }
            "dfrac" | "tfrac" | "cfrac" | "frac" => Tok::Cmd("frac".into()),
            "dbinom" | "tbinom" | "binom" | "choose" => Tok::Cmd("binom".into()),
            "cdot" | "times" | "ast" | "cross" => Tok::Sym('*'),
            "div" => Tok::Sym('/'),
            "le" | "leq" | "leqslant" | "leqq" => Tok::Le,
            "ge" | "geq" | "geqslant" | "geqq" => Tok::Ge,
            "ne" | "neq" => Tok::Ne,
            "lt" => Tok::Sym('<'),
            "gt" => Tok::Sym('>'),
            "approx" | "simeq" => Tok::Sym('≈'),
            "equiv" => Tok::Sym('='),
            "colon" => Tok::Sym(':'),
            "lvert" | "rvert" | "vert" | "mid" | "lVert" | "rVert" | "Vert" => Tok::Sym('|'),
            "langle" => Tok::Sym('('),
            "rangle" => Tok::Sym(')'),
            "lbrace" => Tok::SetOpen,
            "rbrace" => Tok::SetClose,
            "ldots" | "dots" | "cdots" | "dotsc" => Tok::Cmd("dots".into()),
            "circ" | "degree" | "degrees" => Tok::Degree,
            "varnothing" | "emptyset" | "O" => Tok::Cmd("emptyset".into()),
            "infin" | "infty" | "infinity" => Tok::Cmd("infty".into()),
            "land" | "wedge" => Tok::Word { text: "and".into(), spaced: true },
            "lor" | "vee" => Tok::Word { text: "or".into(), spaced: true },
            "overline" | "bar" | "dot" | "vec" | "hat" | "widehat" | "tilde" => return Ok(()),
            _ => Tok::Cmd(name),
        };
        self.push(tok)
    }

    fn text_group(&mut self, nesting: usize) -> Result<(), String> {
        let Some(inner) = self.read_group() else { return Ok(()) };
        let trimmed = inner.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let mathy = trimmed.chars().next().is_some_and(|c| c.is_ascii_digit() || "-+(.[".contains(c))
            || trimmed.contains('\\')
            || trimmed.contains('$');
        let letter = trimmed.trim_matches(|c| c == '(' || c == ')');
        let is_choice = trimmed.len() <= 3 && letter.len() == 1 && letter.chars().all(|c| c.is_ascii_alphabetic());
        if mathy && !is_choice {
            return self.sub_tokenize(trimmed, nesting);
        }
        self.push(Tok::Text(trimmed.to_string()))
    }

    fn sub_tokenize(&mut self, inner: &str, nesting: usize) -> Result<(), String> {
        if nesting >= MAX_TEXT_NESTING {
            return Err("\\text nested too deep".into());
        }
        let mut sub = Lexer { chars: inner.chars().collect(), pos: 0, out: Vec::new(), bracket_depth: self.bracket_depth };
        sub.run(nesting + 1)?;
        for tok in sub.out {
            self.push(tok)?;
        }
        Ok(())
    }
}

/// Names that are functions when written as words (`sqrt(2)`) or in `\operatorname{…}`.
pub fn is_function_name(name: &str) -> bool {
    matches!(
        name,
        "sqrt" | "sin" | "cos" | "tan" | "sec" | "csc" | "cot" | "arcsin" | "arccos" | "arctan"
            | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "ln" | "log" | "exp" | "abs"
            | "floor" | "ceil" | "lg" | "cbrt"
    )
}

/// The shortest block that the tail of a fraction repeats at least twice (`142857142857`
/// → `142857`; `3333` → `3`), or `None`.
fn detect_period(frac: &str) -> Option<String> {
    let bytes = frac.as_bytes();
    for period in 1..=6usize.min(bytes.len() / 2) {
        let n = bytes.len();
        let tail = &bytes[n - period..];
        let prev = &bytes[n - 2 * period..n - period];
        if tail == prev {
            // `0.1666...`: the block repeats from the end, which `parse_decimal` expects.
            return Some(String::from_utf8_lossy(tail).into_owned());
        }
    }
    None
}

/// What the character lexer cannot see: `1.2 x 10^5` (the letter x as the times sign, only
/// between a number and a power of ten), scale words (`2.5 million`), and the C or F of `25°C`.
fn fold_scientific(mut toks: Vec<Tok>) -> Vec<Tok> {
    for i in 1..toks.len() {
        // `25°C`: the C or F after a degree sign names the scale (a unit), not a variable.
        if toks[i - 1] == Tok::Degree && matches!(&toks[i], Tok::Word { text, .. } if text == "C" || text == "F") {
            if let Tok::Word { text, .. } = &toks[i] {
                toks[i] = Tok::Text(text.clone());
            }
        }
        let after_number = matches!(toks[i - 1], Tok::Num { .. });
        let times_x = matches!(&toks[i], Tok::Word { text, .. } if text == "x" || text == "X")
            && matches!(toks.get(i + 1), Some(Tok::Num { digits, exp10: 0, .. }) if digits == "10")
            && toks.get(i + 2) == Some(&Tok::Sym('^'));
        if after_number && times_x {
            toks[i] = Tok::Sym('*');
        }
    }
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    for tok in toks {
        let power = match &tok {
            Tok::Word { text, spaced: true } => match text.as_str() {
                "thousand" => 3,
                "million" => 6,
                "billion" => 9,
                "trillion" => 12,
                _ => 0,
            },
            _ => 0,
        };
        if let (true, Some(Tok::Num { exp10, .. })) = (power > 0, out.last_mut()) {
            *exp10 += power;
            continue;
        }
        out.push(tok);
    }
    out
}

/// `^\circ` and `^{\circ}` become one degree token.
fn fold_degrees(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i] == Tok::Sym('^') {
            if toks.get(i + 1) == Some(&Tok::Degree) {
                out.push(Tok::Degree);
                i += 2;
                continue;
            }
            if toks.get(i + 1) == Some(&Tok::Sym('{'))
                && toks.get(i + 2) == Some(&Tok::Degree)
                && toks.get(i + 3) == Some(&Tok::Sym('}'))
            {
                out.push(Tok::Degree);
                i += 4;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(d: &str) -> Tok {
        Tok::Num { digits: d.into(), repeating: None, exp10: 0 }
    }

    #[test]
    fn thousands_and_spacing() {
        assert_eq!(tokenize("1,000").unwrap(), vec![num("1000")]);
        assert_eq!(tokenize("1\\,000").unwrap(), vec![num("1000")]);
        assert_eq!(tokenize("1{,}234{,}567").unwrap(), vec![num("1234567")]);
        assert_eq!(tokenize("(1,000)").unwrap().len(), 5);
    }

    #[test]
    fn repeating_and_scientific() {
        let t = tokenize("0.\\overline{3}").unwrap();
        assert_eq!(t, vec![Tok::Num { digits: "0.".into(), repeating: Some("3".into()), exp10: 0 }]);
        let t = tokenize("1.5e-3").unwrap();
        assert_eq!(t, vec![Tok::Num { digits: "1.5".into(), repeating: None, exp10: -3 }]);
    }

    #[test]
    fn degrees() {
        assert_eq!(tokenize("30^\\circ").unwrap(), vec![num("30"), Tok::Degree]);
        assert_eq!(tokenize("30^{\\circ}").unwrap(), vec![num("30"), Tok::Degree]);
    }
}
