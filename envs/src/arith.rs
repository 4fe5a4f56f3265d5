//! The built-in arithmetic curriculum: a seeded problem generator that needs no files.
//!
//! It powers the default demo (a sub-million-parameter model trained from scratch on CPU), so
//! problems are short, the plain format uses only the characters `0-9 + - * / =` (the `addsub2`
//! demo needs `0-9 + - =`), and difficulty moves with a few knobs.
//!
//! # Levels
//!
//! | level     | expression            | operands                  | steps | example              |
//! |-----------|-----------------------|---------------------------|-------|----------------------|
//! | `add1`    | `a+b`                 | 0–9                       | 1     | `3+5=` → `8`         |
//! | `add2`    | `a+b`                 | 0–99                      | 1     | `12+35=` → `47`      |
//! | `sub2`    | `a-b`                 | 0–99                      | 1     | `12-35=` → `-23`     |
//! | `addsub2` | `a+b-c` (the default) | 0–99                      | 2     | `12+35-8=` → `39`    |
//! | `add3`    | `a+b`                 | 0–999                     | 1     | `123+456=` → `579`   |
//! | `chain2`  | `a±b±c±d`             | 0–99                      | 3     | `40-7+12-3=` → `42`  |
//! | `mul1`    | `a*b`                 | 0–9                       | 1     | `7*8=` → `56`        |
//! | `muldiv`  | `a*b` or `a/b`        | 0–12 (dividend `b×q`)     | 1     | `84/7=` → `12`       |
//! | `mixed`   | `a∘b∘c`, ∘ ∈ `+ - *`  | 0–20                      | 2     | `3+4*5=` → `23`      |
//!
//! `addsub2` is the calibration task (`a+b-c=`, operands 0..=99, answer may be negative).
//!
//! # Knobs
//!
//! A level sets defaults; any knob given explicitly overrides it: `digits` (operands
//! `0..=10^digits-1`), `min_operand`/`max_operand`, `operators` (a set such as `"+-*"`, one drawn
//! uniformly per step), `pattern` (a fixed operator sequence such as `"+-"`, which also fixes
//! the number of steps; a level's pattern is dropped when `operators` or `steps` is set),
//! `steps`, `allow_negative`, `format` (`plain`: `12+35-8=` → `39`; `sentence`:
//! `What is 12 + 35 - 8?` → `39`).
//!
//! Expressions follow the usual precedence (`*` and `/` before `+` and `-`). Divisions are always
//! exact: the first operand of a `*`/`/` chain is `q ×` (the product of the chain's divisors),
//! with `q` drawn from the operand range, so it may exceed `max_operand`.
//!
//! # Held-out test set
//!
//! `test_size` distinct problems drawn from `test_seed` alone (not from the training `seed`), so
//! the test set stays fixed when the training seed changes. The training stream redraws any
//! problem whose expression is in the test set, so the two never overlap. Problem `i` of the
//! training stream depends only on `(seed, i)`: streams are reproducible and resumable.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::env::Problem;
use crate::error::EnvError;
use crate::group::ProblemSource;
use crate::rng::{derive, Rng};

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }

    fn parse(c: char) -> Option<Op> {
        match c {
            '+' => Some(Op::Add),
            '-' => Some(Op::Sub),
            '*' | 'x' | '×' => Some(Op::Mul),
            '/' | '÷' => Some(Op::Div),
            _ => None,
        }
    }

    fn multiplicative(self) -> bool {
        matches!(self, Op::Mul | Op::Div)
    }
}

/// How a problem is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithFormat {
    /// `12+35-8=` → `39`: compact, for character-level models.
    #[default]
    Plain,
    /// `What is 12 + 35 - 8?` → `39`: for pretrained language models.
    Sentence,
}

