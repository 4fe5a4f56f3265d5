//! Complex values for answers in `i` (`(1+i)^2` ≡ `2i`, `\frac{1}{i}` ≡ `-i`): an expression
//! whose only variable is `i` is evaluated with `i² = -1`, in floating point.

use crate::expr::{Expr, Func};
use crate::number::rational_to_f64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

/// Deepest tree evaluated (the parser's own cap is lower).
const MAX_DEPTH: usize = 200;

impl Complex {
    fn real(re: f64) -> Complex {
        Complex { re, im: 0.0 }
    }

    fn mul(self, o: Complex) -> Complex {
        Complex { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }

    fn div(self, o: Complex) -> Option<Complex> {
        let d = o.re * o.re + o.im * o.im;
        (d != 0.0).then(|| Complex { re: (self.re * o.re + self.im * o.im) / d, im: (self.im * o.re - self.re * o.im) / d })
    }

    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    fn exp(self) -> Complex {
        let m = self.re.exp();
        Complex { re: m * self.im.cos(), im: m * self.im.sin() }
    }

    /// Principal logarithm.
    fn ln(self) -> Option<Complex> {
        (self.abs() > 0.0).then(|| Complex { re: self.abs().ln(), im: self.im.atan2(self.re) })
    }

    fn pow(self, e: Complex) -> Option<Complex> {
        // Small integer powers by repeated products, so that `i^2` is exactly -1.
        if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 64.0 {
            let mut acc = Complex::real(1.0);
            for _ in 0..e.re.abs() as u32 {
                acc = acc.mul(self);
            }
            return if e.re < 0.0 { Complex::real(1.0).div(acc) } else { Some(acc) };
        }
        Some(self.ln()?.mul(e).exp())
    }

    pub fn close(self, o: Complex, tol: f64) -> bool {
        let scale = self.abs().max(o.abs()).max(1.0);
        (self.re - o.re).abs() <= tol * scale && (self.im - o.im).abs() <= tol * scale
    }
}

/// The value of an expression in `i` alone; `None` for anything outside complex arithmetic,
/// powers, square roots, `exp`, `ln` and moduli.
pub fn eval(e: &Expr) -> Option<Complex> {
    eval_in(e, 0)
}

fn eval_in(e: &Expr, depth: usize) -> Option<Complex> {
    if depth > MAX_DEPTH {
        return None;
    }
    let ev = |x: &Expr| eval_in(x, depth + 1);
    let value = match e {
        Expr::Num { value, .. } | Expr::Based { value, .. } => Complex::real(rational_to_f64(value)),
        Expr::Pi => Complex::real(std::f64::consts::PI),
        Expr::E => Complex::real(std::f64::consts::E),
        Expr::Var(v) if v == "i" => Complex { re: 0.0, im: 1.0 },
        Expr::Neg(a) => {
            let a = ev(a)?;
            Complex { re: -a.re, im: -a.im }
        }
        Expr::Add(a, b) | Expr::Sub(a, b) => {
            let (a, b) = (ev(a)?, ev(b)?);
            let sign = if matches!(e, Expr::Sub(..)) { -1.0 } else { 1.0 };
            Complex { re: a.re + sign * b.re, im: a.im + sign * b.im }
        }
        Expr::Mul(a, b) => ev(a)?.mul(ev(b)?),
        Expr::Div(a, b) => ev(a)?.div(ev(b)?)?,
        Expr::Pow(a, b) if **a == Expr::E => ev(b)?.exp(),
        Expr::Pow(a, b) => ev(a)?.pow(ev(b)?)?,
        Expr::Call(f, a) => {
            let a = ev(a)?;
            match f {
                Func::Sqrt => a.pow(Complex::real(0.5))?,
                Func::Exp => a.exp(),
                Func::Ln => a.ln()?,
                Func::Abs => Complex::real(a.abs()),
                _ => return None,
            }
        }
        _ => return None,
    };
    (value.re.is_finite() && value.im.is_finite()).then_some(value)
}
