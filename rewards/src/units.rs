//! Units after a number (`5 cm`, `60 km/h`, `12 \text{ m}^2`): read well enough to tell
//! `50 mm` ≡ `5 cm` from `5 m` ≢ `5 cm`.
//!
//! A unit is a product of known unit words with integer powers (`/` and "per" divide). Words
//! outside the table (`apples`, `square units`) make the unit unknown: then only the numbers
//! are compared, as before units were read at all.

use num_bigint::BigInt;
use num_rational::BigRational;

use crate::lex::Tok;

/// Base dimensions: length, mass, time, money.
const DIMS: usize = 4;

/// A known unit: its size in base units (metre, kilogram, second, dollar) and its dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub scale: BigRational,
    pub dims: [i32; DIMS],
}

/// Most factors in one unit (`kg·m/s^2` has three).
const MAX_FACTORS: usize = 8;

fn ratio(num: i64, den: i64) -> BigRational {
    BigRational::new(BigInt::from(num), BigInt::from(den))
}

/// One unit word: (scale as num/den, dimension index, power of that dimension).
fn base_unit(word: &str) -> Option<(BigRational, usize, i32)> {
    let (n, d, dim, pow) = match word {
        "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => (1, 1000, 0, 1),
        "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => (1, 100, 0, 1),
        "m" | "meter" | "meters" | "metre" | "metres" => (1, 1, 0, 1),
        "km" | "kilometer" | "kilometers" | "kilometre" | "kilometres" => (1000, 1, 0, 1),
        "in" | "inch" | "inches" => (254, 10000, 0, 1),
        "ft" | "foot" | "feet" => (3048, 10000, 0, 1),
        "yd" | "yard" | "yards" => (9144, 10000, 0, 1),
        "mi" | "mile" | "miles" => (1_609_344, 1000, 0, 1),
        "mg" | "milligram" | "milligrams" => (1, 1_000_000, 1, 1),
        "g" | "gram" | "grams" => (1, 1000, 1, 1),
        "kg" | "kilogram" | "kilograms" => (1, 1, 1, 1),
        "lb" | "lbs" | "pound" | "pounds" => (45_359_237, 100_000_000, 1, 1),
        "oz" | "ounce" | "ounces" => (28_349_523_125, 1_000_000_000_000, 1, 1),
        "s" | "sec" | "secs" | "second" | "seconds" => (1, 1, 2, 1),
        "min" | "mins" | "minute" | "minutes" => (60, 1, 2, 1),
        "h" | "hr" | "hrs" | "hour" | "hours" => (3600, 1, 2, 1),
        "day" | "days" => (86_400, 1, 2, 1),
        "week" | "weeks" => (604_800, 1, 2, 1),
        // Volumes as cubic metres.
        "mL" | "ml" | "milliliter" | "milliliters" | "millilitre" | "millilitres" => (1, 1_000_000, 0, 3),
        "L" | "liter" | "liters" | "litre" | "litres" => (1, 1000, 0, 3),
        "dollar" | "dollars" => (1, 1, 3, 1),
        "cent" | "cents" => (1, 100, 3, 1),
        _ => return None,
    };
    Some((ratio(n, d), dim, pow))
}

/// Unit words that are abbreviations of compound units.
fn compound(word: &str) -> Option<Unit> {
    let (length, time) = match word {
        "mph" => ("mi", "h"),
        "kph" | "kmh" => ("km", "h"),
        _ => return None,
    };
    let (l, ..) = base_unit(length)?;
    let (t, ..) = base_unit(time)?;
    Some(Unit { scale: l / t, dims: [1, 0, -1, 0] })
}

/// Whether a word is in the unit table.
pub fn is_known(word: &str) -> bool {
    base_unit(word).is_some() || compound(word).is_some()
}

