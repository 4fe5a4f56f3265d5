//! Recursive-descent parser from tokens to an [`Expr`].
//!
//! Precedence, loosest first: `+ -`, `* / \cdot` and implicit multiplication (`2x`,
//! `2\pi`, `(x+1)(x-1)`), unary sign, `^` (right-associative, so `-2^2 = -4`), postfix
//! `! % °`, atoms. A recursion depth cap keeps `\frac` nested 5000 deep from blowing the stack.

use num_bigint::BigInt;
use num_rational::BigRational;

use crate::expr::{Expr, Func};
use crate::lex::Tok;
use crate::number::{parse_decimal, parse_in_base};

/// Deepest nesting the parser follows.
pub const MAX_DEPTH: usize = 60;

pub fn parse_expr(toks: &[Tok]) -> Result<Expr, String> {
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let toks = split_tex_arguments(toks);
    let mut p = Parser { toks: &toks, pos: 0, depth: 0, abs_depth: 0 };
    let e = p.expr()?;
    match p.toks.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} in expression", describe(t))),
    }
}

/// TeX reads an unbraced argument as one character: `\frac12` is ½ and `\frac ab` is a/b.
/// The tokenizer reads `12` and `ab` whole, so split them again after `\frac` and `\binom`.
fn split_tex_arguments(toks: &[Tok]) -> Vec<Tok> {
    // A stack of commands still waiting for arguments: (arguments left, brace depth of the command).
    let mut waiting: Vec<(usize, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    // One argument of the innermost waiting command is complete; a command whose last
    // argument completes is itself one whole argument of the command around it.
    fn argument_done(waiting: &mut Vec<(usize, usize)>, depth: usize) {
        while let Some(top) = waiting.last_mut() {
            if top.1 != depth {
                return;
            }
            top.0 -= 1;
            if top.0 > 0 {
                return;
            }
            waiting.pop();
        }
    }
    for tok in toks {
        let at_argument = waiting.last().is_some_and(|w| w.1 == depth);
        match tok {
            Tok::Cmd(c) if c == "frac" || c == "binom" => {
                out.push(tok.clone());
                waiting.push((2, depth));
                continue;
            }
            Tok::Sym('{') => depth += 1,
            Tok::Sym('}') => {
                depth = depth.saturating_sub(1);
                out.push(tok.clone());
                argument_done(&mut waiting, depth);
                continue;
            }
            Tok::Num { digits, repeating: None, exp10: 0 } if at_argument && !digits.contains('.') => {
                let mut rest = digits.as_str();
                while waiting.last().is_some_and(|w| w.1 == depth) && !rest.is_empty() {
                    let (first, tail) = rest.split_at(1);
                    out.push(Tok::Num { digits: first.into(), repeating: None, exp10: 0 });
                    rest = tail;
                    argument_done(&mut waiting, depth);
                }
                if !rest.is_empty() {
                    out.push(Tok::Num { digits: rest.into(), repeating: None, exp10: 0 });
                }
                continue;
            }
            Tok::Word { text, spaced } if at_argument && !crate::lex::is_function_name(text) && text != "pi" => {
                let mut chars = text.chars().peekable();
                while waiting.last().is_some_and(|w| w.1 == depth) && chars.peek().is_some() {
                    let c = chars.next().unwrap_or(' ');
                    out.push(Tok::Word { text: c.to_string(), spaced: *spaced });
                    argument_done(&mut waiting, depth);
                }
                let rest: String = chars.collect();
                if !rest.is_empty() {
                    out.push(Tok::Word { text: rest, spaced: false });
                }
                continue;
            }
            _ if at_argument => {
                out.push(tok.clone());
                argument_done(&mut waiting, depth);
                continue;
            }
            _ => {}
        }
        out.push(tok.clone());
    }
    out
}

pub fn describe(t: &Tok) -> String {
    match t {
        Tok::Num { digits, .. } => format!("number {digits}"),
        Tok::Word { text, .. } => format!("word '{text}'"),
        Tok::Cmd(c) => format!("\\{c}"),
        Tok::Text(s) => format!("text '{s}'"),
        Tok::Sym(c) => format!("'{c}'"),
        other => format!("{other:?}"),
    }
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
    /// Inside `|…|` a bar closes rather than opens.
    abs_depth: usize,
}

fn is_int_literal(e: &Expr) -> bool {
    matches!(e, Expr::Num { value, decimal_places: None } if value.is_integer())
}

fn greek(name: &str) -> bool {
    matches!(
        name,
        "alpha" | "beta" | "gamma" | "delta" | "epsilon" | "varepsilon" | "zeta" | "eta" | "theta"
            | "vartheta" | "iota" | "kappa" | "lambda" | "mu" | "nu" | "xi" | "rho" | "sigma"
            | "tau" | "upsilon" | "phi" | "varphi" | "chi" | "psi" | "omega" | "Gamma" | "Delta"
            | "Theta" | "Lambda" | "Xi" | "Sigma" | "Phi" | "Psi" | "Omega" | "ell"
    )
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, k: usize) -> Option<&'a Tok> {
        self.toks.get(self.pos + k)
    }

    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), String> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(format!(
                "expected {} but found {}",
                describe(tok),
                self.peek().map(describe).unwrap_or_else(|| "the end".into())
            ))
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(format!("expression nested deeper than {MAX_DEPTH}"))
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let mut lhs = self.term()?;
        loop {
            match self.peek() {
                Some(Tok::Sym('+')) => {
                    self.pos += 1;
                    lhs = Expr::Add(Box::new(lhs), Box::new(self.term()?));
                }
                Some(Tok::Sym('-')) => {
                    self.pos += 1;
                    lhs = Expr::Sub(Box::new(lhs), Box::new(self.term()?));
                }
                _ => break,
            }
        }
        // TeX's `{5 \over 8}`: everything before `\over` in the group over everything after.
        if self.eat(&Tok::Cmd("over".into())) {
            let den = self.expr()?;
            lhs = Expr::Div(Box::new(lhs), Box::new(den));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn starts_factor(&self, t: &Tok) -> bool {
        match t {
            Tok::Num { .. } | Tok::Word { .. } => true,
            Tok::Sym('(') | Tok::Sym('{') => true,
            Tok::Sym('|') => self.abs_depth == 0,
            Tok::Cmd(c) => !matches!(
                c.as_str(),
                "cup" | "cap" | "pm" | "mp" | "in" | "dots" | "rfloor" | "rceil" | "setminus" | "to" | "quad" | "over"
            ),
            _ => false,
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut lhs = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::Sym('*')) => {
                    self.pos += 1;
                    lhs = Expr::Mul(Box::new(lhs), Box::new(self.unary()?));
                }
                Some(Tok::Sym('/')) => {
                    self.pos += 1;
                    lhs = Expr::Div(Box::new(lhs), Box::new(self.unary()?));
                }
                Some(t) if self.starts_factor(t) => {
                    if let Some(mixed) = self.mixed_number(&lhs)? {
                        lhs = mixed;
                        continue;
                    }
                    if matches!(t, Tok::Num { .. }) && matches!(self.toks.get(self.pos.wrapping_sub(1)), Some(Tok::Num { .. })) {
                        return Err("two numbers side by side".into());
                    }
                    lhs = Expr::Mul(Box::new(lhs), Box::new(self.power()?));
                }
                _ => break,
            }
        }
        Ok(lhs)
    }

    /// `2\frac{1}{2}` and `2 1/2` are mixed numbers (2½), not products, when all three
    /// parts are integer literals.
    fn mixed_number(&mut self, lhs: &Expr) -> Result<Option<Expr>, String> {
        let (negative, whole) = match lhs {
            Expr::Neg(inner) if is_int_literal(inner) => (true, inner.as_ref()),
            e if is_int_literal(e) => (false, e),
            _ => return Ok(None),
        };
        let int_tok = |t: Option<&Tok>| matches!(t, Some(Tok::Num { digits, repeating: None, exp10: 0 }) if !digits.contains('.'));
        let save = self.pos;
        let frac = match self.peek() {
            Some(Tok::Cmd(c)) if c == "frac" => {
                self.pos += 1;
                let num = self.arg()?;
                let den = self.arg()?;
                if !(is_int_literal(&num) && is_int_literal(&den)) {
                    self.pos = save;
                    return Ok(None);
                }
                Expr::Div(Box::new(num), Box::new(den))
            }
            Some(Tok::Num { .. })
                if int_tok(self.peek()) && self.peek_at(1) == Some(&Tok::Sym('/')) && int_tok(self.peek_at(2)) =>
            {
                let num = self.primary()?;
                self.pos += 1;
                let den = self.primary()?;
                Expr::Div(Box::new(num), Box::new(den))
            }
            _ => return Ok(None),
        };
        let sum = Expr::Add(Box::new(whole.clone()), Box::new(frac));
        Ok(Some(if negative { Expr::Neg(Box::new(sum)) } else { sum }))
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let e = match self.peek() {
            Some(Tok::Sym('-')) => {
                self.pos += 1;
                Expr::Neg(Box::new(self.unary()?))
            }
            Some(Tok::Sym('+')) => {
                self.pos += 1;
                self.unary()?
            }
            _ => self.power()?,
        };
        self.depth -= 1;
        Ok(e)
    }

    fn power(&mut self) -> Result<Expr, String> {
        let base = self.postfix()?;
        if self.eat(&Tok::Sym('^')) {
            // A braced group, or a signed atom with its own powers: the same rule as a unary term.
            let exponent = self.unary()?;
            let pow = Expr::Pow(Box::new(base), Box::new(exponent));
            return self.postfix_ops(pow);
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let atom = self.primary()?;
        self.postfix_ops(atom)
    }

    fn postfix_ops(&mut self, mut e: Expr) -> Result<Expr, String> {
        loop {
            match self.peek() {
                Some(Tok::Sym('!')) => e = Expr::Factorial(Box::new(e)),
                Some(Tok::Percent) => e = Expr::Percent(Box::new(e)),
                Some(Tok::Degree) => e = Expr::Degrees(Box::new(e)),
                Some(Tok::Sym('\'')) => return Err("primes (derivatives) are not supported".into()),
                _ => return Ok(e),
            }
            self.pos += 1;
        }
    }

    /// A command argument: `{…}`, or a single token (`\frac12`, `\sqrt2`, `\frac{a}b`).
    fn arg(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Sym('{')) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(&Tok::Sym('}'))?;
                Ok(e)
            }
            _ => self.primary(),
        }
    }

    fn group_or_parens(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Sym('(')) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(&Tok::Sym(')'))?;
                Ok(e)
            }
            _ => self.arg(),
        }
    }

    /// The argument of `\sin`, `\ln`…: parenthesised or braced; otherwise the implicit
    /// product that follows, up to the next function (`\sin 2x \cos x` is sin(2x)·cos(x)).
    fn func_arg(&mut self) -> Result<Expr, String> {
        if let Some(Tok::Sym('(')) | Some(Tok::Sym('{')) = self.peek() {
            let e = self.group_or_parens()?;
            return self.postfix_ops(e);
        }
        let mut arg = self.power()?;
        while let Some(t) = self.peek() {
            let is_function = match t {
                Tok::Cmd(c) => Func::from_name(c).is_some(),
                Tok::Word { text, .. } => Func::from_name(text).is_some(),
                _ => false,
            };
            if is_function || !self.starts_factor(t) || matches!(t, Tok::Sym('(') | Tok::Sym('|')) {
                break;
            }
            arg = Expr::Mul(Box::new(arg), Box::new(self.power()?));
        }
        Ok(arg)
    }

    fn function(&mut self, f: Func) -> Result<Expr, String> {
        // `\sin^2 x` is (sin x)^2; `\sin^{-1} x` is arcsin x.
        let mut power = None;
        if self.eat(&Tok::Sym('^')) {
            power = Some(self.arg()?);
        }
        if f == Func::Log10 && self.eat(&Tok::Sym('_')) {
            let base = self.arg()?;
            let x = self.func_arg()?;
            let log = Expr::LogBase(Box::new(base), Box::new(x));
            return Ok(match power {
                Some(p) => Expr::Pow(Box::new(log), Box::new(p)),
                None => log,
            });
        }
        let minus_one = Expr::Neg(Box::new(Expr::num(BigRational::from_integer(BigInt::from(1)))));
        if power.as_ref() == Some(&minus_one) {
            let inverse = match f {
                Func::Sin => Some(Func::Asin),
                Func::Cos => Some(Func::Acos),
                Func::Tan => Some(Func::Atan),
                _ => None,
            };
            if let Some(inv) = inverse {
                return Ok(Expr::Call(inv, Box::new(self.func_arg()?)));
            }
        }
        let call = Expr::Call(f, Box::new(self.func_arg()?));
        Ok(match power {
            Some(p) => Expr::Pow(Box::new(call), Box::new(p)),
            None => call,
        })
    }

    fn sqrt(&mut self) -> Result<Expr, String> {
        if self.eat(&Tok::Sym('[')) {
            let index = self.expr()?;
            self.expect(&Tok::Sym(']'))?;
            let x = self.arg()?;
            return Ok(Expr::Root(Box::new(index), Box::new(x)));
        }
        Ok(Expr::Call(Func::Sqrt, Box::new(self.group_or_parens()?)))
    }

    fn subscript_name(&mut self, base: &str) -> Result<String, String> {
        let sub = match self.next() {
            Some(Tok::Num { digits, .. }) => digits.clone(),
            Some(Tok::Word { text, .. }) => text.clone(),
            Some(Tok::Sym('{')) => {
                let mut s = String::new();
                loop {
                    match self.next() {
                        Some(Tok::Sym('}')) => break,
                        Some(Tok::Num { digits, .. }) => s.push_str(digits),
                        Some(Tok::Word { text, .. }) => s.push_str(text),
                        Some(Tok::Sym(c)) if *c != '{' => s.push(*c),
                        _ => return Err("unsupported subscript".into()),
                    }
                }
                s
            }
            _ => return Err("unsupported subscript".into()),
        };
        Ok(format!("{base}_{sub}"))
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let e = self.primary_inner();
        self.depth -= 1;
        e
    }

    fn primary_inner(&mut self) -> Result<Expr, String> {
        let Some(tok) = self.next() else { return Err("expression ends too early".into()) };
        match tok {
            Tok::Num { digits, repeating, exp10 } => self.number(digits, repeating.as_deref(), *exp10),
            Tok::Word { text, .. } => self.word(text),
            Tok::Cmd(name) => self.command(name),
            Tok::Sym('(') => {
                let e = self.expr()?;
                self.expect(&Tok::Sym(')'))?;
                Ok(e)
            }
            Tok::Sym('[') => {
                let e = self.expr()?;
                self.expect(&Tok::Sym(']'))?;
                Ok(e)
            }
            Tok::Sym('{') => {
                let e = self.expr()?;
                self.expect(&Tok::Sym('}'))?;
                Ok(e)
            }
            Tok::Sym('|') if self.abs_depth < MAX_DEPTH => {
                self.abs_depth += 1;
                let e = self.expr();
                self.abs_depth -= 1;
                let e = e?;
                self.expect(&Tok::Sym('|'))?;
                Ok(Expr::Call(Func::Abs, Box::new(e)))
            }
            other => Err(format!("unexpected {}", describe(other))),
        }
    }

    fn number(&mut self, digits: &str, repeating: Option<&str>, exp10: i64) -> Result<Expr, String> {
        let value = parse_decimal(digits, repeating).ok_or_else(|| format!("bad number {digits}"))?;
        // `1011_2`: digits in another base.
        if self.peek() == Some(&Tok::Sym('_')) && !digits.contains('.') {
            let save = self.pos;
            self.pos += 1;
            let base = match self.next() {
                Some(Tok::Num { digits: b, .. }) => b.parse::<u32>().ok(),
                Some(Tok::Sym('{')) => match (self.next(), self.next()) {
                    (Some(Tok::Num { digits: b, .. }), Some(Tok::Sym('}'))) => b.parse::<u32>().ok(),
                    _ => None,
                },
                _ => None,
            };
            if let Some(base) = base {
                if let Some(v) = parse_in_base(digits, base) {
                    return Ok(Expr::Based { digits: digits.to_string(), base, value: v });
                }
                return Err(format!("{digits} is not a number in base {base}"));
            }
            self.pos = save;
        }
        let places = digits.split_once('.').map(|(_, f)| f.len() as u32).filter(|_| repeating.is_none());
        let literal = Expr::Num { value, decimal_places: places };
        if exp10 == 0 {
            return Ok(literal);
        }
        // Scientific notation stays a product so that caps apply to the power.
        let ten = Expr::num(BigRational::from_integer(BigInt::from(10)));
        let e = Expr::num(BigRational::from_integer(BigInt::from(exp10)));
        Ok(Expr::Mul(Box::new(literal), Box::new(Expr::Pow(Box::new(ten), Box::new(e)))))
    }

    fn word(&mut self, text: &str) -> Result<Expr, String> {
        match text {
            "pi" => return Ok(Expr::Pi),
            "e" => return Ok(Expr::E),
            "inf" | "infinity" | "oo" | "Infinity" => return Ok(Expr::Infinity),
            _ => {}
        }
        if let Some(f) = Func::from_name(text) {
            return self.function(f);
        }
        if text.chars().count() == 1 {
            if self.peek() == Some(&Tok::Sym('_')) {
                self.pos += 1;
                return Ok(Expr::Var(self.subscript_name(text)?));
            }
            return Ok(Expr::Var(text.to_string()));
        }
        // `xy` is x·y: implicit products of single-letter variables.
        let mut letters = text.chars();
        let first = letters.next().map(|c| Expr::Var(c.to_string())).ok_or("empty word")?;
        Ok(letters.fold(first, |acc, c| Expr::Mul(Box::new(acc), Box::new(Expr::Var(c.to_string())))))
    }

    fn command(&mut self, name: &str) -> Result<Expr, String> {
        if let Some(f) = Func::from_name(name) {
            if f == Func::Sqrt {
                return self.sqrt();
            }
            return self.function(f);
        }
        match name {
            "frac" => {
                let num = self.arg()?;
                let den = self.arg()?;
                Ok(Expr::Div(Box::new(num), Box::new(den)))
            }
            "binom" => {
                let n = self.arg()?;
                let k = self.arg()?;
                Ok(Expr::Binom(Box::new(n), Box::new(k)))
            }
            "pi" => Ok(Expr::Pi),
            "infty" => Ok(Expr::Infinity),
            "exponentialE" => Ok(Expr::E),
            "lfloor" | "lceil" => {
                let e = self.expr()?;
                let (close, f) = if name == "lfloor" { ("rfloor", Func::Floor) } else { ("rceil", Func::Ceil) };
                self.expect(&Tok::Cmd(close.into()))?;
                Ok(Expr::Call(f, Box::new(e)))
            }
            g if greek(g) => Ok(Expr::Var(g.to_string())),
            other => Err(format!("unsupported command \\{other}")),
        }
    }
}