/// The curriculum config (TOML: the `[env.problems]` table with `source = "arith"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArithConfig {
    /// Named level (see the module docs); default `addsub2`.
    #[serde(default = "default_level")]
    pub level: String,
    /// Operands are `0..=10^digits - 1`.
    #[serde(default)]
    pub digits: Option<u32>,
    #[serde(default)]
    pub min_operand: Option<i64>,
    #[serde(default)]
    pub max_operand: Option<i64>,
    /// Operator set, one drawn uniformly per step, e.g. `"+-*"`.
    #[serde(default)]
    pub operators: Option<String>,
    /// Fixed operator sequence, e.g. `"+-"` for `a+b-c`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Number of operations (`a+b-c` is 2).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Whether answers may be negative (problems with negative answers are redrawn if not).
    #[serde(default)]
    pub allow_negative: Option<bool>,
    #[serde(default)]
    pub format: Option<ArithFormat>,
    /// Seed of the training stream.
    #[serde(default)]
    pub seed: u64,
    /// Held-out test problems (default: 500, or a tenth of the problem space if smaller).
    #[serde(default)]
    pub test_size: Option<usize>,
    /// Seed of the test set, independent of `seed`.
    #[serde(default = "default_test_seed")]
    pub test_seed: u64,
}

fn default_level() -> String {
    "addsub2".into()
}

fn default_test_seed() -> u64 {
    DEFAULT_TEST_SEED
}

/// The default seed of the held-out test set.
pub const DEFAULT_TEST_SEED: u64 = 0x07E5_75E7;

impl Default for ArithConfig {
    fn default() -> Self {
        ArithConfig::level("addsub2")
    }
}

impl ArithConfig {
    /// A config for a named level with every knob at its level default.
    pub fn level(name: &str) -> Self {
        ArithConfig {
            level: name.into(),
            digits: None,
            min_operand: None,
            max_operand: None,
            operators: None,
            pattern: None,
            steps: None,
            allow_negative: None,
            format: None,
            seed: 0,
            test_size: None,
            test_seed: DEFAULT_TEST_SEED,
        }
    }

    /// Resolve the level and knobs into a checked spec.
    pub fn spec(&self) -> Result<ArithSpec, EnvError> {
        let err = |m: String| EnvError::Arith(m);
        let mut spec = ArithSpec::level(&self.level).ok_or_else(|| {
            err(format!(
                "unknown level {:?}; known levels: {}",
                self.level,
                LEVELS.join(", ")
            ))
        })?;
        if let Some(d) = self.digits {
            if d == 0 || d > 9 {
                return Err(err(format!("digits = {d}: must be 1..=9")));
            }
            spec.min_operand = 0;
            spec.max_operand = 10i64.pow(d) - 1;
        }
        if let Some(m) = self.min_operand {
            spec.min_operand = m;
        }
        if let Some(m) = self.max_operand {
            spec.max_operand = m;
        }
        let parse_ops = |field: &str, s: &str| -> Result<Vec<Op>, EnvError> {
            s.chars()
                .filter(|c| !c.is_whitespace() && *c != ',')
                .map(|c| {
                    Op::parse(c).ok_or_else(|| {
                        err(format!(
                            "{field} = {s:?}: unknown operator {c:?} (use + - * /)"
                        ))
                    })
                })
                .collect()
        };
        if let Some(p) = &self.pattern {
            let ops = parse_ops("pattern", p)?;
            if let Some(n) = self.steps {
                if n != ops.len() {
                    return Err(err(format!(
                        "pattern {p:?} has {} steps but steps = {n}",
                        ops.len()
                    )));
                }
            }
            spec.ops = OpChoice::Pattern(ops);
        } else if self.operators.is_some() || self.steps.is_some() {
            let ops = match &self.operators {
                Some(s) => {
                    let mut v = parse_ops("operators", s)?;
                    let mut seen = HashSet::new();
                    v.retain(|o| seen.insert(*o));
                    v
                }
                None => spec.ops.operator_set(),
            };
            let steps = self.steps.unwrap_or_else(|| spec.ops.steps());
            spec.ops = OpChoice::Random { ops, steps };
        }
        if let Some(a) = self.allow_negative {
            spec.allow_negative = a;
        }
        if let Some(f) = self.format {
            spec.format = f;
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Build the problem source: the spec, the test set and the training stream.
    pub fn build(&self) -> Result<ArithSource, EnvError> {
        ArithSource::new(self.spec()?, self.seed, self.test_size, self.test_seed)
    }
}

/// Names of the built-in levels.
pub const LEVELS: &[&str] = &[
    "add1", "add2", "sub2", "addsub2", "add3", "chain2", "mul1", "muldiv", "mixed",
];

/// Which operators a problem uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpChoice {
    /// The same sequence every time (`+-` → `a+b-c`).
    Pattern(Vec<Op>),
    /// `steps` operators, each drawn uniformly from `ops`.
    Random { ops: Vec<Op>, steps: usize },
}

impl OpChoice {
    pub fn steps(&self) -> usize {
        match self {
            OpChoice::Pattern(v) => v.len(),
            OpChoice::Random { steps, .. } => *steps,
        }
    }

