//! What travels through the server, and how it is encoded: JSON for structure (work items,
//! groups, headers), raw little-endian f32 for the adapter's numbers.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envs::Problem;
use policies::{Adapter, LoraConfig, Model, Module};
use serde::{Deserialize, Serialize};

use crate::engine::Totals;

/// A group the learner lets samplers start: the problem itself travels, so a sampler needs
/// no dataset and cannot disagree with the learner about the data order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The learner start that released it.
    pub incarnation: u64,
    pub id: u64,
    pub epoch: u64,
    pub problem: Problem,
    /// The oldest adapter version it may be started with (the lag budget, as the dispenser
    /// computed it).
    pub not_before: u64,
}

/// The adapter's layout, enough to rebuild it on the same base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraLayout {
    pub rank: i64,
    pub alpha: f64,
    /// HF module names (`q_proj`, …).
    pub targets: Vec<String>,
    pub rslora: bool,
}

/// The `header` field of the adapter hash; its `values` field holds the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionHeader {
    pub incarnation: u64,
    pub version: u64,
    /// The learner's wall clock when it published (for the swap latency; across machines it
    /// is only as good as their clocks agree).
    pub published_unix_ns: u64,
    /// None: the base model alone.
    pub lora: Option<LoraLayout>,
}

/// The learner's own record (the `learner` hash).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registration {
    pub incarnation: u64,
    /// The first incarnation of this run: groups from incarnations in between are replays.
    pub first_incarnation: u64,
    pub fingerprint: String,
    /// What samplers must agree on (the sampling settings, env and rewards), as JSON.
    pub contract: String,
    pub run: String,
    /// `running` or `finished`.
    pub state: String,
    pub heartbeat_ms: u64,
}

impl Registration {
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("incarnation", self.incarnation.to_string()),
            ("first_incarnation", self.first_incarnation.to_string()),
            ("fingerprint", self.fingerprint.clone()),
            ("contract", self.contract.clone()),
            ("run", self.run.clone()),
            ("state", self.state.clone()),
            ("heartbeat_ms", self.heartbeat_ms.to_string()),
        ]
    }

    /// None while no learner has registered.
    pub fn from_fields(fields: &HashMap<String, String>) -> Option<Registration> {
        let text = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let incarnation = fields.get("incarnation")?.parse().ok()?;
        Some(Registration {
            incarnation,
            first_incarnation: number("first_incarnation"),
            fingerprint: text("fingerprint"),
            contract: text("contract"),
            run: text("run"),
            state: text("state"),
            heartbeat_ms: number("heartbeat_ms"),
        })
    }
}

pub const RUNNING: &str = "running";
pub const FINISHED: &str = "finished";

pub fn lora_layout(config: &LoraConfig) -> LoraLayout {
    LoraLayout {
        rank: config.rank,
        alpha: config.alpha,
        targets: config.targets.iter().map(|m| m.hf_name().to_string()).collect(),
        rslora: config.rslora,
    }
}

