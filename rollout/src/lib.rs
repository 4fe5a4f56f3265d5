//! The rollout engine's crate: sampler workers, micro-turn scheduling, bounded queues with
//! back-pressure, adapter snapshot publishing and staleness accounting.
//!
//! Nothing is implemented here yet: this crate is the next issue's. The pieces it will be built
//! from already exist below it (see ARCHITECTURE.md, "How the next wave plugs in"):
//! `policies::Model::forward_cached` (extend any cache rows by any number of tokens),
//! `policies::KvCache::{copy_rows_from, retain_rows}` (admit and drop sequences),
//! `policies::LoraPacker` (pack a new adapter snapshot in three tensor ops),
//! `policies::sampling::choose` (tokens with behaviour log-probs), and `envs::Env::step`.
