//! Adapters in PEFT's on-disk format: `adapter_config.json` plus `adapter_model.safetensors` with
//! keys like `base_model.model.model.layers.3.mlp.down_proj.lora_A.weight`. Files written here
//! load in `peft` and vLLM; adapters trained with `peft` load here.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::error::{read_json, Error, Result};
use crate::init::write_json;
use crate::lora::{Adapter, LoraConfig, Module};
use crate::model::Model;
use crate::weights::{save_safetensors, WeightStore};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Write `adapter` into `dir` (created if needed). Each file is written atomically.
pub fn save(adapter: &Adapter, dir: &Path, base_model: &str) -> Result<()> {
    let c = &adapter.config;
    let mut targets: Vec<&str> = c.targets.iter().map(|m| m.hf_name()).collect();
    targets.sort();
    let config = json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": c.rank, "lora_alpha": c.alpha, "target_modules": targets, "lora_dropout": 0.0,
        "bias": "none", "fan_in_fan_out": false, "use_rslora": c.rslora, "use_dora": false,
        "inference_mode": true, "init_lora_weights": true, "modules_to_save": null,
        "layers_to_transform": null, "layers_pattern": null, "rank_pattern": {}, "alpha_pattern": {},
        "revision": null,
    });
    let tensors: Vec<(String, Tensor)> = adapter.named_tensors().into_iter().map(|(k, t)| (k, t.shallow_clone())).collect();
    save_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    write_json(&dir.join(CONFIG_FILE), &config)
}

/// Load a PEFT LoRA adapter for a model with config `cfg`. Anything this crate cannot apply
/// exactly (DoRA, per-module ranks, extra trained modules, biases) is refused, not ignored.
///
/// PEFT also saves the base embedding (`embed_tokens.base_layer.weight`) when an adapter targets
/// it; such copies are checked against `model` and refused if they differ (a resized or trained
/// embedding cannot be applied as a low-rank update).
pub fn load(dir: &Path, model: &Model) -> Result<Adapter> {
    let (cfg, device) = (&model.config, model.device());
    if !dir.is_dir() {
        return Err(Error::bad_file(dir, "adapter directory not found"));
    }
    let config_path = dir.join(CONFIG_FILE);
    let raw: Value = read_json(&config_path)?;
    let bad = |msg: String| Error::bad_file(&config_path, msg);
    let peft_type = raw.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(bad(format!("peft_type is {peft_type:?}, only \"LORA\" is supported")));
    }
    let rank = raw.get("r").and_then(Value::as_i64).ok_or_else(|| bad("missing integer \"r\"".into()))?;
    let alpha = raw.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    let flag = |k: &str| raw.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("use_dora") {
        return Err(bad("DoRA adapters (use_dora) are not supported".into()));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if raw.get(key).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(bad(format!("{key} (per-module ranks) is not supported")));
        }
    }
    if raw.get("modules_to_save").is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(bad("modules_to_save is not supported (only LoRA weights can be applied)".into()));
    }
    if raw.get("bias").and_then(Value::as_str).is_some_and(|b| b != "none") {
        return Err(bad("trained biases (bias != \"none\") are not supported".into()));
    }

    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.exists() {
        return Err(Error::bad_file(&weights_path, "not found"));
    }
    let store = WeightStore::open_files(std::slice::from_ref(&weights_path))?;
    // (layer or None for outer modules, module) -> (A, B) as they are found.
    type Halves = (Option<Tensor>, Option<Tensor>);
    let mut pairs: BTreeMap<(Option<usize>, Module), Halves> = BTreeMap::new();
    let mut names: Vec<String> = store.names().map(str::to_string).collect();
    names.sort();
    let base_weights = model.named_weights();
    // As f32, in whatever shape the file holds (shapes are checked against the model later).
    let load_as_stored = |name: &str| store.load(name, &store.shape(name).unwrap_or_default(), Kind::Float, device);
    for name in names {
        if let Some(base_name) = name.strip_prefix("base_model.model.").and_then(|n| n.strip_suffix(".base_layer.weight")) {
            let base_name = format!("{base_name}.weight");
            let same = base_weights.iter().find(|(n, _)| *n == base_name).is_some_and(|(_, w)| {
                load_as_stored(&name).is_ok_and(|t| t.equal(&w.to_kind(Kind::Float)))
            });
            if !same {
                return Err(Error::bad_file(&weights_path, format!("{name:?} differs from the base model's {base_name} (modified base weights are not supported)")));
            }
            continue;
        }
        let (key, is_a) = parse_key(&name).ok_or_else(|| {
            Error::bad_file(&weights_path, format!("unsupported tensor {name:?} (only LoRA A/B of linear layers and embed_tokens)"))
        })?;
        if let (Some(layer), _) = key {
            if layer as i64 >= cfg.num_layers {
                return Err(Error::bad_file(&weights_path, format!("{name:?}: the model has {} layers", cfg.num_layers)));
            }
        }
        let t = load_as_stored(&name)?;
        let entry = pairs.entry(key).or_default();
        if is_a { entry.0 = Some(t) } else { entry.1 = Some(t) }
    }
    let mut complete = BTreeMap::new();
    for ((layer, module), (a, b)) in pairs {
        match (a, b) {
            (Some(a), Some(b)) => {
                complete.insert((layer, module), (a, b));
            }
            _ => {
                return Err(Error::bad_file(&weights_path, format!("{} of layer {layer:?} lacks lora_A or lora_B", module.hf_name())))
            }
        }
    }
    let mut targets: Vec<Module> = complete.keys().map(|(_, m)| *m).collect();
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Err(Error::bad_file(&weights_path, "no LoRA tensors"));
    }
    let mut config = LoraConfig::new(rank, alpha, targets).map_err(|e| bad(e.to_string()))?;
    config.rslora = flag("use_rslora");
    Adapter::from_pairs(cfg, config, &complete, device).map_err(|e| Error::bad_file(&weights_path, e.to_string()))
}

