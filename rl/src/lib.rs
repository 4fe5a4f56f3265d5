//! noregret's top crate: the CLI and (in later issues) the learner, trainer loop and configs.

pub mod cli;
pub mod cmd;
pub mod jsonl;
pub mod logging;
pub mod memory;
pub mod optim;
