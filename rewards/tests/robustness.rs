//! Hostile and random input: the verifier never panics, answers "not equivalent" with a
//! reason, and returns within a time bound (1 s per case, in debug builds).

use std::time::{Duration, Instant};

use rewards::{calc, verify, Verdict};

const BOUND: Duration = Duration::from_secs(1);

fn timed_verify(gold: &str, response: &str) -> Verdict {
    let start = Instant::now();
    let v = verify(gold, response);
    let took = start.elapsed();
    let shown: String = response.chars().take(60).collect();
    assert!(took < BOUND, "verify took {took:?} on {shown:?}");
    v
}

fn assert_rejected(gold: &str, response: &str) {
    let v = timed_verify(gold, response);
    let shown: String = response.chars().take(60).collect();
    assert!(!v.correct, "accepted hostile input {shown:?}");
    assert!(v.reason.is_some(), "no reason for {shown:?}");
}

#[test]
fn ten_thousand_nested_braces() {
    let nested = format!("\\boxed{{{}1{}}}", "{".repeat(10_000), "}".repeat(10_000));
    assert_rejected("1", &nested);
    let unclosed = format!("\\boxed{{{}1", "{".repeat(10_000));
    assert_rejected("1", &unclosed);
}

#[test]
fn huge_numbers() {
    assert_rejected("1", "\\boxed{10^{100000}}");
    assert_rejected("10^{100001}", "\\boxed{10^{100000}}");
    assert_rejected("1", "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}");
    assert_rejected("1", "\\boxed{9^9^9^9^9}");
    assert_rejected("1", "\\boxed{1000000!}");
    assert_rejected("1", "\\boxed{\\binom{1000000000}{500000000}}");
    assert_rejected("1", &format!("\\boxed{{{}}}", "9".repeat(1500)));
    assert_rejected("1", "\\boxed{1e9999999}");
    assert_rejected("1", "\\boxed{10^{-100000}}");
    assert_rejected("x", "\\boxed{x^{100000000}}");
}

#[test]
fn division_by_zero_and_domain_errors() {
    for bad in ["1/0", "\\frac{1}{0}", "0^{-1}", "\\ln 0", "\\sqrt{-4}", "\\log_1 2", "0/0", "\\tan(\\pi/2)/0"] {
        assert_rejected("1", &format!("\\boxed{{{bad}}}"));
    }
}

#[test]
fn megabyte_strings() {
    let big = "a".repeat(1 << 20);
    assert_rejected("5", &format!("{big}\\boxed{{5}}"));
    assert_rejected(&big, "\\boxed{5}");
    assert_rejected("5", &"9".repeat(1 << 20));
    assert_rejected("5", &"$".repeat(1 << 20));
    // Just under the input cap, a real answer at the end is still found quickly.
    let filler = "Some reasoning about numbers 1, 2, 3. ".repeat(12_000);
    let v = timed_verify("5", &format!("{filler}\\boxed{{5}}"));
    assert!(v.correct);
    let many_boxes = "\\boxed{1} x ".repeat(40_000);
    timed_verify("1", &many_boxes);
    let many_dollars = "$1$ ".repeat(100_000);
    timed_verify("1", &many_dollars);
}

#[test]
fn long_prose_through_the_uncommitted_modes() {
    // Each stresses one scan of the bold, math-span or last-number modes, or the normalisation:
    // many candidates, many side-clause markers, long runs to rewrite.
    let inputs = [
        "**1** ".repeat(80_000),
        "**a:** ".repeat(70_000),
        "**a**\n".repeat(80_000),
        "$5 for the ".repeat(40_000),
        "one ".repeat(120_000),
        "twenty ".repeat(70_000),
        "x = 1, ".repeat(70_000),
        "Check: 1 = 1. ".repeat(35_000),
        "when 1 ".repeat(70_000),
        "Given that x = 1. ".repeat(25_000),
        "3x + 2 = ".repeat(50_000),
        "18 dollars and 90 cents ".repeat(20_000),
        "½".repeat(200_000),
        "²".repeat(200_000),
        "θ".repeat(150_000),
        format!("The answer is {}", "√".repeat(100_000)),
    ];
    for text in &inputs {
        timed_verify("5", text);
        timed_verify(&text.chars().take(2000).collect::<String>(), "\\boxed{5}");
    }
}

#[test]
fn nul_bytes_and_control_characters() {
    assert_rejected("5", "\\boxed{5\0}");
    assert_rejected("5", &"\0".repeat(100_000));
    assert_rejected("5", "\\boxed{\u{1b}[31m5}");
}

#[test]
fn deep_nesting() {
    let fracs = format!("\\boxed{{{}1{}}}", "\\frac{".repeat(5000), "}{2}".repeat(5000));
    assert_rejected("1", &fracs);
    // Under the length cap, the parser's depth cap answers.
    let fracs = format!("\\boxed{{{}1{}}}", "\\frac{".repeat(200), "}{2}".repeat(200));
    assert_rejected("1", &fracs);
    let parens = format!("\\boxed{{{}1{}}}", "(".repeat(900), ")".repeat(900));
    assert_rejected("1", &parens);
    let sqrt = format!("\\boxed{{{}2{}}}", "\\sqrt{".repeat(300), "}".repeat(300));
    assert_rejected("1", &sqrt);
    let text = format!("\\boxed{{{}5{}}}", "\\text{".repeat(300), "}".repeat(300));
    assert_rejected("1", &text);
    let bars = format!("\\boxed{{{}}}", "|".repeat(1500));
    assert_rejected("1", &bars);
    let powers = format!("\\boxed{{{}2}}", "2^".repeat(900));
    assert_rejected("1", &powers);
    let set = format!("\\boxed{{\\{{{}\\}}}}", "1,".repeat(900));
    assert_rejected("1", &set);
}

