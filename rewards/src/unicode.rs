//! Unicode normalisation of a response or gold before extraction: the symbols models print
//! become the ASCII or LaTeX the rest of the verifier reads.
//!
//! Done on the whole text (not only on the extracted answer) so that extraction sees them too:
//! the last-number fallback must read `−5` as negative and `2½` as one number. ASCII input is
//! returned as is, without a copy.

use std::borrow::Cow;

/// Superscript characters and what they stand for.
fn superscript(c: char) -> Option<char> {
    Some(match c {
        '⁰' => '0',
        '¹' => '1',
        '²' => '2',
        '³' => '3',
        '⁴' => '4',
        '⁵' => '5',
        '⁶' => '6',
        '⁷' => '7',
        '⁸' => '8',
        '⁹' => '9',
        '⁺' => '+',
        '⁻' => '-',
        '⁽' => '(',
        '⁾' => ')',
        'ⁿ' => 'n',
        'ⁱ' => 'i',
        _ => return None,
    })
}

fn subscript(c: char) -> Option<char> {
    match c {
        '₀'..='₉' => char::from_digit(c as u32 - '₀' as u32, 10),
        '₊' => Some('+'),
        '₋' => Some('-'),
        _ => None,
    }
}

/// `½` → (1, 2).
fn vulgar_fraction(c: char) -> Option<(u8, u8)> {
    Some(match c {
        '½' => (1, 2),
        '⅓' => (1, 3),
        '⅔' => (2, 3),
        '¼' => (1, 4),
        '¾' => (3, 4),
        '⅕' => (1, 5),
        '⅖' => (2, 5),
        '⅗' => (3, 5),
        '⅘' => (4, 5),
        '⅙' => (1, 6),
        '⅚' => (5, 6),
        '⅐' => (1, 7),
        '⅛' => (1, 8),
        '⅜' => (3, 8),
        '⅝' => (5, 8),
        '⅞' => (7, 8),
        '⅑' => (1, 9),
        '⅒' => (1, 10),
        '↉' => (0, 3),
        _ => return None,
    })
}

/// Greek letters as the LaTeX names the parser knows (`θ` is `\theta`); π stays, the tokenizer
/// reads it.
fn greek_name(c: char) -> Option<&'static str> {
    Some(match c {
        'α' => "alpha",
        'β' => "beta",
        'γ' => "gamma",
        'δ' => "delta",
        'ε' => "epsilon",
        'θ' => "theta",
        'λ' => "lambda",
        'μ' => "mu",
        'σ' => "sigma",
        'τ' => "tau",
        'φ' | 'ϕ' => "phi",
        'ω' => "omega",
        'Δ' => "Delta",
        'Ω' => "Omega",
        _ => return None,
    })
}

/// Full-width forms (`４２`, `．`) and mathematical bold/sans digits (`𝟒`) as ASCII.
fn ascii_form(c: char) -> Option<char> {
    let u = c as u32;
    match u {
        0xFF01..=0xFF5E => char::from_u32(u - 0xFEE0),
        0x1D7CE..=0x1D7FF => char::from_digit((u - 0x1D7CE) % 10, 10),
        _ => None,
    }
}

fn is_digit_at(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(|&c| c.is_ascii_digit() || ascii_form(c).is_some_and(|a| a.is_ascii_digit()))
}

/// Spaces other than the ASCII one: no-break, thin, narrow no-break, figure, ideographic...
fn is_odd_space(c: char) -> bool {
    matches!(c, '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// Characters that carry nothing: zero-width spaces and joiners, the BOM, soft hyphens.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// The text with the symbols models print rewritten: full-width ASCII, U+2212 minus and
/// friends, odd spaces (a thin or no-break space between digit groups is a thousands
/// separator and goes), invisible characters, superscripts (`x²` → `x^{2}`), subscripts,
/// vulgar fractions (`2½` → `2 1/2`) and the fraction slash. Symbols the tokenizer reads
/// itself (`×`, `√`, `π`, `≤`…) are kept.
pub fn normalize(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(a) = ascii_form(c) {
            out.push(a);
        } else if is_invisible(c) {
        } else if is_odd_space(c) {
            // `1 000 000` with thin or no-break spaces: digit groups of three.
            let grouping = i > 0
                && is_digit_at(&chars, i - 1)
                && (1..=3).all(|k| is_digit_at(&chars, i + k))
                && !is_digit_at(&chars, i + 4);
            if !grouping {
                out.push(' ');
            }
        } else if matches!(c, '−' | '﹣' | '‒') {
            out.push('-');
        } else if c == '⁄' {
            out.push('/');
        } else if let Some(name) = greek_name(c) {
            out.push('\\');
            out.push_str(name);
            // `2θx`: the command name must not run into the next letter.
            if chars.get(i + 1).is_some_and(|n| n.is_alphabetic()) {
                out.push(' ');
            }
        } else if c == '℃' || c == '℉' {
            out.push_str(if c == '℃' { "°C" } else { "°F" });
        } else if c == 'ℝ' {
            // A letter to the tokenizer; the real line to a reader.
            out.push_str("\\mathbb{R}");
        } else if let Some((num, den)) = vulgar_fraction(c) {
            // After a whole number it is a mixed number: `2½` → `2 1/2`.
            if out.ends_with(|p: char| p.is_ascii_digit()) {
                out.push(' ');
            }
            out.push_str(&format!("{num}/{den}"));
        } else if superscript(c).is_some() {
            let start = i;
            while i < chars.len() && superscript(chars[i]).is_some() {
                i += 1;
            }
            let sup: String = chars[start..i].iter().filter_map(|&c| superscript(c)).collect();
            // `³⁄₈`: a superscript over a subscript is a fraction.
            let sub_start = i + 1;
            let mut j = sub_start;
            while j < chars.len() && subscript(chars[j]).is_some() {
                j += 1;
            }
            if chars.get(i) == Some(&'⁄') && j > sub_start {
                let sub: String = chars[sub_start..j].iter().filter_map(|&c| subscript(c)).collect();
                out.push_str(&format!("\\frac{{{sup}}}{{{sub}}}"));
                i = j;
            } else {
                out.push_str(&format!("^{{{sup}}}"));
            }
            continue;
        } else if subscript(c).is_some() {
            let start = i;
            while i < chars.len() && subscript(chars[i]).is_some() {
                i += 1;
            }
            let sub: String = chars[start..i].iter().filter_map(|&c| subscript(c)).collect();
            out.push_str(&format!("_{{{sub}}}"));
            continue;
        } else {
            out.push(c);
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn rewrites() {
        assert_eq!(normalize("x = −5"), "x = -5");
        assert_eq!(normalize("４２．５"), "42.5");
        assert_eq!(normalize("1\u{00A0}000\u{2009}000 people"), "1000000 people");
        assert_eq!(normalize("is\u{00A0}3.5\u{202F}kg"), "is 3.5 kg");
        assert_eq!(normalize("2½ cups, ¾"), "2 1/2 cups, 3/4");
        assert_eq!(normalize("10⁻³ and x²"), "10^{-3} and x^{2}");
        assert_eq!(normalize("³⁄₈"), "\\frac{3}{8}");
        assert_eq!(normalize("log₂ 8"), "log_{2} 8");
        assert_eq!(normalize("1\u{200B}7"), "17");
        assert_eq!(normalize("2θ + α"), "2\\theta + \\alpha");
        assert_eq!(normalize("plain"), "plain");
    }
}