    fn operator_set(&self) -> Vec<Op> {
        let mut v: Vec<Op> = match self {
            OpChoice::Pattern(v) => v.clone(),
            OpChoice::Random { ops, .. } => ops.clone(),
        };
        let mut seen = HashSet::new();
        v.retain(|o| seen.insert(*o));
        v
    }
}

/// A resolved, checked generator spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArithSpec {
    pub min_operand: i64,
    pub max_operand: i64,
    pub ops: OpChoice,
    pub allow_negative: bool,
    pub format: ArithFormat,
}

impl ArithSpec {
    /// The spec of a named level, or `None` if there is no such level.
    pub fn level(name: &str) -> Option<ArithSpec> {
        use Op::*;
        let (max, ops) = match name {
            "add1" => (9, OpChoice::Pattern(vec![Add])),
            "add2" => (99, OpChoice::Pattern(vec![Add])),
            "sub2" => (99, OpChoice::Pattern(vec![Sub])),
            "addsub2" => (99, OpChoice::Pattern(vec![Add, Sub])),
            "add3" => (999, OpChoice::Pattern(vec![Add])),
            "chain2" => (
                99,
                OpChoice::Random {
                    ops: vec![Add, Sub],
                    steps: 3,
                },
            ),
            "mul1" => (9, OpChoice::Pattern(vec![Mul])),
            "muldiv" => (
                12,
                OpChoice::Random {
                    ops: vec![Mul, Div],
                    steps: 1,
                },
            ),
            "mixed" => (
                20,
                OpChoice::Random {
                    ops: vec![Add, Sub, Mul],
                    steps: 2,
                },
            ),
            _ => return None,
        };
        Some(ArithSpec {
            min_operand: 0,
            max_operand: max,
            ops,
            allow_negative: true,
            format: ArithFormat::Plain,
        })
    }

    /// Check ranges and operators (specs can be built by hand, so [`ArithSource::new`] checks
    /// again).
    pub fn validate(&self) -> Result<(), EnvError> {
        let err = |m: String| EnvError::Arith(m);
        let spec = self;
        if spec.min_operand < 0 {
            return Err(err(format!(
                "min_operand = {}: must be >= 0",
                spec.min_operand
            )));
        }
        if spec.max_operand < spec.min_operand || spec.max_operand > 999_999_999 {
            return Err(err(format!(
                "operand range {}..={} is empty or too large (max 999999999)",
                spec.min_operand, spec.max_operand
            )));
        }
        match &spec.ops {
            OpChoice::Pattern(v) | OpChoice::Random { ops: v, .. } if v.is_empty() => {
                return Err(err("no operators given".into()))
            }
            _ => {}
        }
        let steps = spec.ops.steps();
        if steps == 0 || steps > 8 {
            return Err(err(format!("steps = {steps}: must be 1..=8")));
        }
        Ok(())
    }

