//! Axis ranges and "nice" tick values (1-2-5 steps, decades on log axes).
//!
//! Everything here works in the axis' transformed space: plain values on a
//! linear axis, base-10 exponents on a log axis.

use crate::Scale;

/// Most ticks one axis carries; bounds every loop below whatever the input.
const MAX_TICKS: usize = 60;

/// Slack for float noise when testing whether a tick lies inside a range.
const EPS: f64 = 1e-9;

/// One tick: where it sits (transformed space) and its label.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tick {
    pub pos: f64,
    pub label: String,
}

/// An axis' visible range (transformed space) and its ticks.
#[derive(Clone, Debug)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<Tick>,
}

/// A value in the axis' transformed space, or None when the scale can't show it.
pub(crate) fn transform(scale: Scale, v: f64) -> Option<f64> {
    match scale {
        Scale::Linear => v.is_finite().then_some(v),
        Scale::Log10 => (v.is_finite() && v > 0.0).then(|| v.log10()),
    }
}

/// Builds an axis from the data's extent (transformed min/max, if any data) or
/// a caller's fixed range (raw values, used as given when valid).
pub(crate) fn axis(
    scale: Scale,
    data: Option<(f64, f64)>,
    fixed: Option<(f64, f64)>,
    target: usize,
) -> Axis {
    let target = target.clamp(2, MAX_TICKS / 4);
    let fixed = fixed.and_then(|(a, b)| {
        let (a, b) = (transform(scale, a)?, transform(scale, b)?);
        (b > a).then_some((a, b))
    });
    match scale {
        Scale::Linear => {
            let (lo, hi, step) = match fixed {
                Some((lo, hi)) => (lo, hi, nice_step(hi - lo, target)),
                None => {
                    let (lo, hi) = widen(data.unwrap_or((0.0, 1.0)), |v| v.abs() * 0.1);
                    let step = nice_step(hi - lo, target);
                    // Round the ends out to the step so ticks sit at both ends.
                    let (a, b) = ((lo / step).floor() * step, (hi / step).ceil() * step);
                    if a.is_finite() && b.is_finite() && b > a {
                        (a, b, step)
                    } else {
                        (lo, hi, step)
                    }
                }
            };
            let ticks = ticks_every(lo, hi, step)
                .into_iter()
                .map(|v| Tick {
                    pos: v,
                    label: fmt_linear(v, step),
                })
                .collect();
            Axis { lo, hi, ticks }
        }
        Scale::Log10 => {
            let (lo, hi) = match fixed {
                Some(r) => r,
                None => {
                    let (lo, hi) = widen(data.unwrap_or((0.0, 1.0)), |_| 0.5);
                    (round_125(lo, false), round_125(hi, true))
                }
            };
            Axis {
                lo,
                hi,
                ticks: log_ticks(lo, hi, target),
            }
        }
    }
}

/// Gives a zero-width range some room so a single value still gets an axis.
fn widen((lo, hi): (f64, f64), pad: impl Fn(f64) -> f64) -> (f64, f64) {
    if hi > lo {
        return (lo, hi);
    }
    let p = pad(lo);
    let p = if p > 0.0 && p.is_finite() { p } else { 1.0 };
    (lo - p, hi + p)
}

/// The smallest step of 1, 2 or 5 times a power of ten that is at least
/// `span / target`, so a range gets at most about `target` intervals.
pub(crate) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| *m >= raw / mag - EPS)
        .unwrap_or(10.0);
    m * mag
}

/// Nice, increasing values inside [lo, hi], about `target` intervals apart.
pub(crate) fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    ticks_every(lo, hi, nice_step(hi - lo, target))
}

/// Multiples of a nice `step` (m * 10^e) inside [lo, hi], increasing.
fn ticks_every(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    // For e < 0, k * m / 10^-e rounds to the decimal (0.6) where k * step may not (0.6000000000000001).
    let e = step.log10().floor();
    let (m, scale) = if (-300.0..0.0).contains(&e) {
        let scale = 10f64.powi(-e as i32);
        ((step * scale).round(), scale)
    } else {
        (step, 1.0)
    };
    let (first, last) = ((lo / step - EPS).ceil(), (hi / step + EPS).floor());
    if !(first.is_finite() && last.is_finite() && last >= first) || last - first > MAX_TICKS as f64
    {
        // Only when the range is absurd (e.g. spans most of f64); its ends are still honest ticks.
        return if hi > lo { vec![lo, hi] } else { vec![] };
    }
    (first as i64..=last as i64)
        .map(|k| {
            let v = k as f64 * m / scale;
            // Snap float noise: 0 not 1e-17, and never a hair outside the range.
            if v.abs() < step * EPS {
                0.0
            } else {
                v.clamp(lo, hi)
            }
        })
        .collect()
}

