//! The learner's optimiser holds adapter parameters only: its state is 2 × the adapter.

use rl::optim::{AdamW, AdamWConfig};

#[test]
fn optimizer_state_is_twice_the_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let shape = serde_json::json!({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "num_key_value_heads": 1, "intermediate_size": 48, "head_dim": 16});
    policies::init::write_random_checkpoint(&dir, &shape, 0, 0.1).unwrap();
    let policy = policies::Policy::load(&dir, None, tch::Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    for rank in [1, 4] {
        let lora = policies::LoraConfig::new(rank, 32.0, policies::lora::parse_targets("all").unwrap()).unwrap();
        let adapter = policies::Adapter::init(cfg, lora, 0, tch::Device::Cpu);
        // Seven modules per layer: r·(in + out) each.
        let per_layer = rank * ((32 + 32) + (32 + 16) * 2 + (32 + 32) + (32 + 48) * 2 + (48 + 32));
        assert_eq!(adapter.num_parameters(), 2 * per_layer);
        let opt = AdamW::new(adapter.parameters(), AdamWConfig::default());
        assert_eq!(opt.state_numel() as i64, 2 * adapter.num_parameters());
    }
}