/// The unit words, `/`, "per" and powers of a unit tail, flattened (`\text{ km/h}` gives
/// `km`, `/`, `h`).
fn unit_pieces(toks: &[Tok]) -> Vec<String> {
    let mut pieces = Vec::new();
    for t in toks {
        match t {
            Tok::Word { text, .. } => pieces.push(text.clone()),
            Tok::Text(s) => {
                let mut word = String::new();
                for c in s.chars().chain(std::iter::once(' ')) {
                    if c.is_alphabetic() {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        pieces.push(std::mem::take(&mut word));
                    }
                    if c == '/' || c.is_ascii_digit() || c == '^' || c == '-' {
                        pieces.push(c.to_string());
                    }
                }
            }
            Tok::Sym('/') => pieces.push("/".into()),
            Tok::Sym('^') => pieces.push("^".into()),
            Tok::Sym('-') => pieces.push("-".into()),
            Tok::Num { digits, .. } => pieces.push(digits.clone()),
            Tok::Sym('{') | Tok::Sym('}') | Tok::Sym('*') | Tok::Sym('.') => {}
            _ => pieces.push("?".into()),
        }
    }
    pieces
}

/// Reads a unit tail; `None` when any word is not a known unit.
pub fn parse_unit(toks: &[Tok]) -> Option<Unit> {
    let pieces = unit_pieces(toks);
    let mut unit = Unit { scale: ratio(1, 1), dims: [0; DIMS] };
    let mut denominator = false;
    let mut factors = 0;
    let mut i = 0;
    // "square"/"cubic" raise the next unit.
    let mut prefix_power = 1;
    while i < pieces.len() {
        let p = pieces[i].as_str();
        i += 1;
        match p {
            "/" | "per" => {
                denominator = true;
                continue;
            }
            "square" | "sq" => {
                prefix_power = 2;
                continue;
            }
            "cubic" | "cu" => {
                prefix_power = 3;
                continue;
            }
            _ => {}
        }
        factors += 1;
        if factors > MAX_FACTORS {
            return None;
        }
        let (scale, dims) = match (base_unit(p), compound(p)) {
            (Some((s, dim, pow)), _) => {
                let mut dims = [0; DIMS];
                dims[dim] = pow;
                (s, dims)
            }
            (None, Some(u)) => (u.scale, u.dims),
            _ => return None,
        };
        // `m^2`, `s^{-1}`: a small integer power right after the unit.
        let mut power = prefix_power;
        prefix_power = 1;
        if pieces.get(i).map(String::as_str) == Some("^") {
            let negative = pieces.get(i + 1).map(String::as_str) == Some("-");
            let at = i + 1 + usize::from(negative);
            let n: i32 = pieces.get(at).and_then(|d| d.parse().ok()).filter(|n| (1..=4).contains(n))?;
            power *= if negative { -n } else { n };
            i = at + 1;
        }
        if denominator {
            power = -power;
        }
        let scale = if power >= 0 {
            num_traits::pow(scale, power as usize)
        } else {
            num_traits::pow(scale.recip(), (-power) as usize)
        };
        unit.scale *= scale;
        for (d, k) in unit.dims.iter_mut().zip(dims) {
            *d += k * power;
        }
    }
    (factors > 0).then_some(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lex::tokenize;

    fn unit(s: &str) -> Option<Unit> {
        parse_unit(&tokenize(s).ok()?)
    }

    #[test]
    fn reads_units() {
        assert_eq!(unit("km/h"), unit("\\text{km per hour}"));
        assert_eq!(unit("kph"), unit("km/h"));
        assert_eq!(unit("m^2").map(|u| u.dims), Some([2, 0, 0, 0]));
        assert_eq!(unit("\\text{ cm}^2").map(|u| u.scale), Some(ratio(1, 10_000)));
        assert_eq!(unit("square feet").map(|u| u.dims), Some([2, 0, 0, 0]));
        assert_eq!(unit("m/s^2").map(|u| u.dims), Some([1, 0, -2, 0]));
        assert_eq!(unit("apples"), None);
    }
}
