//! Text in and out: `tokenizer.json` through the `tokenizers` crate, the chat template from
//! `tokenizer_config.json` (or `chat_template.jinja`) rendered with minijinja, and the ids that
//! end generation from `generation_config.json`.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::config::token_id_list;
use crate::error::{read_json, Error, Result};
use crate::invalid;

/// One chat message, as chat templates expect it.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Ids that end a sequence.
    pub eos_ids: Vec<i64>,
    pub pad_id: Option<i64>,
}

impl TextTokenizer {
    /// Load from a model directory. `config_eos` is `config.json`'s eos list, the fallback when
    /// `generation_config.json` names none.
    pub fn load(dir: &Path, config_eos: &[i64]) -> Result<TextTokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::bad_file(&path, "not found"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::bad_file(&path, format!("cannot load tokenizer: {e}")))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let tcfg: Value = if cfg_path.exists() { read_json(&cfg_path)? } else { Value::Null };
        let token_text = |key: &str| match tcfg.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let template_file = dir.join("chat_template.jinja");
        let chat_template = if template_file.exists() {
            Some(std::fs::read_to_string(&template_file).map_err(|e| Error::io(&template_file, e))?)
        } else {
            match tcfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: use "default".
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
        };
        let (bos_token, eos_token) = (token_text("bos_token"), token_text("eos_token"));

        let gen_path = dir.join("generation_config.json");
        let mut eos_ids = if gen_path.exists() {
            let g: Value = read_json(&gen_path)?;
            g.get("eos_token_id").map(token_id_list).unwrap_or_default()
        } else {
            Vec::new()
        };
        if eos_ids.is_empty() {
            eos_ids = config_eos.to_vec();
        }
        if eos_ids.is_empty() {
            if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
                eos_ids.push(id as i64);
            }
        }
        let pad_id = token_text("pad_token").and_then(|t| inner.token_to_id(&t)).map(i64::from);
        Ok(TextTokenizer { inner, chat_template, bos_token, eos_token, eos_ids, pad_id })
    }

    /// Encode text; `add_special` applies the tokenizer's post-processor (e.g. a leading bos),
    /// as `tokenizer(text)` does in transformers.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, add_special).map_err(|e| invalid!("cannot tokenize: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Decode ids, dropping special tokens.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).map_err(|e| invalid!("cannot decode: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Render the chat template, as `apply_chat_template(..., tokenize=False)` does.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| invalid!("this model has no chat template"))?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| invalid!("chat template does not parse: {e}"))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        let tmpl = env.get_template("chat").map_err(|e| invalid!("chat template: {e}"))?;
        tmpl.render(ctx).map_err(|e| invalid!("chat template failed: {e}"))
    }

    /// Chat messages to prompt ids (the template carries its own special tokens).
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<i64>> {
        self.encode(&self.render_chat(messages, add_generation_prompt)?, false)
    }
}
