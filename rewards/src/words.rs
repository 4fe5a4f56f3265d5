//! Numbers written in words: cardinals from "zero" to the trillions ("one hundred and five",
//! "twenty-four", "two thousand and five"), a sign ("negative seven"), simple fractions
//! ("three-fourths", "two thirds", "a half") and mixed numbers ("one and a half").
//!
//! Words arrive lower-cased and already split at spaces and hyphens.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

/// Most words read as one number (a phrase this long is no longer a number).
const MAX_WORDS: usize = 24;

fn small(word: &str) -> Option<u32> {
    const UNITS: [&str; 20] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ];
    UNITS.iter().position(|w| *w == word).map(|i| i as u32)
}

fn tens(word: &str) -> Option<u32> {
    Some(match word {
        "twenty" => 20,
        "thirty" => 30,
        "forty" | "fourty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

fn scale(word: &str) -> Option<u32> {
    Some(match word {
        "thousand" => 3,
        "million" => 6,
        "billion" => 9,
        "trillion" => 12,
        _ => return None,
    })
}

/// Denominator words: "half", "thirds", "quarter", "fourths", "tenths"…
fn denominator(word: &str) -> Option<u32> {
    let singular = word.strip_suffix('s').unwrap_or(word);
    Some(match singular {
        "half" | "halve" => 2,
        "third" => 3,
        "fourth" | "quarter" => 4,
        "fifth" => 5,
        "sixth" => 6,
        "seventh" => 7,
        "eighth" => 8,
        "ninth" => 9,
        "tenth" => 10,
        "eleventh" => 11,
        "twelfth" => 12,
        "hundredth" => 100,
        "thousandth" => 1000,
        _ => return None,
    })
}

/// Whether a word can be part of a number phrase.
pub fn is_number_word(word: &str) -> bool {
    small(word).is_some()
        || tens(word).is_some()
        || scale(word).is_some()
        || denominator(word).is_some()
        || matches!(word, "hundred" | "dozen" | "negative" | "minus")
}

/// A cardinal at the start of `words`: (value, words used). Grammar: groups of
/// `[units] [hundred] [and] [tens[-units] | units]` joined by scale words.
fn cardinal(words: &[&str]) -> Option<(BigInt, usize)> {
    let mut total = BigInt::zero();
    let mut group: u64 = 0; // the part below the next scale word
    let mut used = 0;
    let mut last: Option<&str> = None; // category of the previous word
    let mut i = 0;
    while i < words.len().min(MAX_WORDS) {
        let w = words[i];
        let article = matches!(w, "a" | "an") && last.is_none();
        let category = if small(w).is_some() {
            "unit"
        } else if tens(w).is_some() {
            "tens"
        } else if w == "hundred" || w == "dozen" || w == "dozens" {
            "hundred"
        } else if scale(w).is_some() {
            "scale"
        } else if article {
            "article"
        } else if w == "and" && last.is_some() && words.get(i + 1).is_some_and(|n| small(n).is_some() || tens(n).is_some()) {
            i += 1;
            continue;
        } else {
            break;
        };
        let ok = match (last, category) {
            (None, c) => c != "scale",
            (Some("unit"), "unit" | "tens") => false,
            (Some("tens"), "tens") => false,
            // After the tens only a digit: "twenty-four", not "twenty-twelve".
            (Some("tens"), "unit") => small(w).is_some_and(|n| (1..10).contains(&n)),
            (Some("hundred"), "hundred") => false,
            (Some("scale"), "scale") => false,
            (Some("article"), "unit" | "tens") => false,
            _ => true,
        };
        if !ok {
            break;
        }
        match category {
            "unit" => group += u64::from(small(w).unwrap_or(0)),
            "tens" => group += u64::from(tens(w).unwrap_or(0)),
            "article" => {}
            // "two dozen" multiplies like "two hundred".
            "hundred" if w.starts_with("dozen") => group = group.max(1) * 12,
            "hundred" => group = group.max(1) * 100,
            _ => {
                let power = scale(w).unwrap_or(0);
                total += BigInt::from(group.max(1)) * num_traits::pow(BigInt::from(10u32), power as usize);
                group = 0;
            }
        }
        last = Some(category);
        i += 1;
        used = i;
    }
    if last == Some("article") || used == 0 {
        // "a" alone is not a number; it may still start a fraction ("a half").
        return None;
    }
    Some((total + BigInt::from(group), used))
}

/// The number at the start of `words`, and how many words it used. `None` when the words do
/// not start with a number.
pub fn leading_number(words: &[&str]) -> Option<(BigRational, usize)> {
    let (negative, start) = match words.first() {
        Some(&"negative") | Some(&"minus") => (true, 1),
        _ => (false, 0),
    };
    let rest = &words[start..];
    let (value, used) = match cardinal(rest) {
        Some((whole, used)) => {
            let whole = BigRational::from_integer(whole);
            // "three fourths": the cardinal is a numerator.
            if rest.get(used) == Some(&"point") {
                // "three point one four": digits after the point, one word each.
                let digits: Vec<u32> = rest[used + 1..].iter().map_while(|w| small(w).filter(|d| *d < 10)).collect();
                if digits.is_empty() {
                    (whole, used)
                } else {
                    let frac: String = digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
                    let frac = crate::number::parse_decimal(&format!("0.{frac}"), None)?;
                    (whole + frac, used + 1 + digits.len())
                }
            } else if let Some(den) = rest.get(used).and_then(|w| denominator(w)) {
                (whole / BigRational::from_integer(den.into()), used + 1)
            } else if rest.get(used) == Some(&"and") {
                // "one and a half", "two and three quarters".
                match fraction(&rest[used + 1..]) {
                    Some((frac, n)) => (whole + frac, used + 1 + n),
                    None => (whole, used),
                }
            } else {
                (whole, used)
            }
        }
        None => fraction(rest)?,
    };
    let value = if negative { -value } else { value };
    Some((value, start + used))
}

/// "a half", "one quarter", "three fourths".
fn fraction(words: &[&str]) -> Option<(BigRational, usize)> {
    let numerator = match words.first() {
        Some(&"a") | Some(&"an") => Some((BigInt::one(), 1)),
        _ => cardinal(words),
    };
    let (num, used) = numerator?;
    let den = denominator(words.get(used)?)?;
    Some((BigRational::new(num, den.into()), used + 1))
}

/// Splits text into lower-case words at anything that is not a letter (spaces, hyphens).
pub fn split_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<String> {
        let words = split_words(text);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let (v, used) = leading_number(&refs)?;
        (used == refs.len()).then(|| v.to_string())
    }

    #[test]
    fn cardinals() {
        assert_eq!(value("twenty-four").as_deref(), Some("24"));
        assert_eq!(value("one hundred and five").as_deref(), Some("105"));
        assert_eq!(value("two thousand and five").as_deref(), Some("2005"));
        assert_eq!(value("eleven hundred").as_deref(), Some("1100"));
        assert_eq!(value("a thousand").as_deref(), Some("1000"));
        assert_eq!(value("two dozen").as_deref(), Some("24"));
        assert_eq!(value("a dozen").as_deref(), Some("12"));
        assert_eq!(value("three billion").as_deref(), Some("3000000000"));
        assert_eq!(
            value("nine hundred ninety-nine thousand nine hundred ninety-nine").as_deref(),
            Some("999999")
        );
        assert_eq!(value("negative seven").as_deref(), Some("-7"));
        assert_eq!(value("five five"), None);
        assert_eq!(value("twenty thirty"), None);
        assert_eq!(value("a"), None);
    }

    #[test]
    fn fractions() {
        assert_eq!(value("three-fourths").as_deref(), Some("3/4"));
        assert_eq!(value("two thirds").as_deref(), Some("2/3"));
        assert_eq!(value("a half").as_deref(), Some("1/2"));
        assert_eq!(value("one and a half").as_deref(), Some("3/2"));
        assert_eq!(value("two and three quarters").as_deref(), Some("11/4"));
        assert_eq!(value("fourth"), None);
        assert_eq!(value("three point one four").as_deref(), Some("157/50"));
    }
}
