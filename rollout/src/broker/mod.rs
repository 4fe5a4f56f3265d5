//! Samplers on other machines: the learner and remote sampler processes meet on a Redis server
//! and talk only through the keys below (all under one prefix, `noregret` by default).
//!
//! | key | type | written by | holds |
//! | --- | --- | --- | --- |
//! | `P:learner` | hash | learner | incarnation, base-model fingerprint, sampling contract, run, state, heartbeat |
//! | `P:adapter` | hash | learner | the newest adapter version: a JSON header and the flat f32 buffer |
//! | `P:versions` | stream | learner | one entry per published version (wakes samplers' mirrors) |
//! | `P:work` | stream, group `samplers` | learner | groups the lag budget lets start, with their problems |
//! | `P:groups` | stream, group `learner` | samplers | finished trajectory groups |
//! | `P:stats` | hash | samplers | counters the learner turns into rates (tokens, swaps, latency) |
//! | `P:trimmed` | counter | samplers | groups dropped by the stream cap |
//! | `P:incarnations` | counter | learner | one number per learner start, so a resumed learner is told from its past self |
//!
//! The learner stays authoritative over the data order and the lag budget: its [`Dispenser`]
//! decides what may start, [`feeder`] writes exactly that into `P:work`, and samplers only
//! play what they find there. See ARCHITECTURE.md for acks, claims and caps.
//!
//! [`Dispenser`]: crate::work::Dispenser

pub mod conn;
pub mod feeder;
pub mod learner;
pub mod local_server;
pub mod sampler;
pub mod wire;

use std::time::Duration;

pub use conn::{BrokerError, Conn, Endpoint, Result};

/// The consumer group the learner reads groups through, and its one consumer.
pub const LEARNER_GROUP: &str = "learner";
/// The consumer group every sampler process reads work through (each its own consumer).
pub const SAMPLER_GROUP: &str = "samplers";

/// Everything both sides need to find each other and agree on limits.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub endpoint: Endpoint,
    /// Key prefix, so several runs can share a server.
    pub prefix: String,
    /// Work held this long by a sampler that stopped renewing it is given to another.
    pub claim_after: Duration,
    /// Most finished groups kept on the server; older ones are trimmed (and counted).
    pub max_groups: usize,
    /// Most released-but-unfinished groups in the work stream.
    pub max_work: usize,
}

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn learner(&self) -> String {
        self.key("learner")
    }
    pub fn adapter(&self) -> String {
        self.key("adapter")
    }
    pub fn versions(&self) -> String {
        self.key("versions")
    }
    pub fn work(&self) -> String {
        self.key("work")
    }
    pub fn groups(&self) -> String {
        self.key("groups")
    }
    pub fn stats(&self) -> String {
        self.key("stats")
    }
    pub fn trimmed(&self) -> String {
        self.key("trimmed")
    }
    pub fn incarnations(&self) -> String {
        self.key("incarnations")
    }
}
