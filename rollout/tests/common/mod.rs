//! Checkpoints and a stand-in learner for the engine's tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envs::{ArithConfig, EnvFactory, GroupSource, ListSource, Problem, ProblemSource};
use policies::init::{char_tokenizer_json, char_vocab, write_json, write_random_checkpoint};
use policies::weights::save_safetensors;
use policies::{Adapter, LoraConfig, Model, Module, SamplingParams, TextTokenizer};
use rollout::{Control, Dispenser, Engine, EngineConfig, InProcess, SamplerConfig, Snapshot, Transport, TrajectoryGroup, VersionSlot, WorkPlan};
use serde_json::json;
use tch::{Device, Kind, Tensor};

pub fn tiny_model(dir: &Path) -> (Arc<Model>, Arc<TextTokenizer>) {
    let shape = policies::init::preset("tiny").unwrap();
    write_random_checkpoint(dir, &shape, 3, 0.05).unwrap();
    load(dir)
}

pub fn load(dir: &Path) -> (Arc<Model>, Arc<TextTokenizer>) {
    let policy = policies::Policy::load(dir, None, Device::Cpu).unwrap();
    (Arc::new(policy.model), Arc::new(policy.tokenizer))
}

/// A model that answers like a lookup table: with one layer whose weights are all zero, the
/// final hidden state is the normalised embedding of the last token, so the next token depends
/// on the last token alone. `extra` adds whole-string tokens after the character vocabulary;
/// `next` maps a token's text to the text of the token that follows it (eos otherwise).
pub fn scripted_model(dir: &Path, extra: &[&str], next: &[(&str, &str)]) -> (Arc<Model>, Arc<TextTokenizer>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab = char_vocab();
    vocab.extend(extra.iter().map(|s| s.to_string()));
    let v = vocab.len() as i64;
    let h = 128i64;
    assert!(v <= h, "one-hot embeddings need hidden >= vocab");
    let id = |text: &str| vocab.iter().position(|t| t == text).unwrap_or_else(|| panic!("no token {text:?}")) as i64;
    let embed = Tensor::eye_m(v, h, (Kind::Float, Device::Cpu));
    let head = Tensor::zeros([v, h], (Kind::Float, Device::Cpu));
    for t in 0..v {
        let _ = head.get(2).get(t).fill_(3.0); // eos by default
    }
    for (from, to) in next {
        let _ = head.get(2).get(id(from)).fill_(0.0);
        let _ = head.get(id(to)).get(id(from)).fill_(3.0);
    }
    let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    let p = "model.layers.0";
    let tensors = vec![
        ("model.embed_tokens.weight".to_string(), embed),
        ("lm_head.weight".to_string(), head),
        ("model.norm.weight".to_string(), Tensor::ones([h], (Kind::Float, Device::Cpu))),
        (format!("{p}.input_layernorm.weight"), Tensor::ones([h], (Kind::Float, Device::Cpu))),
        (format!("{p}.post_attention_layernorm.weight"), Tensor::ones([h], (Kind::Float, Device::Cpu))),
        (format!("{p}.self_attn.q_proj.weight"), zeros(&[128, h])),
        (format!("{p}.self_attn.k_proj.weight"), zeros(&[64, h])),
        (format!("{p}.self_attn.v_proj.weight"), zeros(&[64, h])),
        (format!("{p}.self_attn.o_proj.weight"), zeros(&[h, 128])),
        (format!("{p}.mlp.gate_proj.weight"), zeros(&[64, h])),
        (format!("{p}.mlp.up_proj.weight"), zeros(&[64, h])),
        (format!("{p}.mlp.down_proj.weight"), zeros(&[h, 64])),
    ];
    save_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    let mut tokenizer = char_tokenizer_json();
    for (i, text) in extra.iter().enumerate() {
        tokenizer["added_tokens"].as_array_mut().unwrap().push(json!({
            "id": 100 + i, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": false}));
    }
    write_json(&dir.join("tokenizer.json"), &tokenizer).unwrap();
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})).unwrap();
    write_json(&dir.join("config.json"), &json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v, "hidden_size": h,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "intermediate_size": 64, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})).unwrap();
    load(dir)
}

