//! `config.json` of a Hugging Face decoder, in both spellings in use: published checkpoints'
//! `rope_theta` / `rope_scaling` / `torch_dtype`, and transformers 5's `rope_parameters` / `dtype`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::Kind;

use crate::error::{read_json, Error, Result};

/// The model families this crate implements; they differ only in small switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

/// How rotary frequencies are rescaled for long context.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent rescaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v (qwen2 always; llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (llama's `attention_bias` covers it too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (qwen3).
    pub qk_norm: bool,
    /// The dtype the checkpoint declares (`torch_dtype` or `dtype`), f32 when absent.
    pub dtype: Kind,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    /// The config file as read, kept so that a merged export can write it back unchanged.
    pub raw: Value,
}

/// Fields shared by the supported families; everything optional is defaulted per family.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<i64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: Value = read_json(path)?;
        Self::from_value(raw).map_err(|msg| Error::bad_file(path, msg))
    }

    fn from_value(raw: Value) -> std::result::Result<Self, String> {
        let c: RawConfig = serde_json::from_value(raw.clone()).map_err(|e| format!("bad config: {e}"))?;
        let family = match c.model_type.as_deref() {
            Some("llama") => Family::Llama,
            Some("qwen2") => Family::Qwen2,
            Some("qwen3") => Family::Qwen3,
            Some(other) => {
                return Err(format!("unknown model_type {other:?} (supported: llama, qwen2, qwen3)"))
            }
            None => return Err("missing \"model_type\" (supported: llama, qwen2, qwen3)".into()),
        };
        if c.use_sliding_window == Some(true) {
            return Err("use_sliding_window = true is not supported".into());
        }
        for (name, v) in [
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
        ] {
            if v <= 0 {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
        let num_kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        if num_kv_heads <= 0 || c.num_attention_heads % num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({num_kv_heads})",
                c.num_attention_heads
            ));
        }
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
        if head_dim <= 0 || head_dim % 2 != 0 {
            return Err(format!("head_dim must be positive and even, got {head_dim}"));
        }
        // transformers 5 folds theta and scaling into `rope_parameters`; older files keep them flat.
        let rope_params = c.rope_parameters.as_ref().filter(|v| v.is_object());
        let rope_theta = c
            .rope_theta
            .or_else(|| rope_params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10000.0);
        let scaling_src = c.rope_scaling.as_ref().filter(|v| v.is_object()).or(rope_params);
        let rope_scaling = match scaling_src {
            Some(v) => parse_rope_scaling(v)?,
            None => RopeScaling::None,
        };
        let dtype_name = c.dtype.as_deref().or(c.torch_dtype.as_deref()).unwrap_or("float32");
        let dtype = parse_dtype(dtype_name).ok_or_else(|| format!("unsupported dtype {dtype_name:?}"))?;
        let attention_bias = c.attention_bias.unwrap_or(false);
        Ok(ModelConfig {
            family,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            mlp_bias: c.mlp_bias.unwrap_or(false),
            qk_norm: family == Family::Qwen3,
            dtype,
            bos_token_id: c.bos_token_id.as_ref().and_then(Value::as_i64),
            eos_token_ids: c.eos_token_id.as_ref().map(token_id_list).unwrap_or_default(),
            raw,
        })
    }

    pub fn q_dim(&self) -> i64 {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> i64 {
        self.num_kv_heads * self.head_dim
    }
}

fn parse_rope_scaling(v: &Value) -> std::result::Result<RopeScaling, String> {
    let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |key: &str| -> std::result::Result<f64, String> {
        v.get(key).and_then(Value::as_f64).ok_or_else(|| format!("rope scaling {kind:?} needs a number {key:?}"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(format!("unsupported rope scaling type {other:?} (supported: default, linear, llama3)")),
    }
}

pub fn parse_dtype(name: &str) -> Option<Kind> {
    match name {
        "float32" | "f32" | "fp32" => Some(Kind::Float),
        "bfloat16" | "bf16" => Some(Kind::BFloat16),
        "float16" | "f16" | "fp16" | "half" => Some(Kind::Half),
        _ => None,
    }
}

/// `eos_token_id` is an int or a list of ints in the wild.
pub(crate) fn token_id_list(v: &Value) -> Vec<i64> {
    match v {
        Value::Number(n) => n.as_i64().into_iter().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
    }

    #[test]
    fn both_rope_spellings_agree() {
        let mut old = base();
        old["rope_theta"] = json!(5e5);
        old["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        old["torch_dtype"] = json!("bfloat16");
        let mut new = base();
        new["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        new["dtype"] = json!("bfloat16");
        let (a, b) = (ModelConfig::from_value(old).unwrap(), ModelConfig::from_value(new).unwrap());
        assert_eq!(a.rope_theta, 5e5);
        assert_eq!(a.rope_theta, b.rope_theta);
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!((a.dtype, b.dtype), (Kind::BFloat16, Kind::BFloat16));
        assert_eq!(a.head_dim, 4);
    }

    #[test]
    fn unknown_model_type_is_named() {
        let mut c = base();
        c["model_type"] = json!("gpt2");
        let err = ModelConfig::from_value(c).unwrap_err();
        assert!(err.contains("\"gpt2\""), "{err}");
    }

    #[test]
    fn family_switches() {
        let mut c = base();
        c["model_type"] = json!("qwen2");
        let q2 = ModelConfig::from_value(c.clone()).unwrap();
        assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm);
        c["model_type"] = json!("qwen3");
        c["head_dim"] = json!(6);
        let q3 = ModelConfig::from_value(c).unwrap();
        assert!(q3.qk_norm && !q3.qkv_bias && q3.head_dim == 6 && q3.q_dim() == 12);
    }
}
