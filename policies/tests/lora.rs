//! LoRA in the forward pass: a fresh adapter is the base model exactly, many adapters in one
//! batch equal separate forwards, and gradients reach the adapter only.

mod common;

use policies::{Adapter, LoraConfig, LoraRuntime, Module, Policy};
use tch::{Device, Kind, Tensor};

fn tokens() -> Tensor {
    Tensor::from_slice(&[1i64, 20, 21, 30, 40, 41, 50, 7, 1, 9, 9, 8, 33, 44, 55, 66]).view([2, 8])
}

/// An adapter with random non-zero B (so it changes the model).
fn busy(policy: &Policy, rank: i64, targets: Vec<Module>, seed: u64) -> Adapter {
    let adapter = Adapter::init(&policy.model.config, LoraConfig::new(rank, 32.0, targets).unwrap(), seed, Device::Cpu);
    adapter.randomize_b(0.05, seed);
    adapter
}

#[test]
fn fresh_adapter_is_exactly_the_base_model() {
    let (_tmp, dir) = common::tiny_checkpoint(5);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    let targets = policies::lora::parse_targets("all").unwrap();
    let targets = [targets, vec![Module::LmHead]].concat();
    let adapter = Adapter::init(cfg, LoraConfig::new(1, 32.0, targets).unwrap(), 3, Device::Cpu);
    let lora = LoraRuntime::single(cfg, &adapter, policy.model.kind()).unwrap();
    let base = tch::no_grad(|| policy.model.token_logprobs(&tokens(), None));
    let with = tch::no_grad(|| policy.model.token_logprobs(&tokens(), Some(&lora)));
    assert!(base.equal(&with), "B = 0 must leave every log-prob bit-identical");
}

#[test]
fn many_adapters_in_one_batch_equal_separate_forwards() {
    let (_tmp, dir) = common::tiny_checkpoint(6);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    let all = policies::lora::parse_targets("all").unwrap();
    // Different ranks and targets, one with the head.
    let adapters = [
        busy(&policy, 1, all.clone(), 1),
        busy(&policy, 4, policies::lora::parse_targets("attn").unwrap(), 2),
        busy(&policy, 2, [all, vec![Module::LmHead]].concat(), 3),
    ];
    let refs: Vec<&Adapter> = adapters.iter().collect();
    // Six rows: each adapter twice, and two rows with none.
    let routes = [Some(2), None, Some(0), Some(1), None, Some(2)];
    let rows = Tensor::cat(&[tokens(), tokens().flip([1]), tokens().roll([3], [1])], 0); // [6, 8]
    let stacked = tch::no_grad(|| LoraRuntime::stack(cfg, &refs, Kind::Float).unwrap().with_rows(&routes, Device::Cpu));
    let together = tch::no_grad(|| policy.model.token_logprobs(&rows, Some(&stacked)));
    for (i, route) in routes.iter().enumerate() {
        let row = rows.narrow(0, i as i64, 1);
        let alone = tch::no_grad(|| match route {
            Some(k) => {
                let single = LoraRuntime::single(cfg, &adapters[*k], Kind::Float).unwrap();
                policy.model.token_logprobs(&row, Some(&single))
            }
            None => policy.model.token_logprobs(&row, None),
        });
        let diff = (together.narrow(0, i as i64, 1) - &alone).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "row {i} (adapter {route:?}) differs by {diff}");
    }
    // And the adapters really differ from each other and from the base.
    let base = tch::no_grad(|| policy.model.token_logprobs(&rows, None));
    assert!((together - base).abs().max().double_value(&[]) > 1e-2);
}

#[test]
fn many_adapters_while_sampling() {
    // Generation with routed adapters: each row samples exactly as it would alone.
    let (_tmp, dir) = common::tiny_checkpoint(7);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    let all = policies::lora::parse_targets("all").unwrap();
    let adapters = [busy(&policy, 2, all.clone(), 4), busy(&policy, 1, all, 5)];
    let refs: Vec<&Adapter> = adapters.iter().collect();
    let prompt = policy.tokenizer.encode("12+3=", true).unwrap();
    let params = policies::SamplingParams { max_new_tokens: 10, seed: 9, ..Default::default() };
    let routes = [Some(0), Some(1), None];
    let stacked = tch::no_grad(|| LoraRuntime::stack(cfg, &refs, Kind::Float).unwrap().with_rows(&routes, Device::Cpu));
    let prompts = vec![prompt.clone(); 3];
    let together = policy.generate(Some(&stacked), &prompts, &[0, 0, 0], &params).unwrap();
    for (i, route) in routes.iter().enumerate() {
        let alone = match route {
            Some(k) => {
                let single = tch::no_grad(|| LoraRuntime::single(cfg, &adapters[*k], Kind::Float)).unwrap();
                policy.generate(Some(&single), std::slice::from_ref(&prompt), &[0], &params).unwrap()
            }
            None => policy.generate(None, std::slice::from_ref(&prompt), &[0], &params).unwrap(),
        };
        assert_eq!(together[i].tokens, alone[0].tokens, "row {i}");
    }
}

