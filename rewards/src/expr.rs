//! The expression tree and its evaluation.

use std::collections::BTreeSet;

use num_rational::BigRational;
use num_traits::Signed;

use crate::number::{MathError, MathResult, Value};

/// Functions of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sqrt,
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    /// `\log` without a base: base 10 (as in school and competition problems).
    Log10,
    Exp,
    Abs,
    Floor,
    Ceil,
}

impl Func {
    pub fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "sqrt" => Func::Sqrt,
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" | "tg" => Func::Tan,
            "sec" => Func::Sec,
            "csc" | "cosec" => Func::Csc,
            "cot" | "ctg" => Func::Cot,
            "arcsin" | "asin" => Func::Asin,
            "arccos" | "acos" => Func::Acos,
            "arctan" | "atan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" => Func::Ln,
            "log" | "lg" => Func::Log10,
            "exp" => Func::Exp,
            "abs" => Func::Abs,
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            _ => return None,
        })
    }

    fn is_trig(self) -> bool {
        matches!(self, Func::Sin | Func::Cos | Func::Tan | Func::Sec | Func::Csc | Func::Cot)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal. `decimal_places` is `Some(d)` when it was written with a decimal point and
    /// `d` digits after it (the tolerance rule needs to know).
    Num { value: BigRational, decimal_places: Option<u32> },
    /// A number written in another base (`1011_2`): its digits are kept for comparison.
    Based { digits: String, base: u32, value: BigRational },
    Pi,
    E,
    Infinity,
    Var(String),
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
    /// `\sqrt[n]{x}`.
    Root(Box<Expr>, Box<Expr>),
    /// `\log_b x`.
    LogBase(Box<Expr>, Box<Expr>),
    Factorial(Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// `50\%`: 0.5 inside arithmetic; at the top level the comparison also tries 50.
    Percent(Box<Expr>),
    /// `30^\circ`: the number itself, except inside trigonometric functions (radians).
    Degrees(Box<Expr>),
}

/// Variable values for evaluation at a point.
pub type Env<'a> = &'a [(String, f64)];

/// Deepest tree evaluated (the parser's own cap is lower; this guards hand-built trees).
const MAX_EVAL_DEPTH: usize = 400;

impl Expr {
    pub fn num(value: BigRational) -> Expr {
        Expr::Num { value, decimal_places: None }
    }

    /// Exact value when there are no variables (`FreeVariable` error otherwise).
    pub fn eval(&self) -> MathResult {
        self.eval_in(&[], 0)
    }

    /// Value with the variables set by `env`.
    pub fn eval_at(&self, env: Env<'_>) -> MathResult {
        self.eval_in(env, 0)
    }

    fn eval_in(&self, env: Env<'_>, depth: usize) -> MathResult {
        if depth > MAX_EVAL_DEPTH {
            return Err(MathError::NotANumber("expression nested too deep"));
        }
        let ev = |e: &Expr| e.eval_in(env, depth + 1);
        match self {
            Expr::Num { value, .. } | Expr::Based { value, .. } => Ok(Value::Exact(value.clone())),
            Expr::Pi => Ok(Value::Approx(std::f64::consts::PI)),
            Expr::E => Ok(Value::Approx(std::f64::consts::E)),
            Expr::Infinity => Err(MathError::NotANumber("infinity in arithmetic")),
            Expr::Var(name) => env
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, x)| Value::Approx(*x))
                .ok_or_else(|| MathError::FreeVariable(name.clone())),
            Expr::Neg(a) => ev(a)?.neg(),
            Expr::Add(a, b) => ev(a)?.add(&ev(b)?),
            Expr::Sub(a, b) => ev(a)?.sub(&ev(b)?),
            Expr::Mul(a, b) => ev(a)?.mul(&ev(b)?),
            Expr::Div(a, b) => ev(a)?.div(&ev(b)?),
            Expr::Pow(a, b) => {
                if **a == Expr::E {
                    return Value::approx(ev(b)?.to_f64().exp());
                }
                ev(a)?.pow(&ev(b)?)
            }
            Expr::Call(f, a) => {
                let x = match (f.is_trig(), a.as_ref()) {
                    (true, Expr::Degrees(inner)) => Value::Approx(ev(inner)?.to_f64().to_radians()),
                    _ => ev(a)?,
                };
                apply(*f, &x)
            }
            Expr::Root(n, x) => {
                let n = ev(n)?.as_small_int().filter(|n| (1..=64).contains(n));
                let n = n.ok_or(MathError::Domain("root index must be an integer from 1 to 64"))?;
                ev(x)?.nth_root(n as u32)
            }
            Expr::LogBase(b, x) => {
                let (b, x) = (ev(b)?, ev(x)?);
                if let Some(exact) = exact_log(&b, &x) {
                    return Ok(exact);
                }
                let (b, x) = (b.to_f64(), x.to_f64());
                if b <= 0.0 || b == 1.0 || x <= 0.0 {
                    return Err(MathError::Domain("logarithm"));
                }
                Value::approx(x.ln() / b.ln())
            }
            Expr::Factorial(a) => ev(a)?.factorial(),
            Expr::Binom(n, k) => binomial(&ev(n)?, &ev(k)?),
            Expr::Percent(a) => ev(a)?.div(&Value::int(100)),
            Expr::Degrees(a) => ev(a),
        }
    }

    /// The free variables, sorted.
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_vars(&mut out, 0);
        out
    }

    fn collect_vars(&self, out: &mut BTreeSet<String>, depth: usize) {
        if depth > MAX_EVAL_DEPTH {
            return;
        }
        if let Expr::Var(v) = self {
            out.insert(v.clone());
        }
        for child in self.children().into_iter().flatten() {
            child.collect_vars(out, depth + 1);
        }
    }

    /// The direct subexpressions (none, one or two).
    fn children(&self) -> [Option<&Expr>; 2] {
        match self {
            Expr::Num { .. } | Expr::Based { .. } | Expr::Pi | Expr::E | Expr::Infinity | Expr::Var(_) => [None, None],
            Expr::Neg(a) | Expr::Call(_, a) | Expr::Factorial(a) | Expr::Percent(a) | Expr::Degrees(a) => [Some(a), None],
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::Root(a, b)
            | Expr::LogBase(a, b)
            | Expr::Binom(a, b) => [Some(a), Some(b)],
        }
    }

    /// `Some(+1)` for `∞`, `Some(-1)` for `-∞`.
    pub fn infinity_sign(&self) -> Option<i8> {
        match self {
            Expr::Infinity => Some(1),
            Expr::Neg(a) => a.infinity_sign().map(|s| -s),
            _ => None,
        }
    }

    /// Decimal places when this is a literal decimal, possibly negated (`-2.50` → 2).
    pub fn decimal_places(&self) -> Option<u32> {
        match self {
            Expr::Num { decimal_places, .. } => *decimal_places,
            Expr::Neg(a) => a.decimal_places(),
            _ => None,
        }
    }

    /// The place of the last written digit, as a power of ten to the right of the point: `2.50`
    /// → 2, `6.02 \times 10^{23}` → -21 (`1.5e-3` too). `None` for anything but a literal
    /// decimal, possibly negated or in scientific notation.
    pub fn precision(&self) -> Option<i64> {
        match self {
            Expr::Num { decimal_places, .. } => decimal_places.map(i64::from),
            Expr::Neg(a) => a.precision(),
            Expr::Mul(m, p) => match (m.as_ref(), p.as_ref()) {
                (Expr::Num { decimal_places: Some(d), .. }, Expr::Pow(ten, k)) => {
                    let ten = matches!(ten.as_ref(), Expr::Num { value, decimal_places: None } if *value == BigRational::from_integer(10.into()));
                    let k = match k.as_ref() {
                        Expr::Num { value, decimal_places: None } if value.is_integer() => value.numer().try_into().ok(),
                        Expr::Neg(inner) => match inner.as_ref() {
                            Expr::Num { value, decimal_places: None } if value.is_integer() => {
                                i64::try_from(value.numer()).ok().map(|k| -k)
                            }
                            _ => None,
                        },
                        _ => None,
                    };
                    k.filter(|_| ten).and_then(|k: i64| i64::from(*d).checked_sub(k))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether π appears anywhere (a measure in radians).
    pub fn has_pi(&self) -> bool {
        self.any(&|e| *e == Expr::Pi, 0)
    }

    fn any(&self, pred: &dyn Fn(&Expr) -> bool, depth: usize) -> bool {
        pred(self) || (depth <= MAX_EVAL_DEPTH && self.children().into_iter().flatten().any(|c| c.any(pred, depth + 1)))
    }
}

fn apply(f: Func, x: &Value) -> MathResult {
    let v = x.to_f64();
    let exact_zero = x.is_zero() && x.as_exact().is_some();
    match f {
        Func::Sqrt => x.sqrt(),
        Func::Abs => x.abs(),
        Func::Floor => x.floor(),
        Func::Ceil => x.ceil(),
        // Exact at 0 so that `\sin 0 = 0` compares exactly.
        Func::Sin | Func::Tan | Func::Asin | Func::Atan | Func::Sinh | Func::Tanh if exact_zero => Ok(Value::int(0)),
        Func::Cos | Func::Cosh | Func::Exp if exact_zero => Ok(Value::int(1)),
        Func::Sin => Value::approx(v.sin()),
        Func::Cos => Value::approx(v.cos()),
        Func::Tan => Value::approx(v.tan()),
        Func::Sec => Value::approx(1.0 / v.cos()),
        Func::Csc => nonzero(v.sin()).and_then(|s| Value::approx(1.0 / s)),
        Func::Cot => nonzero(v.tan()).and_then(|t| Value::approx(1.0 / t)),
        Func::Asin | Func::Acos if !(-1.0..=1.0).contains(&v) => Err(MathError::Domain("arcsin/arccos")),
        Func::Asin => Value::approx(v.asin()),
        Func::Acos => Value::approx(v.acos()),
        Func::Atan => Value::approx(v.atan()),
        Func::Sinh => Value::approx(v.sinh()),
        Func::Cosh => Value::approx(v.cosh()),
        Func::Tanh => Value::approx(v.tanh()),
        Func::Exp => Value::approx(v.exp()),
        Func::Ln | Func::Log10 if v <= 0.0 => Err(MathError::Domain("logarithm of a non-positive number")),
        Func::Ln => Value::approx(v.ln()),
        Func::Log10 => match exact_log(&Value::int(10), x) {
            Some(exact) => Ok(exact),
            None => Value::approx(v.log10()),
        },
    }
}

fn nonzero(x: f64) -> Result<f64, MathError> {
    if x.abs() < 1e-300 {
        Err(MathError::DivisionByZero)
    } else {
        Ok(x)
    }
}

/// `log_b x` exactly when `x` is an integer power of `b` (`\log_2 8 = 3`, `\log_{10} 0.01 = -2`).
fn exact_log(b: &Value, x: &Value) -> Option<Value> {
    let (b, x) = (b.as_exact()?, x.as_exact()?);
    let one = BigRational::from_integer(1.into());
    if !b.is_positive() || *b == one || !x.is_positive() {
        return None;
    }
    let (bf, xf) = (crate::number::rational_to_f64(b), crate::number::rational_to_f64(x));
    let guess = (xf.ln() / bf.ln()).round();
    if !guess.is_finite() || guess.abs() > 4096.0 {
        return None;
    }
    let candidate = Value::Exact(b.clone()).pow(&Value::int(guess as i64)).ok()?;
    (candidate == Value::Exact(x.clone())).then(|| Value::int(guess as i64))
}

fn binomial(n: &Value, k: &Value) -> MathResult {
    let k = k.as_small_int().ok_or(MathError::Domain("binomial with a non-integer bottom"))?;
    if k > 2000 {
        return Err(MathError::TooLarge);
    }
    let Some(n) = n.as_small_int() else {
        // A symbolic top (`\binom{n+1}{2}` at a sample point): n(n-1)…(n-k+1)/k!.
        let mut acc = Value::int(1);
        for i in 0..k.max(0) {
            acc = acc.mul(&n.sub(&Value::int(i))?)?.div(&Value::int(i + 1))?;
        }
        return Ok(if k < 0 { Value::int(0) } else { acc });
    };
    if k < 0 || n < 0 || k > n {
        return Ok(Value::int(0));
    }
    let k = k.min(n - k);
    let mut acc = Value::int(1);
    for i in 0..k {
        acc = acc.mul(&Value::int(n - i))?.div(&Value::int(i + 1))?;
    }
    Ok(acc)
}
