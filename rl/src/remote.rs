//! What the learner and remote samplers take from an experiment file to meet on a Redis
//! server: the connection (password from the config or an environment variable, never the
//! command line) and the sampling contract both sides must agree on.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use crate::experiment::Experiment;
use crate::plan::ThreadPlan;
use rollout::broker::{BrokerConfig, Endpoint};

/// A transport URL this build can use.
pub fn check_url(url: &str) -> Result<()> {
    if url.starts_with("rediss://") {
        bail!("{url}: TLS (rediss://) is not built in; use redis:// on a trusted network or a tunnel");
    }
    if !url.starts_with("redis://") {
        bail!("{url}: expected redis://HOST:PORT/DB");
    }
    Ok(())
}

/// Refuse `--set` overrides that would put a password on the command line.
pub fn refuse_password_overrides(overrides: &[String]) -> Result<()> {
    if overrides.iter().any(|o| o.trim_start().starts_with("rollout.redis_password=")) {
        bail!("--set rollout.redis_password: passwords are not taken from the command line; put it in the config or in the variable named by redis_password_env");
    }
    Ok(())
}

/// How to reach the server at `url` with the experiment's settings.
pub fn broker_config(exp: &Experiment, url: &str) -> Result<BrokerConfig> {
    check_url(url)?;
    let r = &exp.rollout;
    let password = match &r.redis_password {
        Some(p) => Some(p.clone()),
        None => std::env::var(&r.redis_password_env).ok().filter(|p| !p.is_empty()),
    };
    let plan = ThreadPlan::new(r, exp.group_size(), false, 1);
    Ok(BrokerConfig {
        endpoint: Endpoint {
            url: url.to_string(),
            password,
            password_hint: r.redis_password_env.clone(),
            retry_for: Duration::from_secs_f64(r.redis_retry_seconds),
        },
        prefix: r.redis_prefix.clone(),
        claim_after: Duration::from_secs_f64(r.redis_claim_seconds),
        max_groups: r.redis_max_groups,
        max_work: plan.queue.max(r.groups_per_step),
    })
}

/// Everything that decides what a sampler produces for a work item, besides the base model
/// (checked by fingerprint) and the adapter (published). Where the problems come from is left
/// out: they travel with the work.
pub fn contract(exp: &Experiment) -> String {
    let r = &exp.rollout;
    let e = &exp.env;
    let value = json!({
        "env": {"kind": e.kind, "group_size": e.group_size, "template": e.effective_template(), "stop": e.stop, "max_turns": e.max_turns},
        "reward": exp.reward,
        "rollout": {
            "temperature": r.temperature, "top_p": r.top_p, "top_k": r.top_k, "max_new_tokens": r.max_new_tokens,
            "max_episode_tokens": r.max_episode_tokens, "kv_on_swap": r.kv_on_swap, "max_staleness": r.max_staleness,
        },
        "run": {"seed": exp.run.seed},
    });
    value.to_string()
}

/// Refuse to sample for a learner whose contract differs, naming the settings that differ.
pub fn check_contract(ours: &str, learner: &str) -> Result<()> {
    let parse = |s: &str| serde_json::from_str::<Value>(s).map_err(|e| anyhow!("an unreadable sampling contract: {e}"));
    let (mut a, mut b) = (Map::new(), Map::new());
    flatten("", &parse(ours)?, &mut a);
    flatten("", &parse(learner)?, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "unset".into());
            format!("{k} = {} here, {} at the learner", show(a.get(k)), show(b.get(k)))
        })
        .collect();
    if !differ.is_empty() {
        bail!("this sampler's config differs from the learner's: {}", differ.join("; "));
    }
    Ok(())
}

fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_name_what_differs() {
        let a = json!({"rollout": {"temperature": 0.3, "top_k": 0}, "run": {"seed": 1}}).to_string();
        let b = json!({"rollout": {"temperature": 1.0, "top_k": 0}, "run": {"seed": 1}}).to_string();
        assert!(check_contract(&a, &a).is_ok());
        let err = check_contract(&a, &b).unwrap_err().to_string();
        assert!(err.contains("rollout.temperature = 0.3 here, 1.0 at the learner"), "{err}");
        assert!(!err.contains("top_k"), "{err}");
    }

    #[test]
    fn passwords_stay_off_the_command_line() {
        assert!(refuse_password_overrides(&["rollout.redis_password=x".into()]).is_err());
        assert!(refuse_password_overrides(&["rollout.redis_password_env=MY_VAR".into()]).is_ok());
        assert!(check_url("rediss://h:1/0").is_err() && check_url("http://h").is_err() && check_url("redis://h:1/0").is_ok());
    }
}
