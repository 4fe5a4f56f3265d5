//! Numbers for the verifier: exact big rationals while they stay small, `f64` otherwise.
//!
//! Every operation checks the size of its result against [`MAX_BITS`], so hostile input such
//! as `10^{100000}` or `2^{2^{2^{2^2}}}` costs microseconds instead of minutes or gigabytes: a
//! result that would not fit falls back to a float, and a float that overflows is an error.

use std::fmt;

use num_bigint::{BigInt, Sign};
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Largest exact rational kept, in bits of numerator plus denominator.
pub const MAX_BITS: u64 = 4096;
/// Largest `n` for which `n!` is computed exactly.
pub const MAX_FACTORIAL: u64 = 400;

/// Why a computation has no value.
#[derive(Debug, Clone, PartialEq)]
pub enum MathError {
    DivisionByZero,
    /// The magnitude passed the caps (exact and float both).
    TooLarge,
    /// Outside the function's real domain (`\sqrt{-1}`, `\ln 0`, `0^{-1}`...).
    Domain(&'static str),
    /// The expression has a free variable where a number is needed.
    FreeVariable(String),
    /// Something that has no numeric value (∞ inside arithmetic, a set...).
    NotANumber(&'static str),
}

impl fmt::Display for MathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MathError::DivisionByZero => write!(f, "division by zero"),
            MathError::TooLarge => write!(f, "number too large (past the magnitude cap)"),
            MathError::Domain(what) => write!(f, "outside the domain: {what}"),
            MathError::FreeVariable(v) => write!(f, "unknown variable {v}"),
            MathError::NotANumber(what) => write!(f, "not a number: {what}"),
        }
    }
}

/// A value: exact when it can be, approximate otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Exact(BigRational),
    Approx(f64),
}

pub type MathResult = Result<Value, MathError>;

fn fits(r: &BigRational) -> bool {
    r.numer().bits() + r.denom().bits() <= MAX_BITS
}

/// Converts a rational to the nearest float, also for rationals whose parts overflow `f64`.
pub fn rational_to_f64(r: &BigRational) -> f64 {
    if let Some(x) = r.to_f64() {
        return x;
    }
    // Scale both parts down to the top 60 bits and keep the exponent difference apart.
    let shift = |n: &BigInt| n.bits().saturating_sub(60);
    let (sn, sd) = (shift(r.numer()), shift(r.denom()));
    let n = (r.numer() >> sn).to_f64().unwrap_or(f64::NAN);
    let d = (r.denom() >> sd).to_f64().unwrap_or(f64::NAN);
    let exp = sn as f64 - sd as f64;
    (n / d) * 2f64.powf(exp)
}

impl Value {
    pub fn int(n: i64) -> Value {
        Value::Exact(BigRational::from_integer(BigInt::from(n)))
    }

    /// Wraps an exact result, falling back to a float when it is past the bit cap.
    pub fn exact(r: BigRational) -> MathResult {
        if fits(&r) {
            Ok(Value::Exact(r))
        } else {
            Value::approx(rational_to_f64(&r))
        }
    }

    /// Wraps a float result; a non-finite one is an error (overflow or domain).
    pub fn approx(x: f64) -> MathResult {
        if x.is_nan() {
            Err(MathError::Domain("undefined result"))
        } else if x.is_infinite() {
            Err(MathError::TooLarge)
        } else {
            Ok(Value::Approx(x))
        }
    }

    pub fn to_f64(&self) -> f64 {
        match self {
            Value::Exact(r) => rational_to_f64(r),
            Value::Approx(x) => *x,
        }
    }

    pub fn as_exact(&self) -> Option<&BigRational> {
        match self {
            Value::Exact(r) => Some(r),
            Value::Approx(_) => None,
        }
    }

    pub fn is_zero(&self) -> bool {
        match self {
            Value::Exact(r) => r.is_zero(),
            Value::Approx(x) => *x == 0.0,
        }
    }

    /// An exact integer that fits in `i64`, if this is one.
    pub fn as_small_int(&self) -> Option<i64> {
        match self {
            Value::Exact(r) if r.is_integer() => r.numer().to_i64(),
            _ => None,
        }
    }

    pub fn neg(&self) -> MathResult {
        match self {
            Value::Exact(r) => Ok(Value::Exact(-r)),
            Value::Approx(x) => Ok(Value::Approx(-x)),
        }
    }

