//! Decoder policies on libtorch: Hugging Face Llama 3 / Qwen2 / Qwen3 checkpoints, a slot-based
//! KV cache, batched sampling with behaviour log-probs, and LoRA adapters (PEFT format).

pub mod cache;
pub mod config;
pub mod error;
pub mod generate;
pub mod init;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod peft;
pub mod policy;
pub mod rng;
pub mod rope;
pub mod sampling;
pub mod threads;
pub mod tokenizer;
pub mod trace;
pub mod weights;

pub use cache::KvCache;
pub use config::{Family, ModelConfig};
pub use error::{Error, Result};
pub use generate::{Completion, FinishReason, Generation};
pub use lora::{Adapter, LoraConfig, LoraPacker, LoraRuntime, Module};
pub use model::Model;
pub use policy::{parse_device, Policy};
pub use sampling::SamplingParams;
pub use tokenizer::{Message, TextTokenizer};