pub fn arith_groups(group_size: usize, seed: u64) -> GroupSource {
    let mut cfg = ArithConfig::level("add2");
    cfg.seed = seed;
    let env = envs::EnvConfig { problems: envs::ProblemsConfig::Arith(cfg), group_size, ..Default::default() };
    env.build(None).unwrap()
}

pub fn list_groups(problems: &[(&str, &str)], factory: Arc<dyn EnvFactory>, group_size: usize) -> GroupSource {
    let train: Vec<Problem> = problems
        .iter()
        .enumerate()
        .map(|(i, (q, a))| Problem { id: format!("p{i}"), question: q.to_string(), answer: a.to_string() })
        .collect();
    let source: Arc<dyn ProblemSource> = Arc::new(ListSource::new("list", train, Vec::new(), 0));
    GroupSource::new(source, factory, group_size).unwrap()
}

/// A rank-2 adapter on every linear layer whose B depends on `seed` (so versions differ).
pub fn adapter(model: &Model, seed: u64) -> Adapter {
    let config = LoraConfig::new(2, 32.0, Module::LAYER_MODULES.to_vec()).unwrap();
    let a = Adapter::init(&model.config, config, 7, Device::Cpu);
    a.randomize_b(0.01, seed);
    a
}

pub fn sampler_config(slots: usize, micro_turn_tokens: usize, max_new_tokens: i64, deterministic: bool) -> SamplerConfig {
    SamplerConfig {
        slots,
        micro_turn_tokens,
        sampling: SamplingParams { temperature: 1.0, max_new_tokens, seed: 11, ..Default::default() },
        max_episode_tokens: 256,
        threads: 1,
        deterministic,
        recompute_on_swap: true,
    }
}

pub struct Run {
    pub groups: Vec<TrajectoryGroup>,
    pub failure: Option<String>,
}

#[allow(clippy::too_many_arguments)]
/// A stand-in learner: collect `batches` batches of `per_batch` groups, publishing version
/// b + 1 (a new adapter) after batch b, as `noregret train` does after each optimiser step.
pub fn run_engine(
    model: Arc<Model>,
    tokenizer: Arc<TextTokenizer>,
    source: GroupSource,
    sampler: SamplerConfig,
    samplers: usize,
    max_staleness: u64,
    batches: usize,
    per_batch: usize,
    publish_every: Option<Duration>,
) -> Run {
    let adapter0 = adapter(&model, 0);
    let versions = Arc::new(VersionSlot::new(Snapshot::new(0, Some(adapter0))));
    let plan = WorkPlan {
        groups_per_batch: per_batch as u64, versions_per_batch: 1, max_staleness, samplers,
        deterministic: sampler.deterministic,
    };
    let work = Arc::new(Dispenser::new(source, plan, None));
    let transport: Arc<dyn Transport> = Arc::new(InProcess::new(4));
    let control = Arc::new(Control::new());
    let config = EngineConfig { samplers, sampler, reward_workers: 2 };
    let shared = rollout::Shared { model: model.clone(), tokenizer, versions: versions.clone(), work, transport: transport.clone(), control };
    let engine = Engine::start(config, "test", shared);
    // Either a new version after each batch (as the trainer does), or on a clock.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = publish_every.map(|every| {
        let (versions, model, done) = (versions.clone(), model.clone(), done.clone());
        std::thread::spawn(move || {
            let mut v = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(every);
                v += 1;
                versions.publish(Snapshot::new(v, Some(adapter(&model, v))));
            }
        })
    });
    let mut groups = Vec::new();
    'batches: for b in 0..batches {
        let mut batch = Vec::new();
        while batch.len() < per_batch {
            if let Some(failure) = engine.failure() {
                return Run { groups, failure: Some(failure) };
            }
            match transport.recv(Duration::from_millis(100)) {
                Ok(Some(d)) => batch.push(d.group),
                Ok(None) => {}
                Err(_) => break 'batches,
            }
        }
        batch.sort_by_key(|g| g.id);
        groups.extend(batch);
        if publisher.is_none() {
            versions.publish(Snapshot::new(b as u64 + 1, Some(adapter(&model, b as u64 + 1))));
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(p) = publisher {
        let _ = p.join();
    }
    let failure = engine.failure();
    engine.stop();
    Run { groups, failure }
}
