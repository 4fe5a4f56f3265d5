//! The rollout engine: sampler workers with continuous batching in micro-turns, env steps and
//! rewards off the sampling threads, adapter versions streamed in between micro-turns, and
//! finished groups handed to the learner through a transport with back-pressure.
//!
//! - [`trajectory`]: what travels (episodes with per-token versions and behaviour log-probs).
//! - [`versions`]: the learner's adapter snapshots, newest wins.
//! - [`work`]: which groups start when (the lag budget, reproducible assignment, resume).
//! - [`sampler`]: one worker's micro-turn loop.
//! - [`scorer`]: the pool that runs env steps and rewards.
//! - [`transport`]: the queue between samplers and learner (in-process here).
//! - [`broker`]: the same through a Redis server, for samplers on other machines.
//! - [`engine`]: start and stop it all; [`control`]: the stop flag and first failure.

pub mod broker;
pub mod control;
pub mod engine;
pub mod error;
pub mod sampler;
pub mod scorer;
pub mod trajectory;
pub mod transport;
pub mod versions;
pub mod work;

pub use control::Control;
pub use engine::{Engine, EngineConfig, StatsReader, Totals};
pub use error::{Error, Result};
pub use sampler::{stream_of, SamplerConfig, Shared, WorkSource};
pub use trajectory::{Episode, TrajectoryGroup};
pub use transport::{Delivery, DeliveryTag, InProcess, Transport, TransportError};
pub use versions::{Snapshot, VersionSlot};
pub use work::{Dispenser, StreamPosition, WorkPlan};
