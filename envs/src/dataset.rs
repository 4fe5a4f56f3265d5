//! Math datasets from JSONL files.
//!
//! One JSON object per line. The config maps fields to the question and the answer, and says how
//! to find the gold answer inside the answer field:
//! - `gsm8k`: the text after the last `####` (`... so she has 7 apples.\n#### 7` → `7`);
//!   thousands separators are dropped (`1,200` → `1200`);
//! - `math`: the content of the last top-level `\boxed{...}` (or `\fbox{...}`), braces balanced;
//! - `plain`: the whole field, trimmed (numbers are accepted too).
//!
//! Bad input never panics and never passes silently: a malformed line is an error naming the
//! file and line (`data/train.jsonl:17: malformed JSON: ...`), or with `on_bad_line = "skip"` is
//! skipped and counted in a warning; a missing field names the field; a file with no problems is
//! an error. Blank lines are ignored.
//!
//! Test problems come from a separate file or from a seeded split of the training file; either
//! way, training problems whose question also appears in the test set are dropped, so the
//! evaluation is held out. Training order is a seeded shuffle, different for every epoch.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::Problem;
use crate::error::{DatasetError, EnvError};
use crate::group::ProblemSource;
use crate::shuffle::EpochShuffle;
use crate::rng::{derive, Rng};

/// How the gold answer is written in the answer field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// Reasoning, then `#### 42`. Default fields: `question`, `answer`.
    #[default]
    Gsm8k,
    /// A solution whose last `\boxed{...}` holds the answer. Default fields: `problem`,
    /// `solution`.
    Math,
    /// The field is the answer. Default fields: `question`, `answer`.
    Plain,
}

impl AnswerFormat {
    fn default_fields(self) -> (&'static str, &'static str) {
        match self {
            AnswerFormat::Gsm8k | AnswerFormat::Plain => ("question", "answer"),
            AnswerFormat::Math => ("problem", "solution"),
        }
    }
}

/// What to do with a bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadLine {
    /// Stop with an error naming the file and line.
    #[default]
    Error,
    /// Skip it, count it and log one warning per file.
    Skip,
}

/// A JSONL math dataset (TOML: the `[env.problems]` table with `source = "jsonl"`).
///
/// Relative paths are taken as they are (relative to the working directory); call
/// [`resolve_paths`](DatasetConfig::resolve_paths) to make them relative to a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Training problems.
    pub train: PathBuf,
    /// Test problems; without it, `test_fraction` of `train` is held out.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Share of `train` held out as the test set when there is no `test` file (0 ≤ f < 1;
    /// default 0.1; 0 means no test set).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split.
    #[serde(default)]
    pub split_seed: u64,
    /// Keep only the first N test problems (for quick evals).
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Seed of the per-epoch shuffle of training problems.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub answer_format: AnswerFormat,
    /// Field holding the question (default: `question`, or `problem` for `math`).
    #[serde(default)]
    pub question_field: Option<String>,
    /// Field holding the answer (default: `answer`, or `solution` for `math`).
    #[serde(default)]
    pub answer_field: Option<String>,
    /// Field holding a problem id (default: none; ids are `file-stem:line`).
    #[serde(default)]
    pub id_field: Option<String>,
    #[serde(default)]
    pub on_bad_line: OnBadLine,
}

fn default_test_fraction() -> f64 {
    0.1
}

impl DatasetConfig {
    /// A config for `train` with every other field at its default.
    pub fn new(train: impl Into<PathBuf>, answer_format: AnswerFormat) -> Self {
        DatasetConfig {
            train: train.into(),
            test: None,
            test_fraction: default_test_fraction(),
            split_seed: 0,
            test_limit: None,
            seed: 0,
            answer_format,
            question_field: None,
            answer_field: None,
            id_field: None,
            on_bad_line: OnBadLine::Error,
        }
    }

    /// Make relative paths relative to `base` (e.g. the directory of the config file).
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.train.is_relative() {
            self.train = base.join(&self.train);
        }
        if let Some(t) = &mut self.test {
            if t.is_relative() {
                *t = base.join(&*t);
            }
        }
    }

    /// The field map this config uses.
    pub fn fields(&self) -> FieldMap {
        let (q, a) = self.answer_format.default_fields();
        FieldMap {
            question: self.question_field.clone().unwrap_or_else(|| q.into()),
            answer: self.answer_field.clone().unwrap_or_else(|| a.into()),
            id: self.id_field.clone(),
            format: self.answer_format,
        }
    }

    /// Load the files and split them.
    pub fn build(&self) -> Result<MathDataset, EnvError> {
        MathDataset::load(self)
    }
}

/// Which JSON fields hold what, and how the answer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    pub question: String,
    pub answer: String,
    pub id: Option<String>,
    pub format: AnswerFormat,
}

/// The problems of one file, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub problems: Vec<Problem>,
    /// Lines skipped under `on_bad_line = "skip"`.
    pub skipped: usize,
    /// The first skipped line's error, for the warning.
    pub first_skipped: Option<String>,
}