/// Ticks for a log axis over exponents [lo, hi]: 1-2-5 values when few enough,
/// else whole decades (every n-th when many), else plain linear ticks.
pub(crate) fn log_ticks(lo: f64, hi: f64, target: usize) -> Vec<Tick> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return vec![];
    }
    let (e0, e1) = ((lo - EPS).floor(), (hi + EPS).ceil());
    if e1 - e0 <= target as f64 {
        let mut t = Vec::new();
        for e in e0 as i64..=e1 as i64 {
            for m in [1u8, 2, 5] {
                let pos = (m as f64).log10() + e as f64;
                if pos >= lo - EPS && pos <= hi + EPS {
                    t.push(Tick {
                        pos: pos.clamp(lo, hi),
                        label: fmt_power(m, e),
                    });
                }
            }
        }
        if t.len() >= 2 && t.len() <= target {
            return t;
        }
    }
    // Decades, every `step`-th so the count stays near the target.
    let step = nice_step(hi - lo, target).round().max(1.0);
    let (first, last) = (((lo - EPS) / step).ceil(), ((hi + EPS) / step).floor());
    if last - first >= 1.0 && last - first <= MAX_TICKS as f64 {
        return (first as i64..=last as i64)
            .map(|k| {
                let e = k as f64 * step;
                Tick {
                    pos: e.clamp(lo, hi),
                    label: fmt_power(1, e as i64),
                }
            })
            .collect();
    }
    // Less than a decade with no 1-2-5 values in it (e.g. 1.1 .. 1.9): linear values.
    let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
    let step = nice_step(b - a, target);
    linear_ticks(a, b, target)
        .into_iter()
        .filter(|v| *v > 0.0)
        .map(|v| Tick {
            pos: v.log10().clamp(lo, hi),
            label: fmt_linear(v, step),
        })
        .collect()
}

/// Rounds an exponent down (or up) to the nearest 1, 2 or 5 times a power of ten.
fn round_125(t: f64, up: bool) -> f64 {
    let e = t.floor();
    let frac = t - e;
    let marks = [0.0, 2f64.log10(), 5f64.log10(), 1.0];
    let m = if up {
        marks
            .iter()
            .copied()
            .find(|&m| m >= frac - EPS)
            .unwrap_or(1.0)
    } else {
        marks
            .iter()
            .copied()
            .rev()
            .find(|&m| m <= frac + EPS)
            .unwrap_or(0.0)
    };
    e + m
}

/// Label for `m * 10^e`: plain decimals near 1 ("0.001", "500"), else "2e-5".
fn fmt_power(m: u8, e: i64) -> String {
    if (-3..=4).contains(&e) {
        let v = m as f64 * 10f64.powi(e as i32);
        format!("{:.*}", (-e).max(0) as usize, v)
    } else {
        format!("{m}e{e}")
    }
}