    pub fn add(&self, other: &Value) -> MathResult {
        match (self, other) {
            (Value::Exact(a), Value::Exact(b)) => Value::exact(a + b),
            _ => Value::approx(self.to_f64() + other.to_f64()),
        }
    }

    pub fn sub(&self, other: &Value) -> MathResult {
        self.add(&other.neg()?)
    }

    pub fn mul(&self, other: &Value) -> MathResult {
        match (self, other) {
            (Value::Exact(a), Value::Exact(b)) => Value::exact(a * b),
            _ => Value::approx(self.to_f64() * other.to_f64()),
        }
    }

    pub fn div(&self, other: &Value) -> MathResult {
        if other.is_zero() {
            return Err(MathError::DivisionByZero);
        }
        match (self, other) {
            (Value::Exact(a), Value::Exact(b)) => Value::exact(a / b),
            _ => Value::approx(self.to_f64() / other.to_f64()),
        }
    }

    /// `self ^ exponent`, exact for integer exponents and for perfect roots (`8^{1/3}`).
    pub fn pow(&self, exponent: &Value) -> MathResult {
        if let (Value::Exact(base), Value::Exact(e)) = (self, exponent) {
            if base.is_zero() && !e.is_positive() {
                return if e.is_zero() {
                    Err(MathError::Domain("0^0"))
                } else {
                    Err(MathError::DivisionByZero)
                };
            }
            if let Some(result) = exact_pow(base, e)? {
                return Ok(result);
            }
        }
        let (b, e) = (self.to_f64(), exponent.to_f64());
        if b < 0.0 && e.fract() != 0.0 {
            return Err(MathError::Domain("negative base with a fractional exponent"));
        }
        if b == 0.0 && e < 0.0 {
            return Err(MathError::DivisionByZero);
        }
        Value::approx(b.powf(e))
    }

    /// Square root: exact for perfect squares of rationals.
    pub fn sqrt(&self) -> MathResult {
        self.nth_root(2)
    }

    /// Real `n`-th root (odd roots of negatives allowed).
    pub fn nth_root(&self, n: u32) -> MathResult {
        if n == 0 {
            return Err(MathError::Domain("zeroth root"));
        }
        if let Value::Exact(r) = self {
            if let Some(root) = exact_root(r, n) {
                return Ok(Value::Exact(root));
            }
        }
        let x = self.to_f64();
        if x < 0.0 {
            if n % 2 == 1 {
                return Value::approx(-(-x).powf(1.0 / n as f64));
            }
            return Err(MathError::Domain("even root of a negative number"));
        }
        Value::approx(x.powf(1.0 / n as f64))
    }

    pub fn factorial(&self) -> MathResult {
        let n = match self {
            Value::Exact(r) if r.is_integer() && !r.is_negative() => r.numer().to_u64(),
            _ => return Err(MathError::Domain("factorial of a non-natural number")),
        };
        let n = n.ok_or(MathError::TooLarge)?;
        if n > MAX_FACTORIAL {
            return Err(MathError::TooLarge);
        }
        let mut acc = BigInt::one();
        for k in 2..=n {
            acc *= k;
        }
        Value::exact(BigRational::from_integer(acc))
    }

    pub fn abs(&self) -> MathResult {
        match self {
            Value::Exact(r) => Ok(Value::Exact(r.abs())),
            Value::Approx(x) => Ok(Value::Approx(x.abs())),
        }
    }

    pub fn floor(&self) -> MathResult {
        match self {
            Value::Exact(r) => Ok(Value::Exact(r.floor())),
            Value::Approx(x) => Value::approx(x.floor()),
        }
    }

    pub fn ceil(&self) -> MathResult {
        match self {
            Value::Exact(r) => Ok(Value::Exact(r.ceil())),
            Value::Approx(x) => Value::approx(x.ceil()),
        }
    }
}