/// Read one JSONL file.
pub fn load_jsonl(
    path: &Path,
    fields: &FieldMap,
    on_bad_line: OnBadLine,
) -> Result<Loaded, DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::Open {
        path: path.into(),
        source: e,
    })?;
    let mut reader = BufReader::new(file);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Loaded::default();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DatasetError::Read {
                path: path.into(),
                line: line_no + 1,
                source: e,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        match parse_line(path, &stem, line_no, &buf, fields) {
            Ok(Some(p)) => out.problems.push(p),
            Ok(None) => {}
            Err(e) if on_bad_line == OnBadLine::Skip && e.is_line_error() => {
                out.skipped += 1;
                if out.first_skipped.is_none() {
                    out.first_skipped = Some(e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    if out.skipped > 0 {
        tracing::warn!(
            "{}: skipped {} bad line(s); first: {}",
            path.display(),
            out.skipped,
            out.first_skipped.as_deref().unwrap_or("")
        );
    }
    if out.problems.is_empty() {
        let detail = match &out.first_skipped {
            Some(first) => format!(" ({} bad line(s) skipped; first: {first})", out.skipped),
            None => String::new(),
        };
        return Err(DatasetError::Empty {
            path: path.into(),
            detail,
        });
    }
    Ok(out)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One line → a problem, `None` for a blank line.
fn parse_line(
    path: &Path,
    stem: &str,
    line: usize,
    raw: &[u8],
    fields: &FieldMap,
) -> Result<Option<Problem>, DatasetError> {
    let malformed = |message: String| DatasetError::Malformed {
        path: path.into(),
        line,
        message,
    };
    let text = std::str::from_utf8(raw).map_err(|e| malformed(format!("invalid UTF-8: {e}")))?;
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json says "at line 1 column N" about our single line; keep only the column.
        let msg = e.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        malformed(format!("{msg} (column {})", e.column()))
    })?;
    let Value::Object(obj) = &value else {
        return Err(DatasetError::NotAnObject {
            path: path.into(),
            line,
            found: json_kind(&value),
        });
    };
    let get = |field: &str, numbers_ok: bool| -> Result<String, DatasetError> {
        match obj.get(field) {
            None => Err(DatasetError::MissingField {
                path: path.into(),
                line,
                field: field.into(),
            }),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if numbers_ok => Ok(n.to_string()),
            Some(v) => Err(DatasetError::FieldType {
                path: path.into(),
                line,
                field: field.into(),
                found: json_kind(v),
            }),
        }
    };
    let question = get(&fields.question, false)?;
    if question.trim().is_empty() {
        return Err(DatasetError::NoAnswer {
            path: path.into(),
            line,
            field: fields.question.clone(),
            why: "the question is empty".into(),
        });
    }
    let raw_answer = get(&fields.answer, true)?;
    let answer =
        extract_gold(&raw_answer, fields.format).map_err(|why| DatasetError::NoAnswer {
            path: path.into(),
            line,
            field: fields.answer.clone(),
            why,
        })?;
    let id = match &fields.id {
        Some(f) => get(f, true)?,
        None => format!("{stem}:{line}"),
    };
    Ok(Some(Problem {
        id,
        question,
        answer,
    }))
}

/// The gold answer inside an answer field, or why there is none.
pub fn extract_gold(field: &str, format: AnswerFormat) -> Result<String, String> {
    let answer = match format {
        AnswerFormat::Gsm8k => {
            gsm8k_answer(field).ok_or_else(|| "no \"####\" answer marker".to_string())?
        }
        AnswerFormat::Math => {
            last_boxed(field)?.ok_or_else(|| "no \\boxed{...} answer".to_string())?
        }
        AnswerFormat::Plain => field.trim().to_string(),
    };
    if answer.is_empty() {
        return Err("the answer is empty".into());
    }
    Ok(answer)
}

/// GSM8K: the text after the last `####`, trimmed, with thousands separators dropped from a
/// plain number.
pub fn gsm8k_answer(field: &str) -> Option<String> {
    let i = field.rfind("####")?;
    let a = field[i + 4..].trim();
    let no_commas: String = a.chars().filter(|&c| c != ',').collect();
    let is_number = !no_commas.is_empty()
        && no_commas
            .trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && no_commas.chars().any(|c| c.is_ascii_digit());
    Some(if a.contains(',') && is_number {
        no_commas
    } else {
        a.to_string()
    })
}

/// MATH: the content of the last top-level `\boxed{...}` / `\fbox{...}` (`\boxed 5` also works).
/// `Err` for an unbalanced box, `Ok(None)` when there is none.
pub fn last_boxed(text: &str) -> Result<Option<String>, String> {
    let mut found = None;
    let mut rest = 0usize; // byte offset where the search resumes
    loop {
        let hay = &text[rest..];
        let next = [r"\boxed", r"\fbox"]
            .iter()
            .filter_map(|m| hay.find(m).map(|i| (i, m.len())))
            .min();
        let Some((i, len)) = next else { break };
        let start = rest + i + len;
        let after = &text[start..];
        let trimmed = after.trim_start();
        let skip = after.len() - trimmed.len();
        if let Some(body) = trimmed.strip_prefix('{') {
            let mut depth = 1usize;
            let mut end = None;
            let mut chars = body.char_indices();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(j) = end else {
                return Err("unbalanced braces after \\boxed{".into());
            };
            found = Some(body[..j].trim().to_string());
            rest = start + skip + 1 + j + 1;
        } else if skip > 0 && !trimmed.is_empty() {
            // `\boxed 5`: one token.
            let tok: String = trimmed
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '$')
                .collect();
            rest = start + skip + tok.len();
            if !tok.is_empty() {
                found = Some(tok);
            }
        } else {
            // `\boxedfoo` or a bare `\boxed` at the end: not a box.
            rest = start;
        }
    }
    Ok(found)
}

const TAG_SPLIT: u64 = 0x0073_706C_6974; // "split"

/// How the dataset was assembled, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub train_skipped: usize,
    pub test_skipped: usize,
    /// Training problems dropped because their question is also in the test set.
    pub overlap_removed: usize,
}

/// A loaded JSONL math dataset: training problems (shuffled per epoch) and a test set.
#[derive(Debug)]
pub struct MathDataset {
    name: String,
    train: Vec<Arc<Problem>>,
    test: Vec<Arc<Problem>>,
    shuffle: EpochShuffle,
    report: LoadReport,
}

impl MathDataset {
    pub fn load(cfg: &DatasetConfig) -> Result<Self, EnvError> {
        if !(0.0..1.0).contains(&cfg.test_fraction) {
            return Err(EnvError::Config {
                field: "test_fraction",
                why: format!("{} is not in [0, 1)", cfg.test_fraction),
            });
        }
        let fields = cfg.fields();
        let loaded = load_jsonl(&cfg.train, &fields, cfg.on_bad_line)?;
        let mut report = LoadReport {
            train_skipped: loaded.skipped,
            ..Default::default()
        };
        let (mut train, mut test) = match &cfg.test {
            Some(test_path) => {
                let t = load_jsonl(test_path, &fields, cfg.on_bad_line)?;
                report.test_skipped = t.skipped;
                (loaded.problems, t.problems)
            }
            None => split(
                &cfg.train,
                loaded.problems,
                cfg.test_fraction,
                cfg.split_seed,
            )?,
        };
        if let Some(limit) = cfg.test_limit {
            test.truncate(limit);
        }
        let held_out: HashSet<&str> = test.iter().map(|p| p.question.trim()).collect();
        let before = train.len();
        train.retain(|p| !held_out.contains(p.question.trim()));
        report.overlap_removed = before - train.len();
        if train.is_empty() {
            return Err(DatasetError::Split {
                path: cfg.train.clone(),
                why: "every training problem is also in the test set; no training problems left"
                    .into(),
            }
            .into());
        }
        if report.overlap_removed > 0 {
            tracing::warn!(
                "{}: dropped {} training problem(s) that also appear in the test set",
                cfg.train.display(),
                report.overlap_removed
            );
        }
        let name = cfg
            .train
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "jsonl".into());
        Ok(MathDataset {
            name,
            shuffle: EpochShuffle::new(train.len(), cfg.seed),
            train: train.into_iter().map(Arc::new).collect(),
            test: test.into_iter().map(Arc::new).collect(),
            report,
        })
    }

    pub fn train(&self) -> &[Arc<Problem>] {
        &self.train
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }
}