#[test]
fn gradients_reach_the_adapter_only() {
    let (_tmp, dir) = common::tiny_checkpoint(8);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    let adapter = Adapter::init(cfg, LoraConfig::new(2, 32.0, policies::lora::parse_targets("all").unwrap()).unwrap(), 1, Device::Cpu);
    let lora = LoraRuntime::single(cfg, &adapter, Kind::Float).unwrap();
    let loss = -policy.model.token_logprobs(&tokens(), Some(&lora)).mean(Kind::Float);
    loss.backward();
    let params = adapter.parameters();
    assert_eq!(params.len(), 1);
    let grad = params[0].grad();
    assert!(grad.defined() && grad.abs().sum(Kind::Float).double_value(&[]) > 0.0, "adapter gets a gradient");
    for (name, w) in policy.model.named_weights() {
        assert!(!w.requires_grad(), "{name} requires grad");
        assert!(!w.grad().defined(), "{name} has a gradient buffer");
    }
    // Per-module views see their slice of the flat gradient: B's gradient is non-zero at init
    // (A is random), A's is zero (B is zero).
    let per_module: i64 = adapter.named_tensors().iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(per_module, adapter.num_parameters());
}

#[test]
fn a_snapshot_does_not_follow_later_training() {
    let (_tmp, dir) = common::tiny_checkpoint(11);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let cfg = &policy.model.config;
    let adapter = Adapter::init(cfg, LoraConfig::new(1, 32.0, policies::lora::parse_targets("all").unwrap()).unwrap(), 1, Device::Cpu);
    let snapshot = adapter.snapshot();
    adapter.randomize_b(0.05, 3); // stands in for an optimiser step
    let frozen = tch::no_grad(|| policy.model.token_logprobs(&tokens(), Some(&LoraRuntime::single(cfg, &snapshot, Kind::Float).unwrap())));
    let base = tch::no_grad(|| policy.model.token_logprobs(&tokens(), None));
    let moved = tch::no_grad(|| policy.model.token_logprobs(&tokens(), Some(&LoraRuntime::single(cfg, &adapter, Kind::Float).unwrap())));
    assert!(frozen.equal(&base), "the snapshot keeps B = 0");
    assert!((moved - base).abs().max().double_value(&[]) > 1e-3, "the live adapter moved");
}

#[test]
fn learner_gradients_are_the_same_with_fused_kernels() {
    // The whole learner path (norms, rotary, SwiGLU forward and backward, LoRA on every layer and
    // the head) through the fused CPU kernels and through plain libtorch ops; then with modules
    // missing from the fused groups (k of q|k|v, gate of gate|up), which leaves gaps between the
    // blocks of B the fused backward works in.
    let (_tmp, dir) = common::tiny_checkpoint(9);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let all = [policies::lora::parse_targets("all").unwrap(), vec![Module::LmHead]].concat();
    let gaps = policies::lora::parse_targets("q_proj,v_proj,o_proj,up_proj,down_proj").unwrap();
    for (what, targets) in [("all", all), ("gaps", gaps)] {
        let adapter = busy(&policy, 2, targets, 4);
        let grad = |fused: bool| {
            policies::kernels::with_fused(fused, || {
                let lora = LoraRuntime::single(&policy.model.config, &adapter, Kind::Float).unwrap();
                let loss = -policy.model.token_logprobs(&tokens(), Some(&lora)).mean(Kind::Float);
                let grads = Tensor::run_backward(&[loss], &adapter.parameters(), false, false);
                Tensor::cat(&grads.iter().map(|g| g.view([-1])).collect::<Vec<_>>(), 0)
            })
        };
        let (fused, eager) = (grad(true), grad(false));
        let scale = eager.abs().max().double_value(&[]);
        let diff = (&fused - &eager).abs().max().double_value(&[]);
        assert!(scale > 0.0 && diff < 1e-5 * scale.max(1.0), "{what}: adapter gradients differ by {diff} (largest {scale})");
    }
}