/// Label for a linear tick: as many decimals as the step needs, scientific
/// notation for very small or very large steps.
pub(crate) fn fmt_linear(v: f64, step: f64) -> String {
    let step_exp = step.abs().log10().floor();
    if (-4.0..6.0).contains(&step_exp) {
        // Zero too, so a column of labels shares its decimals ("0.0", "0.5").
        return format!("{:.*}", (-step_exp).max(0.0) as usize, v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (v.abs().log10().floor() - step_exp).clamp(0.0, 6.0) as usize;
    let s = format!("{:.*e}", digits, v);
    // "1.50e-4" -> "1.5e-4", "2.0e6" -> "2e6"
    match s.split_once('e') {
        Some((mant, exp)) if mant.contains('.') => {
            format!("{}e{exp}", mant.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when `step` is 1, 2 or 5 times a power of ten.
    fn is_nice(step: f64) -> bool {
        let m = step / 10f64.powf(step.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().any(|n| (m - n).abs() < 1e-6)
    }

    fn check_linear(lo: f64, hi: f64) {
        let t = linear_ticks(lo, hi, 6);
        assert!(t.len() >= 2, "{lo}..{hi}: {t:?}");
        assert!(t.windows(2).all(|w| w[1] > w[0]), "not increasing: {t:?}");
        assert!(
            t.iter().all(|v| *v >= lo && *v <= hi),
            "out of range: {t:?}"
        );
        let step = t[1] - t[0];
        assert!(is_nice(step), "step {step} of {t:?}");
        // Every tick is a multiple of the step.
        assert!(
            t.iter()
                .all(|v| ((v / step) - (v / step).round()).abs() < 1e-6),
            "{t:?}"
        );
    }

    #[test]
    fn linear_ticks_are_nice_increasing_in_range() {
        check_linear(0.0, 1.0);
        check_linear(0.0003, 0.0041);
        check_linear(-37.0, 512.0);
        check_linear(1e9, 1e9 + 3.0);
        assert_eq!(
            linear_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
    }

    #[test]
    fn linear_axis_expands_to_ticks() {
        let a = axis(Scale::Linear, Some((0.0003, 0.0041)), None, 6);
        assert!(a.lo <= 0.0003 && a.hi >= 0.0041);
        assert_eq!(a.ticks.first().unwrap().pos, a.lo);
        let labels: Vec<_> = a.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            ["0.000", "0.001", "0.002", "0.003", "0.004", "0.005"]
        );
    }

    #[test]
    fn log_ticks_are_decades() {
        let a = axis(Scale::Log10, Some((0.0, 6.0)), None, 8);
        let vals: Vec<f64> = a.ticks.iter().map(|t| 10f64.powf(t.pos)).collect();
        assert_eq!(a.ticks.len(), 7);
        assert!(vals.windows(2).all(|w| w[1] > w[0]));
        assert!(vals
            .iter()
            .all(|v| *v >= 1.0 - 1e-9 && *v <= 1e6 * (1.0 + 1e-9)));
        assert!(a.ticks.iter().all(|t| (t.pos - t.pos.round()).abs() < 1e-9));
        let labels: Vec<_> = a.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["1", "10", "100", "1000", "10000", "1e5", "1e6"]);
        // Fewer ticks wanted: every other decade, still powers of ten.
        let t = log_ticks(0.0, 6.0, 3);
        assert!(t.len() >= 2 && t.len() <= 4, "{t:?}");
        assert!(t.iter().all(|t| (t.pos - t.pos.round()).abs() < 1e-9));
    }

    #[test]
    fn log_ticks_small_ranges() {
        // 0.0003 .. 0.0041 spans about one decade: 1-2-5 values, readable labels.
        let a = axis(
            Scale::Log10,
            Some((0.0003f64.log10(), 0.0041f64.log10())),
            None,
            8,
        );
        let labels: Vec<_> = a.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["2e-4", "5e-4", "0.001", "0.002", "0.005"]);
        // Inside one decade with no 1-2-5 value: falls back to linear values.
        let t = log_ticks(1.1f64.log10(), 1.9f64.log10(), 5);
        assert!(
            t.len() >= 2 && t.windows(2).all(|w| w[1].pos > w[0].pos),
            "{t:?}"
        );
    }

    #[test]
    fn degenerate_ranges() {
        // One value, or none at all, still gives a usable axis.
        for scale in [Scale::Linear, Scale::Log10] {
            for data in [
                None,
                Some((5.0, 5.0)),
                Some((0.0, 0.0)),
                Some((-1e300, 1e300)),
            ] {
                let a = axis(scale, data, None, 5);
                assert!(a.hi > a.lo, "{scale:?} {data:?} {a:?}");
                assert!(!a.ticks.is_empty(), "{scale:?} {data:?}");
            }
        }
        // A bad fixed range is ignored rather than used.
        let a = axis(Scale::Log10, Some((0.0, 1.0)), Some((-1.0, 10.0)), 5);
        assert!(a.hi > a.lo);
        assert_eq!(linear_ticks(f64::MIN, f64::MAX, 5).len(), 2);
    }

    #[test]
    fn labels() {
        assert_eq!(fmt_linear(0.5, 0.1), "0.5");
        assert_eq!(fmt_linear(2000.0, 500.0), "2000");
        assert_eq!(fmt_linear(1.5e-5, 5e-6), "1.5e-5");
        assert_eq!(fmt_linear(3e7, 1e7), "3e7");
        assert_eq!(fmt_power(1, -4), "1e-4");
        assert_eq!(fmt_power(1, -3), "0.001");
    }
}