/// Seeded split: a shuffled `fraction` of the problems (at least one when `fraction > 0`)
/// becomes the test set, in file order; the rest stays for training, in file order.
fn split(
    path: &Path,
    problems: Vec<Problem>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<Problem>, Vec<Problem>), DatasetError> {
    let n = problems.len();
    if fraction <= 0.0 {
        return Ok((problems, Vec::new()));
    }
    let n_test = ((n as f64 * fraction).round() as usize).max(1);
    if n_test >= n {
        return Err(DatasetError::Split {
            path: path.into(),
            why: format!(
                "test_fraction = {fraction} of {n} problem(s) leaves no training problems; add problems, lower test_fraction or give a test file"
            ),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(derive(&[seed, TAG_SPLIT])).shuffle(&mut order);
    let mut is_test = vec![false; n];
    for &i in &order[..n_test] {
        is_test[i] = true;
    }
    let (mut train, mut test) = (Vec::with_capacity(n - n_test), Vec::with_capacity(n_test));
    for (p, t) in problems.into_iter().zip(is_test) {
        if t {
            test.push(p)
        } else {
            train.push(p)
        }
    }
    Ok((train, test))
}

impl ProblemSource for MathDataset {
    fn name(&self) -> &str {
        &self.name
    }

    fn epoch_len(&self) -> Option<u64> {
        Some(self.train.len() as u64)
    }

    fn train_problem(&self, epoch: u64, index: u64) -> Option<Arc<Problem>> {
        self.train.get(self.shuffle.get(epoch, index)?).cloned()
    }

    fn test_set(&self) -> &[Arc<Problem>] {
        &self.test
    }
}