/// Exact power when the exponent is an integer (or `p/q` with an exact `q`-th root) and the
/// result fits the cap. `Ok(None)` means "not exact, use floats".
fn exact_pow(base: &BigRational, e: &BigRational) -> Result<Option<Value>, MathError> {
    let (p, q) = (e.numer(), e.denom());
    let q = match q.to_u32() {
        Some(q) if q <= 64 => q,
        _ => return Ok(None),
    };
    let root = if q == 1 {
        base.clone()
    } else {
        match exact_root(base, q) {
            Some(r) => r,
            None => return Ok(None),
        }
    };
    let p_abs = match p.abs().to_u64() {
        Some(p) => p,
        None => return Err(MathError::TooLarge),
    };
    // Size of the result in bits, estimated before computing it.
    let bits = (root.numer().bits() + root.denom().bits()).saturating_mul(p_abs);
    if bits > MAX_BITS * 2 {
        // Past the exact cap: a float may still hold it (2^{2000}); or it overflows.
        let approx = rational_to_f64(&root).powf(p.to_f64().unwrap_or(f64::INFINITY));
        return Value::approx(approx).map(Some);
    }
    let p_u32 = p_abs as u32; // bits <= 2*MAX_BITS bounds p_abs for any base other than ±1.
    let mut result = num_traits::pow(root, p_u32 as usize);
    if p.is_negative() {
        result = result.recip();
    }
    Value::exact(result).map(Some)
}

/// The exact `n`-th root of a rational, if it is rational.
fn exact_root(r: &BigRational, n: u32) -> Option<BigRational> {
    let negative = r.is_negative();
    if negative && n & 1 == 0 {
        return None;
    }
    let root_int = |x: &BigInt| -> Option<BigInt> {
        let a = x.abs();
        let c = a.nth_root(n);
        (num_traits::pow(c.clone(), n as usize) == a).then_some(c)
    };
    let num = root_int(r.numer())?;
    let den = root_int(r.denom())?;
    let root = BigRational::new(num, den);
    Some(if negative { -root } else { root })
}

