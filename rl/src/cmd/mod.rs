//! One module per subcommand.

pub mod init_model;
pub mod logprobs;
pub mod sample;
