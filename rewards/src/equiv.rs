//! Whether a response answer says the same as the gold answer. Every rule is listed in the
//! crate README ("Equivalence rules"); the comments here name them.

use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};

use crate::answer::{Answer, RelOp};
use crate::complex;
use crate::expr::Expr;
use crate::number::{pow10, round_at, truncate_at, MathError, Value};
use crate::units::Unit;

/// Relative tolerance for values that are not both exact (`\sqrt{2}/2` against `1/\sqrt{2}`).
pub const FLOAT_TOLERANCE: f64 = 1e-9;
/// Relative tolerance at random points for expressions with variables.
pub const POINT_TOLERANCE: f64 = 1e-7;
/// Points tried for expressions with variables, and how many must be defined on both sides.
const POINTS: usize = 8;
const MIN_POINTS: usize = 3;
/// A decimal response against an exact, non-terminating gold (`1/3`, `\pi`) needs this many
/// significant digits.
pub const MIN_SIGNIFICANT_DIGITS: u32 = 6;
/// A decimal gold with fewer significant digits (`0.1`, `0.001`) is exact, not a rounding.
pub const MIN_ROUNDED_GOLD_DIGITS: u32 = 2;
/// A response closer to a decimal gold than `10^-(d + PERTURBED_PLACES)` (for a gold with `d`
/// places) but not equal to it is a perturbed value (`2.5000001`), not a rounding.
pub const PERTURBED_PLACES: i64 = 2;
/// Largest gold precision (places either side of the point) the rounding rules handle.
const MAX_PLACES: i64 = 4096;

/// `Ok(true/false)`, or `Err(reason)` when a side could not be evaluated (counts as "not
/// equivalent").
pub type Outcome = Result<bool, String>;

