//! Environments: where prompts come from and where rewards are decided.
//!
//! - [`env`](mod@env): the micro-turn [`Env`] trait (observation → action → observation or done), one
//!   code path for single- and multi-turn episodes.
//! - [`group`]: [`EnvGroup`] (G episodes of one problem), [`ProblemSource`] and
//!   [`GroupSource`], the deterministic, epoch-aware, resumable stream of groups.
//! - [`arith`]: the built-in arithmetic curriculum (no files) with a fixed held-out test set.
//! - [`dataset`]: JSONL math datasets (GSM8K `####`, MATH `\boxed{}`, field maps, splits).
//! - [`template`]: prompt templates (format strings or chat messages).
//! - [`math_env`] / [`calc_env`]: single-turn math and the calculator tool env.
//! - [`config`]: the serde config structs the trainer deserialises.
//!
//! Envs are text in, text out: no tokenizer, no tensors.

pub mod arith;
pub mod calc_env;
pub mod config;
pub mod dataset;
pub mod env;
pub mod error;
pub mod group;
pub mod math_env;
pub mod shuffle;
pub mod template;

mod rng;

pub use arith::{ArithConfig, ArithFormat, ArithSource, ArithSpec, Op, OpChoice, LEVELS};
pub use calc_env::{CalcEnv, CalcEnvFactory};
pub use config::{EnvConfig, EnvKind, ProblemsConfig};
pub use dataset::{AnswerFormat, DatasetConfig, FieldMap, MathDataset, OnBadLine};
pub use env::{Env, EnvFactory, Message, Observation, Problem, Role, Step};
pub use error::{DatasetError, EnvError};
pub use group::{Cursor, EnvGroup, GroupSource, ListSource, ProblemSource};
pub use math_env::{MathEnv, MathEnvFactory};
pub use shuffle::EpochShuffle;
/// The default reward of the math and calculator envs (the `rewards` crate's verifier).
pub use rewards::builtin::MathReward;
pub use template::{Prompter, Template};