/// Parses a decimal literal (`12`, `3.25`, `.5`) into an exact rational.
/// `repeating` is the repeating block of a repeating decimal (`0.1\overline{6}` → `"6"`).
pub fn parse_decimal(digits: &str, repeating: Option<&str>) -> Option<BigRational> {
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !all_digits(frac_part) || (int_part.is_empty() && frac_part.is_empty()) {
        return None;
    }
    let ten = BigInt::from(10u32);
    // Up to 19 digits fit a u64: no string building or big parsing for ordinary literals.
    let mantissa: BigInt = if int_part.len() + frac_part.len() <= 19 {
        let digits = int_part.bytes().chain(frac_part.bytes());
        BigInt::from(digits.fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0')))
    } else {
        format!("0{int_part}{frac_part}").parse().ok()?
    };
    let scale = ten_to(frac_part.len() as u64);
    let mut value = BigRational::new(mantissa, scale.clone());
    if let Some(rep) = repeating.filter(|r| !r.is_empty()) {
        if !all_digits(rep) {
            return None;
        }
        // 0.ab(cd) = 0.ab + cd / (99 · 100) : the block repeats from the end of the fraction.
        let block: BigInt = rep.parse().ok()?;
        let nines = num_traits::pow(ten, rep.len()) - BigInt::one();
        value += BigRational::new(block, nines * scale);
    }
    Some(value)
}

/// Parses digits in a base from 2 to 36 (`1011_2`).
pub fn parse_in_base(digits: &str, base: u32) -> Option<BigRational> {
    if !(2..=36).contains(&base) || digits.is_empty() || digits.len() > 512 {
        return None;
    }
    let n = BigInt::parse_bytes(digits.as_bytes(), base)?;
    Some(BigRational::from_integer(n))
}

/// `10^k` as a big integer (the caller bounds `k`).
fn ten_to(k: u64) -> BigInt {
    match 10u64.checked_pow(k as u32).filter(|_| k < 20) {
        Some(p) => BigInt::from(p),
        None => num_traits::pow(BigInt::from(10u32), k as usize),
    }
}

/// `10^places` for any sign of `places` (the caller bounds its size).
pub fn pow10(places: i64) -> BigRational {
    let p = ten_to(places.unsigned_abs());
    if places >= 0 {
        BigRational::from_integer(p)
    } else {
        BigRational::new_raw(BigInt::one(), p)
    }
}

/// Rounds `x * 10^places` half away from zero to an integer.
pub fn round_scaled(x: &BigRational, places: u32) -> BigInt {
    round_at(x, i64::from(places))
}

/// `x · 10^places` as an integer numerator and denominator (unreduced).
fn scaled_parts(x: &BigRational, places: i64) -> (BigInt, BigInt) {
    let (mut num, mut den) = (x.numer().clone(), x.denom().clone());
    let p = ten_to(places.unsigned_abs());
    if places >= 0 {
        num *= p;
    } else {
        den *= p;
    }
    (num, den)
}

/// [`round_scaled`] for a place on either side of the point (`-3`: to thousands). Integer
/// arithmetic only: `floor((2|n| + d) / 2d)` for `x · 10^places = n/d`, no rational reductions.
pub fn round_at(x: &BigRational, places: i64) -> BigInt {
    let (num, den) = scaled_parts(x, places);
    let q = (num.abs() * 2u32 + &den) / (den * 2u32);
    if x.is_negative() {
        -q
    } else {
        q
    }
}

/// `x · 10^places` truncated toward zero.
pub fn truncate_at(x: &BigRational, places: i64) -> BigInt {
    let (num, den) = scaled_parts(x, places);
    num / den
}

/// Canonical text of an exact rational: `42`, `-2.5` when it terminates within
/// `max_places` decimals, otherwise the reduced fraction `7/3`.
pub fn rational_to_text(r: &BigRational, max_places: u32) -> String {
    if r.is_integer() {
        return r.numer().to_string();
    }
    let den = r.denom().clone();
    let (mut twos, mut fives, mut rest) = (0u32, 0u32, den);
    let (two, five) = (BigInt::from(2u32), BigInt::from(5u32));
    while rest.is_multiple_of(&two) {
        rest /= &two;
        twos += 1;
    }
    while rest.is_multiple_of(&five) {
        rest /= &five;
        fives += 1;
    }
    let places = twos.max(fives);
    if rest.is_one() && places <= max_places {
        let scaled = round_scaled(r, places);
        let sign = if scaled.sign() == Sign::Minus { "-" } else { "" };
        let digits = scaled.abs().to_string();
        let width = places as usize + 1;
        let padded = format!("{digits:0>width$}");
        let (int_part, frac_part) = padded.split_at(padded.len() - places as usize);
        return format!("{sign}{int_part}.{frac_part}");
    }
    format!("{}/{}", r.numer(), r.denom())
}

/// A float with `sig` significant digits, without trailing zeros (`3.14159265359`).
pub fn float_to_text(x: f64, sig: usize) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-5..=15).contains(&magnitude) {
        let s = format!("{:.*e}", sig.saturating_sub(1), x);
        return match s.split_once('e') {
            Some((m, e)) => format!("{}e{}", trim_zeros(m), e),
            None => s,
        };
    }
    let decimals = (sig as i32 - 1 - magnitude).max(0) as usize;
    trim_zeros(&format!("{x:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i64, d: i64) -> BigRational {
        BigRational::new(n.into(), d.into())
    }

    #[test]
    fn decimals_and_repeating() {
        assert_eq!(parse_decimal("2.50", None), Some(r(5, 2)));
        assert_eq!(parse_decimal("0.", Some("3")), Some(r(1, 3)));
        assert_eq!(parse_decimal("0.1", Some("6")), Some(r(1, 6)));
        assert_eq!(parse_decimal(".5", None), Some(r(1, 2)));
    }

    #[test]
    fn powers_respect_caps() {
        let ten = Value::int(10);
        assert_eq!(ten.pow(&Value::int(100000)), Err(MathError::TooLarge));
        assert_eq!(Value::int(8).pow(&Value::Exact(r(1, 3))), Ok(Value::int(2)));
        assert!(matches!(Value::int(2).pow(&Value::int(2000)), Ok(Value::Exact(_))));
        assert_eq!(Value::int(3).pow(&Value::int(5000)), Err(MathError::TooLarge));
        assert_eq!(Value::int(0).pow(&Value::int(-1)), Err(MathError::DivisionByZero));
    }

    #[test]
    fn text_forms() {
        assert_eq!(rational_to_text(&r(7, 3), 6), "7/3");
        assert_eq!(rational_to_text(&r(-5, 2), 6), "-2.5");
        assert_eq!(rational_to_text(&r(1, 40), 6), "0.025");
        assert_eq!(float_to_text(std::f64::consts::PI, 12), "3.14159265359");
    }
}