pub fn answers_equivalent(gold: &Answer, resp: &Answer) -> Outcome {
    use Answer::*;
    // A list of one is its element: `\{5\}` against `5` is not unwrapped (a set is not a
    // number), but a one-item list is just the item.
    match (gold, resp) {
        (Expr(g), Expr(r)) => exprs_equivalent(g, r),
        (Quantity { value: g, unit: gu }, Quantity { value: r, unit: ru }) => quantities_equivalent(g, gu, r, ru),
        // A unit on one side only: the numbers decide (`5 \text{ cm}` against `5`).
        (Quantity { value, .. }, other) => answers_equivalent(&Expr(value.clone()), other),
        (other, Quantity { value, .. }) => answers_equivalent(other, &Expr(value.clone())),
        (Choice(g), Choice(r)) => Ok(g == r),
        (Text(g), Text(r)) => Ok(g == r),
        (Choice(g), Text(r)) | (Text(r), Choice(g)) => Ok(r.len() == 1 && r.eq_ignore_ascii_case(&g.to_string())),
        (Tuple(g), Tuple(r)) => ordered(g, r),
        // `(1, 2)` against `1, 2`: the gold's order counts; `y = -1, x = 3` is put in the order
        // of its variables' names first.
        (Tuple(g), List(r)) => ordered(g, &by_variable(r)),
        (Set(g) | List(g), Set(r) | List(r)) | (List(g), Tuple(r)) => unordered(g, r),
        (Union(g), Union(r)) => unordered(g, r),
        (Interval { .. }, Interval { .. }) => intervals_equivalent(gold, resp),
        // An open interval is written like a pair: `(1, 2)`.
        (Tuple(g), Interval { .. }) | (Interval { .. }, Tuple(g)) if g.len() == 2 => {
            let pair = match as_open_interval(g) {
                Some(i) => i,
                None => return Ok(false),
            };
            let other = if matches!(gold, Tuple(_)) { resp } else { gold };
            intervals_equivalent(&pair, other)
        }
        // `[[1, 2], [3, 4]]`: a list of rows against a matrix.
        (Matrix(m), Tuple(rows)) | (Tuple(rows), Matrix(m)) if rows.iter().all(|r| row_cells(r).is_some()) => {
            if m.len() != rows.len() {
                return Ok(false);
            }
            for (mrow, row) in m.iter().zip(rows) {
                let mrow: Vec<Answer> = mrow.iter().map(|e| Expr(e.clone())).collect();
                if !ordered(&mrow, &row_cells(row).unwrap_or_default())? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        (Matrix(g), Matrix(r)) => {
            if g.len() != r.len() || g.iter().zip(r).any(|(a, b)| a.len() != b.len()) {
                return Ok(false);
            }
            all_pairs(g.iter().flatten().zip(r.iter().flatten()), exprs_equivalent)
        }
        // A row vector against `[1, 2]` (read as a closed interval).
        (Matrix(m), i @ Interval { .. }) | (i @ Interval { .. }, Matrix(m)) if row_cells(i).is_some() => {
            answers_equivalent(&Matrix(m.clone()), &Tuple(row_cells(i).unwrap_or_default()))
        }
        // A vector written as a one-column or one-row matrix against a tuple.
        (Matrix(m), Tuple(t)) | (Tuple(t), Matrix(m)) => match vector_of(m) {
            Some(v) if v.len() == t.len() => {
                let v: Vec<Answer> = v.into_iter().map(|e| Expr(e.clone())).collect();
                ordered(&v, t)
            }
            _ => Ok(false),
        },
        (Relation { .. }, Relation { .. }) => relations_equivalent(gold, resp),
        // `x = 2` against `2`, either way round; an unsolved equation (`3x + 2 = 17`) has no value.
        (Relation { lhs, op: RelOp::Eq, rhs }, Expr(e)) => exprs_equivalent(value_side(lhs, rhs), e),
        (Expr(e), Relation { lhs, op: RelOp::Eq, rhs }) => {
            if unsolved(lhs, rhs) || unsolved(rhs, lhs) {
                return Ok(false);
            }
            exprs_equivalent(e, value_side(lhs, rhs))
        }
        (Relation { .. }, Interval { .. }) | (Interval { .. }, Relation { .. }) => {
            let (a, b) = (as_interval(gold), as_interval(resp));
            match (a, b) {
                (Some(a), Some(b)) => intervals_equivalent(&a, &b),
                _ => Ok(false),
            }
        }
        // A single-element list against anything: compare the element.
        (List(g), other) if g.len() == 1 => answers_equivalent(&g[0], other),
        (other, List(r)) if r.len() == 1 => answers_equivalent(other, &r[0]),
        // A singleton set against its element (policy: `\{5\}` ≡ `5`).
        (Set(g), other) if g.len() == 1 => answers_equivalent(&g[0], other),
        (other, Set(r)) if r.len() == 1 => answers_equivalent(other, &r[0]),
        _ => Ok(false),
    }
}

/// The cells of a row written as a list: `(1, 2)`, or `[1, 2]` (read as a closed interval).
fn row_cells(a: &Answer) -> Option<Vec<Answer>> {
    match a {
        Answer::Tuple(cells) => Some(cells.clone()),
        Answer::Interval { lo, hi, lo_closed: true, hi_closed: true } => Some(vec![Answer::Expr(lo.clone()), Answer::Expr(hi.clone())]),
        _ => None,
    }
}

/// `3x + 2` against a constant: an equation still to solve, not a value. A name (`x`,
/// `f(2)`, `P(A)`) or a side without variables is solved.
fn unsolved(side: &Expr, other: &Expr) -> bool {
    if side.variables().is_empty() || !other.variables().is_empty() {
        return false;
    }
    match side {
        Expr::Add(..) | Expr::Sub(..) => true,
        Expr::Mul(a, _) => matches!(a.as_ref(), Expr::Num { .. }),
        _ => false,
    }
}

/// Assignments to single variables (`y = -1, x = 3`) sorted by variable name; anything else
/// as it is.
fn by_variable(items: &[Answer]) -> Vec<Answer> {
    let name = |a: &Answer| match a {
        Answer::Relation { lhs: Expr::Var(v), op: RelOp::Eq, .. } => Some(v.clone()),
        _ => None,
    };
    let mut out = items.to_vec();
    if out.iter().all(|a| name(a).is_some()) {
        out.sort_by_key(name);
    }
    out
}

/// Two amounts with known units: same dimensions, and the response converted to the gold's
/// unit equals the gold (`50 mm` ≡ `5 cm`; `5 m` ≢ `5 cm`).
fn quantities_equivalent(g: &Expr, gu: &Unit, r: &Expr, ru: &Unit) -> Outcome {
    if gu.dims != ru.dims {
        return Ok(false);
    }
    if gu.scale == ru.scale {
        return exprs_equivalent(g, r);
    }
    let factor = Expr::num(&ru.scale / &gu.scale);
    exprs_equivalent(g, &Expr::Mul(Box::new(r.clone()), Box::new(factor)))
}

/// In `x = 5` (or `5 = x`) the value is the side that is not a lone variable.
fn value_side<'a>(lhs: &'a Expr, rhs: &'a Expr) -> &'a Expr {
    match (lhs, rhs) {
        (_, Expr::Var(_)) if !matches!(lhs, Expr::Var(_)) => lhs,
        _ => rhs,
    }
}

fn all_pairs<'a, T: 'a>(pairs: impl Iterator<Item = (&'a T, &'a T)>, eq: impl Fn(&T, &T) -> Outcome) -> Outcome {
    for (a, b) in pairs {
        if !eq(a, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn ordered(g: &[Answer], r: &[Answer]) -> Outcome {
    if g.len() != r.len() {
        return Ok(false);
    }
    all_pairs(g.iter().zip(r), answers_equivalent)
}

/// Unordered: every gold element matches a distinct response element.
fn unordered(g: &[Answer], r: &[Answer]) -> Outcome {
    if g.len() != r.len() {
        return Ok(false);
    }
    let mut used = vec![false; r.len()];
    for a in g {
        let mut found = false;
        for (j, b) in r.iter().enumerate() {
            if !used[j] && answers_equivalent(a, b).unwrap_or(false) {
                used[j] = true;
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

fn vector_of(m: &[Vec<Expr>]) -> Option<Vec<&Expr>> {
    if m.len() == 1 {
        Some(m[0].iter().collect())
    } else if m.iter().all(|row| row.len() == 1) {
        Some(m.iter().map(|row| &row[0]).collect())
    } else {
        None
    }
}

fn as_open_interval(pair: &[Answer]) -> Option<Answer> {
    match pair {
        [Answer::Expr(lo), Answer::Expr(hi)] => {
            Some(Answer::Interval { lo: lo.clone(), hi: hi.clone(), lo_closed: false, hi_closed: false })
        }
        _ => None,
    }
}

/// `x > 2` as the interval `(2, ∞)`; an interval as itself.
fn as_interval(a: &Answer) -> Option<Answer> {
    match a {
        Answer::Interval { .. } => Some(a.clone()),
        Answer::Relation { lhs, op, rhs } => {
            let (op, bound) = match (lhs, rhs) {
                (Expr::Var(_), b) if b.variables().is_empty() => (*op, b),
                (b, Expr::Var(_)) if b.variables().is_empty() => (op.flipped(), b),
                _ => return None,
            };
            let inf = Expr::Infinity;
            let neg_inf = Expr::Neg(Box::new(Expr::Infinity));
            let b = bound.clone();
            Some(match op {
                RelOp::Gt => Answer::Interval { lo: b, hi: inf, lo_closed: false, hi_closed: false },
                RelOp::Ge => Answer::Interval { lo: b, hi: inf, lo_closed: true, hi_closed: false },
                RelOp::Lt => Answer::Interval { lo: neg_inf, hi: b, lo_closed: false, hi_closed: false },
                RelOp::Le => Answer::Interval { lo: neg_inf, hi: b, lo_closed: false, hi_closed: true },
                _ => return None,
            })
        }
        _ => None,
    }
}

fn intervals_equivalent(a: &Answer, b: &Answer) -> Outcome {
    match (a, b) {
        (
            Answer::Interval { lo: l1, hi: h1, lo_closed: lc1, hi_closed: hc1 },
            Answer::Interval { lo: l2, hi: h2, lo_closed: lc2, hi_closed: hc2 },
        ) => {
            // The openness at an infinite end does not matter (`[2, ∞]` is read as `[2, ∞)`).
            let lo_ok = lc1 == lc2 || l1.infinity_sign().is_some();
            let hi_ok = hc1 == hc2 || h1.infinity_sign().is_some();
            Ok(lo_ok && hi_ok && exprs_equivalent(l1, l2)? && exprs_equivalent(h1, h2)?)
        }
        _ => Ok(false),
    }
}

/// Equations: same solution set, tested as `lhs - rhs` being a nonzero multiple of the
/// other's (`2x + y = 1` ≡ `y = 1 - 2x`). Inequalities: as intervals when one side is a lone
/// variable, otherwise with the sides moved to one side and a positive multiple.
fn relations_equivalent(gold: &Answer, resp: &Answer) -> Outcome {
    let (Answer::Relation { lhs: gl, op: gop, rhs: gr }, Answer::Relation { lhs: rl, op: rop, rhs: rr }) = (gold, resp)
    else {
        return Ok(false);
    };
    if let (Some(a), Some(b)) = (as_interval(gold), as_interval(resp)) {
        return intervals_equivalent(&a, &b);
    }
    let (ga, gb) = (gl, gr);
    let (ra, rb, rop) = if *rop == gop.flipped() && *rop != *gop { (rr, rl, *gop) } else { (rl, rr, *rop) };
    if rop != *gop {
        return Ok(false);
    }
    // `x = 5` against `5 = x` and plain value equality first.
    if *gop == RelOp::Eq && exprs_equivalent(ga, ra).unwrap_or(false) && exprs_equivalent(gb, rb).unwrap_or(false) {
        return Ok(true);
    }
    let g = Expr::Sub(Box::new(ga.clone()), Box::new(gb.clone()));
    let r = Expr::Sub(Box::new(ra.clone()), Box::new(rb.clone()));
    let positive_only = *gop != RelOp::Eq && *gop != RelOp::Ne;
    proportional(&g, &r, positive_only)
}

/// Whether `r = c·g` for one constant `c` ≠ 0 (positive if `positive_only`) at random points.
fn proportional(g: &Expr, r: &Expr, positive_only: bool) -> Outcome {
    let vars = union_vars(g, r);
    let mut ratio: Option<f64> = None;
    let mut agreed = 0;
    for point in sample_points(&vars) {
        let (a, b) = match (g.eval_at(&point), r.eval_at(&point)) {
            (Ok(a), Ok(b)) => (a.to_f64(), b.to_f64()),
            _ => continue,
        };
        if a.abs() < 1e-12 || b.abs() < 1e-12 {
            if (a.abs() < 1e-12) != (b.abs() < 1e-12) {
                return Ok(false);
            }
            continue;
        }
        let q = b / a;
        match ratio {
            None => ratio = Some(q),
            Some(c) if close(c, q, POINT_TOLERANCE) => {}
            Some(_) => return Ok(false),
        }
        agreed += 1;
    }
    if agreed < MIN_POINTS {
        return Err("could not evaluate the relations at enough points".into());
    }
    Ok(ratio.is_some_and(|c| !positive_only || c > 0.0))
}

fn union_vars(a: &Expr, b: &Expr) -> Vec<String> {
    let mut vars = a.variables();
    vars.extend(b.variables());
    vars.into_iter().collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Deterministic pseudo-random points (no global RNG): values in (0.1, 3.1), away from the
/// integers where removable singularities such as `(x^2-1)/(x-1)` live.
fn sample_points(vars: &[String]) -> Vec<Vec<(String, f64)>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..POINTS)
        .map(|_| vars.iter().map(|v| (v.clone(), 0.1 + 3.0 * next() + 0.0123)).collect())
        .collect()
}

fn strip_marks(e: &Expr) -> (&Expr, bool) {
    match e {
        Expr::Percent(inner) => (inner, true),
        Expr::Degrees(inner) => (inner, false),
        other => (other, false),
    }
}

pub fn exprs_equivalent(gold: &Expr, resp: &Expr) -> Outcome {
    if gold == resp {
        return Ok(true);
    }
    match (gold.infinity_sign(), resp.infinity_sign()) {
        (None, None) => {}
        (a, b) => return Ok(a == b),
    }
    // `1011_2` against `1011`: the digits are the answer.
    if let Some(same) = based_digits_equal(gold, resp) {
        return Ok(same);
    }
    // `30^\circ` against `\frac{\pi}{6}` (policy: an explicit degree mark meets radians).
    match (gold, resp) {
        (Expr::Degrees(x), other) | (other, Expr::Degrees(x)) if other.has_pi() && !matches!(other, Expr::Degrees(_)) => {
            let per_degree = Expr::Div(Box::new(Expr::Pi), Box::new(Expr::num(BigRational::from_integer(180.into()))));
            return values_equivalent(&Expr::Mul(Box::new(x.as_ref().clone()), Box::new(per_degree)), other);
        }
        _ => {}
    }
    // Percent and degree marks at the top: `50\%` ≡ `50`, and also ≡ `0.5`.
    let (g, g_pct) = strip_marks(gold);
    let (r, r_pct) = strip_marks(resp);
    let plain = values_equivalent(g, r);
    if plain == Ok(true) || g_pct == r_pct {
        return plain;
    }
    let hundred = Expr::num(BigRational::from_integer(100.into()));
    // The gold keeps its own form, so that its precision still applies (`33.3\%` against `1/3`).
    let scaled = if g_pct {
        values_equivalent(g, &Expr::Mul(Box::new(r.clone()), Box::new(hundred)))
    } else {
        values_equivalent(g, &Expr::Div(Box::new(r.clone()), Box::new(hundred)))
    };
    match scaled {
        Ok(true) => Ok(true),
        _ => plain,
    }
}

fn based_digits_equal(g: &Expr, r: &Expr) -> Option<bool> {
    match (g, r) {
        (Expr::Based { digits: a, base: b1, .. }, Expr::Based { digits: b, base: b2, .. }) => Some(a == b && b1 == b2),
        (Expr::Based { digits, .. }, Expr::Num { value, decimal_places: None })
        | (Expr::Num { value, decimal_places: None }, Expr::Based { digits, .. }) => {
            let plain = value.is_integer().then(|| value.numer().to_string());
            Some(plain.as_deref() == Some(digits.trim_start_matches('0')) || plain.as_deref() == Some(digits.as_str()))
        }
        _ => None,
    }
}

fn values_equivalent(g: &Expr, r: &Expr) -> Outcome {
    let vars = union_vars(g, r);
    if vars.is_empty() {
        let gv = g.eval().map_err(|e| format!("gold: {e}"))?;
        let rv = r.eval().map_err(|e| format!("response: {e}"))?;
        return Ok(numbers_equivalent(g, &gv, r, &rv));
    }
    // Complex numbers: `i` is the imaginary unit when it is the only variable.
    if vars == ["i"] {
        if let (Some(a), Some(b)) = (complex::eval(g), complex::eval(r)) {
            return Ok(a.close(b, FLOAT_TOLERANCE));
        }
    }
    // Variables: compare at random points.
    let mut agreed = 0;
    for point in sample_points(&vars) {
        match (g.eval_at(&point), r.eval_at(&point)) {
            (Ok(a), Ok(b)) => {
                if !close(a.to_f64(), b.to_f64(), POINT_TOLERANCE) {
                    return Ok(false);
                }
                agreed += 1;
            }
            (Err(MathError::TooLarge), _) | (_, Err(MathError::TooLarge)) => {
                return Err("number too large (past the magnitude cap)".into())
            }
            _ => {}
        }
    }
    if agreed < MIN_POINTS {
        return Err(format!("could not evaluate at enough points (defined at {agreed} of {POINTS})"));
    }
    Ok(true)
}

/// Number rules, in order:
/// 1. both exact rationals: equal iff equal (`0.5` ≡ `1/2`, `2.50` ≡ `2.5`);
/// 2. the gold is a decimal (or scientific) literal whose last digit is at place `d`: an
///    inexact response within [`FLOAT_TOLERANCE`] is equal; a response written less precisely
///    is not; a gold with fewer than [`MIN_ROUNDED_GOLD_DIGITS`] significant digits is exact;
///    otherwise the response must round (half away from zero) to the gold at place `d` without
///    being a perturbed gold (closer than `10^-(d + PERTURBED_PLACES)`);
/// 3. the response is a decimal with `d` places and at least [`MIN_SIGNIFICANT_DIGITS`]
///    significant digits, the gold exact: within `10^-d` (rounded or truncated);
/// 4. otherwise, when either is inexact: relative tolerance [`FLOAT_TOLERANCE`].
pub fn numbers_equivalent(g_expr: &Expr, g: &Value, r_expr: &Expr, r: &Value) -> bool {
    if let (Value::Exact(a), Value::Exact(b)) = (g, r) {
        if a == b {
            return true;
        }
    }
    let places = |e: &Expr| e.precision().filter(|d| d.abs() <= MAX_PLACES);
    if let Some(d) = places(g_expr) {
        if matches!(r, Value::Approx(_)) && close(g.to_f64(), r.to_f64(), FLOAT_TOLERANCE) {
            return true;
        }
        if places(r_expr).is_some_and(|rd| rd < d) {
            return false;
        }
        if let Value::Exact(gold) = g {
            return rounds_to(r, gold, d) && !perturbed(r, gold, d) && significant_digits(gold, d) >= MIN_ROUNDED_GOLD_DIGITS;
        }
    }
    if let (Some(d), Value::Exact(resp)) = (places(r_expr), r) {
        if g_expr.precision().is_none() && significant_digits(resp, d) >= MIN_SIGNIFICANT_DIGITS {
            return rounded_or_truncated(g, resp, d);
        }
    }
    match (g, r) {
        (Value::Exact(_), Value::Exact(_)) => false,
        _ => close(g.to_f64(), r.to_f64(), FLOAT_TOLERANCE),
    }
}

/// Whether `value` differs from `gold` by no more than `10^-(places + PERTURBED_PLACES)`.
fn perturbed(value: &Value, gold: &BigRational, places: i64) -> bool {
    let bound = pow10(-(places + PERTURBED_PLACES));
    match value {
        Value::Exact(v) => (v - gold).abs() <= bound,
        Value::Approx(x) => (x - crate::number::rational_to_f64(gold)).abs() <= crate::number::rational_to_f64(&bound),
    }
}

/// Whether the `places`-decimal `resp` is `gold` rounded (half away from zero) or truncated.
fn rounded_or_truncated(gold: &Value, resp: &BigRational, places: i64) -> bool {
    let resp_scaled = round_at(resp, places);
    match gold {
        Value::Exact(g) => {
            let truncated = truncate_at(g, places);
            resp_scaled == round_at(g, places) || resp_scaled == truncated
        }
        Value::Approx(x) => {
            let scaled = x * 10f64.powi(places as i32);
            let r = resp_scaled.to_f64().unwrap_or(f64::NAN);
            (scaled.round() - r).abs() < 0.5 || (scaled.trunc() - r).abs() < 0.5
        }
    }
}

fn significant_digits(r: &BigRational, places: i64) -> u32 {
    let scaled = round_at(r, places);
    if scaled.is_zero() {
        return 0;
    }
    scaled.abs().to_string().len() as u32
}

/// Whether `value` rounded to `places` decimals is `gold`.
fn rounds_to(value: &Value, gold: &BigRational, places: i64) -> bool {
    let target = round_at(gold, places);
    match value {
        Value::Exact(v) => round_at(v, places) == target,
        Value::Approx(x) => {
            let scaled = x * 10f64.powi(places as i32);
            let t = target.to_f64().unwrap_or(f64::NAN);
            // Within half a unit of the last place (a hair more, for float error).
            (scaled - t).abs() <= 0.5 + 1e-9 * scaled.abs().max(1.0)
        }
    }
}
