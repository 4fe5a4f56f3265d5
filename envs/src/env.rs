//! The micro-turn environment API.
//!
//! One trait serves both single-turn tasks (a math question, one answer) and interactive ones
//! (the model calls a tool, the environment answers, the model continues). An episode is:
//!
//! 1. [`Env::initial_observation`]: the prompt to render (plain text, or chat messages that the
//!    policy renders with the model's chat template).
//! 2. The sampler generates one *turn*: tokens until end-of-sequence or until one of
//!    [`Env::stop_strings`] appears.
//! 3. [`Env::step`] receives the turn's text and answers [`Step::Continue`] (text to append to the
//!    sequence — the sampler tokenises it, appends it and masks it out of the loss — after which
//!    the model generates the next turn) or [`Step::Done`] (reward and metrics).
//!
//! Single-turn math is simply an env whose first `step` always returns `Done`, so the rollout
//! side has exactly one code path. Envs are text in, text out: they know nothing of tokenisers
//! or tensors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The common record every problem source produces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// Stable identifier: `file-stem:line` for JSONL datasets, the canonical expression
    /// (e.g. `12+35-8`) for the arithmetic curriculum. Used in logs, eval reports and for
    /// train/test disjointness.
    pub id: String,
    /// The question text, before any prompt template is applied.
    pub question: String,
    /// The gold answer as text (already extracted: `42`, not the whole GSM8K rationale).
    pub answer: String,
}

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role name chat templates expect (`system`, `user`, `assistant`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// What the model is shown at the start of an episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// Already-rendered text; the policy tokenises it as is (it may add a BOS token).
    Text(String),
    /// Messages to render with the model's chat template. `add_generation_prompt` asks the
    /// template to open the assistant turn, as it should before sampling.
    Chat {
        messages: Vec<Message>,
        add_generation_prompt: bool,
    },
}

impl Observation {
    /// A plain-text view for logs, and for rewards that want the prompt: the text itself, or the
    /// messages' contents joined by blank lines (no template markup).
    pub fn plain_text(&self) -> String {
        match self {
            Observation::Text(t) => t.clone(),
            Observation::Chat { messages, .. } => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// What [`Env::step`] answers at a turn boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The episode goes on: append `observation` to the sequence (masked out of the loss) and let
    /// the model generate its next turn.
    Continue { observation: String },
    /// The episode is over.
    Done {
        reward: f64,
        metrics: BTreeMap<String, f64>,
    },
}

impl Step {
    pub fn is_done(&self) -> bool {
        matches!(self, Step::Done { .. })
    }
}

/// An episode of interaction with one problem.
///
/// Contract for the caller (the rollout side):
/// - call [`initial_observation`](Env::initial_observation) once to build the prompt;
/// - generate a turn, ending it at EOS or right after the first occurrence of any
///   [`stop_strings`](Env::stop_strings) entry (text generated past it is cut off);
/// - pass the turn's text to [`step`](Env::step) *including* the stop string that ended it
///   (without special tokens such as EOS);
/// - on [`Step::Continue`], append the observation and go on; on [`Step::Done`], stop.
///
/// If generation is cut by a token budget, pass what was generated: the env treats a turn
/// that made no tool call as the final answer. Every env caps its number of turns, so an
/// episode always ends. Calling `step` after `Done` returns the same `Done` again.
pub trait Env: Send {
    /// The prompt of the episode.
    fn initial_observation(&self) -> Observation;
    /// Strings that end a turn early (besides EOS), e.g. `</calc>`.
    fn stop_strings(&self) -> &[String];
    /// Consume one turn of the model and answer.
    fn step(&mut self, action: &str) -> Step;
    /// The problem this episode is about.
    fn problem(&self) -> &Arc<Problem>;
}

/// Builds episodes for problems. One factory per task (single-turn math, calculator...), shared
/// by all groups.
pub trait EnvFactory: Send + Sync {
    /// Short name for logs (`math`, `calc`).
    fn name(&self) -> &str;
    /// A fresh episode for `problem`.
    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env>;
}
