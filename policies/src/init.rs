//! Write a freshly initialised checkpoint in Hugging Face format (config.json, model.safetensors,
//! a character-level tokenizer.json, tokenizer_config.json, generation_config.json). The demo's
//! base model starts here (the project trains its own, nothing is downloaded), and tests use it
//! for checkpoints that need no Python.

use std::path::Path;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::invalid;
use crate::weights::{save_safetensors, write_atomic};

/// Special tokens, in id order.
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];

/// Model shapes the CLI can make.
pub fn preset(name: &str) -> Result<Value> {
    let (hidden, layers, heads, kv_heads, ffn) = match name {
        // The calibration's demo model (0.72M parameters with this vocabulary).
        "arith" => (128, 4, 4, 2, 336),
        "tiny" => (128, 4, 4, 2, 384),
        "small" => (512, 8, 8, 4, 1536),
        other => return Err(invalid!("unknown preset {other:?} (expected arith, tiny or small)")),
    };
    Ok(json!({
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "intermediate_size": ffn, "head_dim": hidden / heads,
    }))
}

/// The character vocabulary: specials, then printable ASCII and newline.
pub fn char_vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.push("\n".into());
    v.extend((32u8..127).map(|b| (b as char).to_string()));
    v
}

/// A character-level tokenizer.json: every character one token, `<bos>` prepended.
pub fn char_tokenizer_json() -> Value {
    let vocab = char_vocab();
    let ids: serde_json::Map<String, Value> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                             "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": null,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [1], "tokens": ["<bos>"]}}
        },
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": ids, "merges": []}
    })
}

/// Write a random Llama-architecture checkpoint with the character tokenizer. `shape` holds the
/// size fields (see [`preset`]); weights are N(0, std), residual outputs scaled by 1/√(2·layers).
pub fn write_random_checkpoint(dir: &Path, shape: &Value, seed: u64, std: f64) -> Result<()> {
    let vocab = char_vocab().len() as i64;
    let get = |k: &str| shape.get(k).and_then(Value::as_i64).ok_or_else(|| invalid!("preset lacks {k}"));
    let (h, l, nh, nkv, ffn, hd) = (get("hidden_size")?, get("num_hidden_layers")?, get("num_attention_heads")?,
                                    get("num_key_value_heads")?, get("intermediate_size")?, get("head_dim")?);
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "initializer_range": std,
    });
    for (k, v) in shape.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    tch::manual_seed(seed as i64);
    let opts = (Kind::Float, Device::Cpu);
    let normal = |dims: &[i64], s: f64| Tensor::randn(dims, opts) * s;
    let residual_std = std / ((2 * l) as f64).sqrt();
    let mut tensors = vec![
        ("model.embed_tokens.weight".to_string(), normal(&[vocab, h], std)),
        ("model.norm.weight".to_string(), Tensor::ones([h], opts)),
        ("lm_head.weight".to_string(), normal(&[vocab, h], std)),
    ];
    for i in 0..l {
        let p = format!("model.layers.{i}");
        tensors.extend([
            (format!("{p}.input_layernorm.weight"), Tensor::ones([h], opts)),
            (format!("{p}.post_attention_layernorm.weight"), Tensor::ones([h], opts)),
            (format!("{p}.self_attn.q_proj.weight"), normal(&[nh * hd, h], std)),
            (format!("{p}.self_attn.k_proj.weight"), normal(&[nkv * hd, h], std)),
            (format!("{p}.self_attn.v_proj.weight"), normal(&[nkv * hd, h], std)),
            (format!("{p}.self_attn.o_proj.weight"), normal(&[h, nh * hd], residual_std)),
            (format!("{p}.mlp.gate_proj.weight"), normal(&[ffn, h], std)),
            (format!("{p}.mlp.up_proj.weight"), normal(&[ffn, h], std)),
            (format!("{p}.mlp.down_proj.weight"), normal(&[h, ffn], residual_std)),
        ]);
    }
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    write_tokenizer_files(dir)?;
    write_json(&dir.join("config.json"), &config)
}

/// tokenizer.json, tokenizer_config.json and generation_config.json for the character tokenizer.
pub fn write_tokenizer_files(dir: &Path) -> Result<()> {
    write_json(&dir.join("tokenizer.json"), &char_tokenizer_json())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
                "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 512, "padding_side": "left",
                "clean_up_tokenization_spaces": false}),
    )?;
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
}

pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| invalid!("cannot serialise JSON: {e}"))?;
    write_atomic(path, text.as_bytes())
}