/// `base_model.model.model.layers.{i}.{block}.{module}.lora_{A,B}[.default].weight` or
/// `base_model.model.lm_head.lora_{A,B}.weight` → ((layer, module), is_a).
fn parse_key(name: &str) -> Option<((Option<usize>, Module), bool)> {
    let rest = name.strip_prefix("base_model.model.")?;
    if let Some(which) = rest.strip_prefix("model.embed_tokens.lora_embedding_") {
        return match which.strip_suffix(".default").unwrap_or(which) {
            "A" => Some(((None, Module::Embed), true)),
            "B" => Some(((None, Module::Embed), false)),
            _ => None,
        };
    }
    let rest = rest.strip_suffix(".weight")?;
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    let (path, is_a) = if let Some(p) = rest.strip_suffix(".lora_A") {
        (p, true)
    } else {
        (rest.strip_suffix(".lora_B")?, false)
    };
    let path = path.strip_suffix(".default").unwrap_or(path);
    if path == "lm_head" {
        return Some(((None, Module::LmHead), is_a));
    }
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        ["model", "layers", i, block, module] => {
            let m = Module::from_hf_name(module)?;
            (m.block() == Some(*block)).then_some(())?;
            Some(((Some(i.parse().ok()?), m), is_a))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peft_keys() {
        assert_eq!(
            parse_key("base_model.model.model.layers.3.mlp.down_proj.lora_A.weight"),
            Some(((Some(3), Module::Down), true))
        );
        assert_eq!(parse_key("base_model.model.lm_head.lora_B.weight"), Some(((None, Module::LmHead), false)));
        assert_eq!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"),
            Some(((Some(0), Module::Q), false))
        );
        assert_eq!(parse_key("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"), None);
        assert_eq!(parse_key("base_model.model.model.embed_tokens.lora_embedding_A"), Some(((None, Module::Embed), true)));
        assert_eq!(parse_key("base_model.model.model.embed_tokens.weight"), None);
    }
}