#[test]
fn calculator_is_bounded_too() {
    for bad in ["10^{100000}", "1/0", "(((((", "\0", "2^2^2^2^2^2", "1000000!", &"(".repeat(5000)] {
        let start = Instant::now();
        assert!(calc::evaluate(bad).is_err(), "{bad:?}");
        assert!(start.elapsed() < BOUND);
    }
}

/// Tokens that make parsers trip, glued at random.
const PIECES: &[&str] = &[
    "\\boxed{", "}", "{", "\\frac", "^", "1", "0", "9", ".", ",", "\\sqrt", "(", ")", "[", "]", "\\{", "\\}",
    "x", "=", "<", "\\le", "\\pi", "e", "-", "+", "/", "*", "!", "%", "\\%", "\\\\", "&", "\\begin{pmatrix}",
    "\\end{pmatrix}", "\\left(", "\\right)", "#### ", "The answer is ", "$", "**", "\\text{", "\0", "π", "∞",
    "−", "é", "😀", "\\overline{", "...", "e5", "10^{", "\\pm", "\\cup", "\\infty", " ", "\n", "\\", "_",
    "\\log_", "\\sin", "|", "\\binom", "\\mathrm{", "{,}", "\\,", "°", "^\\circ", "\\dot{", "or", "and",
    "\\lfloor", "\\rceil", "12345678901234567890", "\\fbox", "(C)", "\\in", "\\emptyset", "'", "\"", "#",
];

/// xorshift64*: a fixed seed, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn piece_string(&mut self, max_pieces: usize) -> String {
        let n = self.below(max_pieces + 1);
        (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }

    fn char_string(&mut self, max_chars: usize) -> String {
        let n = self.below(max_chars + 1);
        (0..n).filter_map(|_| char::from_u32((self.next() % 0x2_0000) as u32)).collect()
    }
}

#[test]
fn random_token_soup_never_panics_and_is_bounded() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for _ in 0..4000 {
        let gold = rng.piece_string(12);
        let response = rng.piece_string(60);
        let v = timed_verify(&gold, &response);
        assert!(v.correct || v.reason.is_some());
        let _ = calc::evaluate(&response);
        // The answer compared with itself, boxed: never a panic; usually correct.
        let _ = timed_verify(&gold, &format!("\\boxed{{{gold}}}"));
    }
}

/// Prose, Unicode maths and units, glued at random: the uncommitted modes (no box), the
/// normalisation and the unit and word readers see them.
const PROSE: &[&str] = &[
    "The answer is ", "Answer: ", "**", "Total: ", "so ", "x = ", "3x + 2 = ", "17", "−", "½", "2½", "²", "⁻³",
    "³⁄₈", "∠A", "m∠", "√", "∛", "π", "∞", "ℝ", "℃", "°", "°C", "\u{a0}", "\u{2009}", "\u{200b}", "４２", "．",
    "1 000", "1.2 × 10^5", "1.2·10⁵", "1.2e-3", " x 10^", "km/h", " m/s", " cm", " mm²", " hours", " dollars and ",
    " cents", "twenty-four", "three-fourths", "one and a half", " point ", "million", "negative ", "a ", "one",
    ", which is ", " when ", ", attained at $x = 2$", " since ", " (", ")", " (out of 40)", "[", "]", "$", "$$",
    "\\(", "\\)", "\\approx", "≈", "\\over", "{", "}", "\\lim_{x\\to0}", " = ", "Given that ", "From the problem, ",
    "Let n = ", "Check: ", "Verification: ", " ✓", ".", ". ", ",", ":", "\n", "\n\n", " and ", " or ", "i", "(1+i)^2",
    "\\mathbb{R}", "\\{5\\}", "[[1, 2], [3, 4]]", "(x, y) = (3, -1)", "😀", "é", "\u{301}", "Σ", "∑", "∫",
];

#[test]
fn random_prose_never_panics() {
    let mut rng = Rng(0x0DD5_EED5_0000_0016);
    for _ in 0..4000 {
        let n = rng.below(30);
        let response: String = (0..n).map(|_| PROSE[rng.below(PROSE.len())]).collect();
        let gold: String = (0..rng.below(4)).map(|_| PROSE[rng.below(PROSE.len())]).collect();
        let v = timed_verify(&gold, &response);
        assert!(v.correct || v.reason.is_some());
        timed_verify(&response, &response);
    }
}

#[test]
fn random_unicode_never_panics() {
    let mut rng = Rng(0xC0FF_EE00_0000_0042);
    for _ in 0..1500 {
        let gold = rng.char_string(20);
        let response = rng.char_string(200);
        timed_verify(&gold, &response);
        timed_verify(&gold, &format!("\\boxed{{{response}}}"));
        let _ = calc::evaluate(&response);
    }
}

#[test]
fn safe_from_many_threads() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..200 {
                    let n = t * 1000 + i;
                    let v = verify(&n.to_string(), &format!("so \\boxed{{{n}}}"));
                    assert!(v.correct);
                    let w = verify(&format!("\\frac{{{n}}}{{7}}"), &format!("\\boxed{{{}/7}}", n + 1));
                    assert!(!w.correct);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread panicked");
    }
}
