//! Errors. Every message is one line that names what to fix: the file and line for data
//! problems, the field or knob for config problems.

use std::path::PathBuf;

use thiserror::Error;

/// A problem loading a JSONL dataset.
#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        line: usize,
        source: std::io::Error,
    },
    /// Not valid JSON (or not UTF-8).
    #[error("{}:{line}: malformed JSON: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Valid JSON, but not an object (`[1,2]`, `"text"`...).
    #[error("{}:{line}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        path: PathBuf,
        line: usize,
        found: &'static str,
    },
    #[error("{}:{line}: missing field \"{field}\"", path.display())]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
    },
    #[error("{}:{line}: field \"{field}\" should be a string, found {found}", path.display())]
    FieldType {
        path: PathBuf,
        line: usize,
        field: String,
        found: &'static str,
    },
    /// The answer field has no gold answer in the configured format.
    #[error("{}:{line}: field \"{field}\" has no gold answer: {why}", path.display())]
    NoAnswer {
        path: PathBuf,
        line: usize,
        field: String,
        why: String,
    },
    /// Nothing usable in the file.
    #[error("{}: no problems (empty dataset){detail}", path.display())]
    Empty { path: PathBuf, detail: String },
    /// The seeded split left one side empty.
    #[error("{}: {why}", path.display())]
    Split { path: PathBuf, why: String },
}

impl DatasetError {
    /// Whether `on_bad_line = "skip"` may skip this error (line-level problems only).
    pub fn is_line_error(&self) -> bool {
        matches!(
            self,
            DatasetError::Malformed { .. }
                | DatasetError::NotAnObject { .. }
                | DatasetError::MissingField { .. }
                | DatasetError::FieldType { .. }
                | DatasetError::NoAnswer { .. }
        )
    }
}

/// Any error building an environment from its config.
#[derive(Debug, Error)]
pub enum EnvError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("template {template:?}: {why}")]
    Template { template: String, why: String },
    /// A bad knob in the arithmetic curriculum config.
    #[error("arith: {0}")]
    Arith(String),
    /// Any other bad config value; names the field.
    #[error("{field}: {why}")]
    Config { field: &'static str, why: String },
}