    /// Upper bound on the number of distinct expressions (saturating).
    pub fn space_size(&self) -> u128 {
        let range = (self.max_operand - self.min_operand + 1) as u128;
        let steps = self.ops.steps() as u32;
        let op_choices = match &self.ops {
            OpChoice::Pattern(_) => 1u128,
            OpChoice::Random { ops, .. } => (ops.len() as u128).saturating_pow(steps),
        };
        range.saturating_pow(steps + 1).saturating_mul(op_choices)
    }

    /// Draw one problem and its answer. `None` when the draw is rejected (negative answer not
    /// allowed, or an overflow); callers draw again.
    fn draw(&self, rng: &mut Rng) -> Option<(Expr, i64)> {
        let steps = self.ops.steps();
        let ops: Vec<Op> = match &self.ops {
            OpChoice::Pattern(v) => v.clone(),
            OpChoice::Random { ops, steps } => {
                (0..*steps).map(|_| ops[rng.below(ops.len())]).collect()
            }
        };
        let (lo, hi) = (self.min_operand, self.max_operand);
        let mut nums: Vec<i64> = Vec::with_capacity(steps + 1);
        nums.push(rng.range_i64(lo, hi));
        for op in &ops {
            let n = if *op == Op::Div {
                rng.range_i64(lo.max(1), hi.max(1))
            } else {
                rng.range_i64(lo, hi)
            };
            nums.push(n);
        }
        // Make every division exact: the head of each multiplicative chain becomes
        // q × (product of the chain's divisors).
        let mut i = 0;
        while i < ops.len() {
            if !ops[i].multiplicative() {
                i += 1;
                continue;
            }
            let head = i; // nums[head] starts the chain
            let mut divisors: i64 = 1;
            let mut j = i;
            while j < ops.len() && ops[j].multiplicative() {
                if ops[j] == Op::Div {
                    divisors = divisors.checked_mul(nums[j + 1])?;
                }
                j += 1;
            }
            if divisors != 1 {
                nums[head] = nums[head].checked_mul(divisors)?;
            }
            i = j;
        }
        let expr = Expr { nums, ops };
        let value = expr.eval()?;
        if !self.allow_negative && value < 0 {
            return None;
        }
        Some((expr, value))
    }

    fn render(&self, e: &Expr, value: i64, id: String) -> Problem {
        let question = match self.format {
            ArithFormat::Plain => format!("{}=", e.text("")),
            ArithFormat::Sentence => format!("What is {}?", e.text(" ")),
        };
        Problem {
            id,
            question,
            answer: value.to_string(),
        }
    }
}

/// An expression `nums[0] ops[0] nums[1] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    nums: Vec<i64>,
    ops: Vec<Op>,
}

impl Expr {
    fn text(&self, sep: &str) -> String {
        let mut s = self.nums[0].to_string();
        for (op, n) in self.ops.iter().zip(&self.nums[1..]) {
            s.push_str(sep);
            s.push(op.symbol());
            s.push_str(sep);
            s.push_str(&n.to_string());
        }
        s
    }

    /// Value with the usual precedence; `None` on overflow or inexact division.
    fn eval(&self) -> Option<i64> {
        let mut total: i64 = 0;
        let mut sign: i64 = 1;
        let mut term: i64 = self.nums[0];
        for (op, &n) in self.ops.iter().zip(&self.nums[1..]) {
            match op {
                Op::Mul => term = term.checked_mul(n)?,
                Op::Div => {
                    if n == 0 || term % n != 0 {
                        return None;
                    }
                    term /= n;
                }
                Op::Add | Op::Sub => {
                    total = total.checked_add(sign.checked_mul(term)?)?;
                    sign = if *op == Op::Add { 1 } else { -1 };
                    term = n;
                }
            }
        }
        total.checked_add(sign.checked_mul(term)?)
    }
}

