//! One module per subcommand.

pub mod adapter;
pub mod bench;
pub mod eval;
pub mod export;
pub mod init_model;
pub mod logprobs;
pub mod sample;
pub mod sampler;
pub mod sft;
pub mod sweep;
pub mod train;
pub mod verify;
