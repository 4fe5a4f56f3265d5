//! A bounded calculator on the verifier's parser, for tool-use environments.
//!
//! Output forms: integers as `42`; exact non-integers as a decimal when they terminate
//! within [`MAX_EXACT_DECIMAL_PLACES`] places (`2.5`, `0.125`), otherwise as a reduced
//! fraction (`7/3`); results that are not rational (or that left the exact range) as a decimal
//! with [`SIGNIFICANT_DIGITS`] significant digits (`1.41421356237`).

use crate::answer::{parse_answer, Answer};
use crate::number::{float_to_text, rational_to_text, Value};

/// Longest expression accepted (characters).
pub const MAX_EXPRESSION_CHARS: usize = 1000;
pub const MAX_EXACT_DECIMAL_PLACES: u32 = 6;
pub const SIGNIFICANT_DIGITS: usize = 12;

/// Evaluates a plain or LaTeX arithmetic expression (`3*(4+5)`, `\frac{7}{3}`, `2^{10}`,
/// `\sqrt{2}`, `15\%` of nothing: percent is /100). Errors name the problem.
pub fn evaluate(expr: &str) -> Result<String, String> {
    if expr.chars().count() > MAX_EXPRESSION_CHARS {
        return Err(format!("expression longer than {MAX_EXPRESSION_CHARS} characters"));
    }
    let trimmed = expr.trim().trim_end_matches('=').trim();
    if trimmed.is_empty() {
        return Err("empty expression".into());
    }
    let parsed = parse_answer(trimmed)?;
    let Answer::Expr(e) = parsed else {
        return Err("not an arithmetic expression".into());
    };
    if let Some(v) = e.variables().into_iter().next() {
        return Err(format!("unknown variable {v}"));
    }
    match e.eval().map_err(|err| err.to_string())? {
        Value::Exact(r) => Ok(rational_to_text(&r, MAX_EXACT_DECIMAL_PLACES)),
        Value::Approx(x) => Ok(float_to_text(x, SIGNIFICANT_DIGITS)),
    }
}

#[cfg(test)]
mod tests {
    use super::evaluate;

    #[test]
    fn forms() {
        assert_eq!(evaluate("3*(4+5)").as_deref(), Ok("27"));
        assert_eq!(evaluate("7/3").as_deref(), Ok("7/3"));
        assert_eq!(evaluate("\\frac{5}{2}").as_deref(), Ok("2.5"));
        assert_eq!(evaluate("2^{10} - 24").as_deref(), Ok("1000"));
        assert_eq!(evaluate("\\sqrt{2}").as_deref(), Ok("1.41421356237"));
        assert_eq!(evaluate("\\sqrt{16}").as_deref(), Ok("4"));
        assert_eq!(evaluate("1,000 + 1").as_deref(), Ok("1001"));
        assert_eq!(evaluate("12 × 3 − 4").as_deref(), Ok("32"));
        assert_eq!(evaluate("0.1 + 0.2").as_deref(), Ok("0.3"));
        assert_eq!(evaluate("5!").as_deref(), Ok("120"));
    }

    #[test]
    fn errors() {
        assert!(evaluate("1/0").unwrap_err().contains("division by zero"));
        assert!(evaluate("x + 1").unwrap_err().contains("variable"));
        assert!(evaluate("10^{100000}").unwrap_err().contains("too large"));
        assert!(evaluate("(((").is_err());
        assert!(evaluate("").is_err());
    }
}
