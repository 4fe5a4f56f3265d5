//! noregret's top crate: the CLI, experiment configs, the learner and the training loop, eval,
//! checkpoints, run directories.

pub mod bench_rollout;
pub mod checkpoint;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod eval;
pub mod experiment;
pub mod faults;
pub mod jsonl;
pub mod learner;
pub mod logging;
pub mod memory;
pub mod model_args;
pub mod optim;
pub mod plan;
pub mod remote;
pub mod report;
pub mod run_dir;
pub mod samplers;
pub mod sft;
pub mod sweep;
pub mod train;