const TAG_TRAIN: u64 = 0x0074_7261_696E; // "train"
const TAG_TEST: u64 = 0x7465_7374; // "test"
/// Draws per problem before giving up (only reachable with absurd knob settings, which the
/// build-time checks reject).
const MAX_DRAWS: usize = 10_000;

/// The arithmetic problem source: an endless training stream and a fixed test set.
#[derive(Debug, Clone)]
pub struct ArithSource {
    name: String,
    spec: ArithSpec,
    seed: u64,
    test: Vec<Arc<Problem>>,
    test_ids: HashSet<String>,
}

impl ArithSource {
    /// `test_size = None` picks 500, or a tenth of the problem space if that is smaller.
    pub fn new(
        spec: ArithSpec,
        seed: u64,
        test_size: Option<usize>,
        test_seed: u64,
    ) -> Result<Self, EnvError> {
        spec.validate()?;
        let space = spec.space_size();
        let test_size = match test_size {
            Some(n) => {
                if (n as u128).saturating_mul(2) > space {
                    return Err(EnvError::Arith(format!(
                        "test_size = {n} is more than half of the at most {space} distinct problems; lower it"
                    )));
                }
                n
            }
            None => (space / 10).min(500) as usize,
        };
        // The test set: the first `test_size` distinct problems of the test seed's stream.
        let mut rng = Rng::new(derive(&[test_seed, TAG_TEST]));
        let mut test = Vec::with_capacity(test_size);
        let mut test_ids = HashSet::with_capacity(test_size);
        let budget = test_size.saturating_mul(20).saturating_add(1000);
        let mut draws = 0;
        while test.len() < test_size && draws < budget {
            draws += 1;
            let Some((e, value)) = spec.draw(&mut rng) else {
                continue;
            };
            let id = e.text("");
            if test_ids.contains(&id) {
                continue;
            }
            test_ids.insert(id.clone());
            test.push(Arc::new(spec.render(&e, value, id)));
        }
        if test.len() < test_size {
            return Err(EnvError::Arith(format!(
                "found only {} distinct test problems in {budget} draws (test_size = {test_size}); the problem space is too small, lower test_size",
                test.len()
            )));
        }
        let src = ArithSource {
            name: "arith".into(),
            spec,
            seed,
            test,
            test_ids,
        };
        // Make sure the training stream is not starved by the test set (e.g. a tiny level with
        // a large test set): a sample of raw draws must mostly fall outside it.
        let mut rng = Rng::new(derive(&[seed, TAG_TRAIN, u64::MAX]));
        let (mut ok, mut total) = (0, 0);
        for _ in 0..2000 {
            if let Some((e, _)) = src.spec.draw(&mut rng) {
                total += 1;
                if !src.test_ids.contains(&e.text("")) {
                    ok += 1;
                }
            }
        }
        if total < 200 || ok * 2 < total {
            return Err(EnvError::Arith(format!(
                "the training stream is starved: only {ok} of 2000 draws are usable training problems; widen the operand range, allow negatives or lower test_size"
            )));
        }
        Ok(src)
    }

    pub fn spec(&self) -> &ArithSpec {
        &self.spec
    }

    /// Whether a problem id (canonical expression such as `12+35-8`) is held out.
    pub fn is_test(&self, id: &str) -> bool {
        self.test_ids.contains(id)
    }
}

impl ProblemSource for ArithSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn epoch_len(&self) -> Option<u64> {
        None
    }

    fn train_problem(&self, epoch: u64, index: u64) -> Option<Arc<Problem>> {
        let mut rng = Rng::new(derive(&[self.seed, TAG_TRAIN, epoch, index]));
        for _ in 0..MAX_DRAWS {
            let Some((e, value)) = self.spec.draw(&mut rng) else {
                continue;
            };
            let id = e.text("");
            if self.test_ids.contains(&id) {
                continue;
            }
            return Some(Arc::new(self.spec.render(&e, value, id)));
        }
        None
    }

    fn test_set(&self) -> &[Arc<Problem>] {
        &self.test
    }
}