/// The adapter's numbers as little-endian f32 bytes.
pub fn adapter_bytes(adapter: &Adapter) -> Result<Vec<u8>, String> {
    let flat = adapter.parameters().remove(0).detach().to_kind(tch::Kind::Float).to_device(tch::Device::Cpu);
    let values = Vec::<f32>::try_from(&flat).map_err(|e| format!("cannot read the adapter: {e}"))?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Rebuild an adapter published by the learner, on this process's copy of the base model.
pub fn adapter_from(model: &Model, layout: &LoraLayout, bytes: &[u8]) -> Result<Adapter, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("an adapter of {} bytes is not a whole number of f32 values", bytes.len()));
    }
    let targets = layout
        .targets
        .iter()
        .map(|t| Module::from_hf_name(t).ok_or_else(|| format!("unknown adapter target {t:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = LoraConfig::new(layout.rank, layout.alpha, targets).map_err(|e| e.to_string())?;
    config.rslora = layout.rslora;
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Adapter::from_values(&model.config, config, &values, model.device()).map_err(|e| e.to_string())
}

pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// This process's `Instant` for a moment given in wall-clock nanoseconds.
pub fn instant_of(unix_ns_then: u64) -> Instant {
    let ago = Duration::from_nanos(unix_ns().saturating_sub(unix_ns_then));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// The sampler counters, as fields of the stats hash (nanoseconds for times).
pub fn totals_fields(t: &Totals) -> [(&'static str, u64); 9] {
    [
        ("sampled_tokens", t.sampled_tokens),
        ("prompt_tokens", t.prompt_tokens),
        ("busy_ns", (t.busy_seconds * 1e9) as u64),
        ("swaps", t.swaps),
        ("swap_latency_ns", (t.swap_latency_seconds * 1e9) as u64),
        ("groups", t.groups),
        ("skipped_groups", t.skipped_groups),
        ("recomputed_tokens", t.recomputed_tokens),
        ("scoring_ns", (t.scoring_seconds * 1e9) as u64),
    ]
}

/// What `b` adds to `a` (both totals of one process, so every counter only grows).
pub fn totals_delta(a: &Totals, b: &Totals) -> Totals {
    Totals {
        sampled_tokens: b.sampled_tokens.saturating_sub(a.sampled_tokens),
        prompt_tokens: b.prompt_tokens.saturating_sub(a.prompt_tokens),
        busy_seconds: (b.busy_seconds - a.busy_seconds).max(0.0),
        swaps: b.swaps.saturating_sub(a.swaps),
        swap_latency_seconds: (b.swap_latency_seconds - a.swap_latency_seconds).max(0.0),
        swap_latency_max_seconds: b.swap_latency_max_seconds,
        groups: b.groups.saturating_sub(a.groups),
        skipped_groups: b.skipped_groups.saturating_sub(a.skipped_groups),
        recomputed_tokens: b.recomputed_tokens.saturating_sub(a.recomputed_tokens),
        scoring_seconds: (b.scoring_seconds - a.scoring_seconds).max(0.0),
    }
}

pub fn totals_from(fields: &HashMap<String, u64>) -> Totals {
    let get = |k: &str| fields.get(k).copied().unwrap_or(0);
    Totals {
        sampled_tokens: get("sampled_tokens"),
        prompt_tokens: get("prompt_tokens"),
        busy_seconds: get("busy_ns") as f64 * 1e-9,
        swaps: get("swaps"),
        swap_latency_seconds: get("swap_latency_ns") as f64 * 1e-9,
        // The server keeps sums only.
        swap_latency_max_seconds: 0.0,
        groups: get("groups"),
        skipped_groups: get("skipped_groups"),
        recomputed_tokens: get("recomputed_tokens"),
        scoring_seconds: get("scoring_ns") as f64 * 1e-9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip_through_hash_fields() {
        let r = Registration { incarnation: 7, first_incarnation: 5, fingerprint: "ab".into(), contract: "{}".into(), run: "/r".into(), state: RUNNING.into(), heartbeat_ms: 9 };
        let fields: HashMap<String, String> = r.to_fields().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(Registration::from_fields(&fields), Some(r));
        assert_eq!(Registration::from_fields(&HashMap::new()), None);
    }

    #[test]
    fn stats_fields_add_up_to_the_totals() {
        let a = Totals { sampled_tokens: 10, swaps: 1, swap_latency_seconds: 0.5, ..Default::default() };
        let b = Totals { sampled_tokens: 25, swaps: 3, swap_latency_seconds: 0.75, groups: 2, ..Default::default() };
        let d = totals_delta(&a, &b);
        let fields: HashMap<String, u64> = totals_fields(&d).iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let back = totals_from(&fields);
        assert_eq!((back.sampled_tokens, back.swaps, back.groups), (15, 2, 2));
        assert!((back.swap_latency_seconds - 0.25).abs() < 1e-6);
    }
}
