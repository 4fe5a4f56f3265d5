//! rollout (next wave)
