//! Generation through the KV cache must score exactly what a cache-free forward scores.

mod common;

use policies::{Policy, SamplingParams};
use tch::{Device, Kind, Tensor};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// log p(seq[i] | seq[<i]) for i >= start, from one causal forward without a cache.
fn recomputed(policy: &Policy, seq: &[i64], start: usize) -> Vec<f32> {
    let tokens = Tensor::from_slice(seq).view([1, -1]);
    let logp = tch::no_grad(|| policy.model.token_logprobs(&tokens, None));
    let all = Vec::<f32>::try_from(&logp.view([-1]).to_kind(Kind::Float)).unwrap();
    all[start - 1..].to_vec()
}

#[test]
fn cached_sampling_logprobs_equal_full_recompute() {
    let (_tmp, dir) = common::tiny_checkpoint(1);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    // Prompts of different lengths in one batch; rows finish at different times (eos) and the
    // batch shrinks as they do.
    let prompts: Vec<Vec<i64>> = ["1+1=", "12+35-8=", "a much longer prompt than the others", "7"]
        .iter()
        .map(|p| policy.tokenizer.encode(p, true).unwrap())
        .collect();
    let params = SamplingParams { max_new_tokens: 30, seed: 11, ..Default::default() };
    let streams: Vec<u64> = (0..prompts.len() as u64).collect();
    let out = policy.generate(None, &prompts, &streams, &params).unwrap();
    for (prompt, c) in prompts.iter().zip(&out) {
        assert_eq!(c.tokens.len(), c.logprobs.len());
        let seq: Vec<i64> = prompt.iter().chain(&c.tokens).copied().collect();
        let reference = recomputed(&policy, &seq, prompt.len());
        let err = max_abs_diff(&c.logprobs, &reference);
        assert!(err < 1e-4, "cache vs recompute differ by {err}");
    }
}

#[test]
fn same_seed_same_samples_whatever_the_batch() {
    let (_tmp, dir) = common::tiny_checkpoint(2);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let a = policy.tokenizer.encode("3+4=", true).unwrap();
    let b = policy.tokenizer.encode("something else entirely", true).unwrap();
    let params = SamplingParams { max_new_tokens: 12, seed: 5, ..Default::default() };
    let alone = policy.generate(None, std::slice::from_ref(&a), &[7], &params).unwrap();
    let batched = policy.generate(None, &[b, a], &[3, 7], &params).unwrap();
    assert_eq!(alone[0].tokens, batched[1].tokens, "a sequence's samples depend on its seed and stream only");
    let other_seed = policy.generate(None, &[alone[0].tokens.clone()], &[7], &SamplingParams { seed: 6, ..params }).unwrap();
    assert_eq!(other_seed.len(), 1);
}

#[test]
fn extending_a_cached_row_equals_recompute() {
    // The multi-turn path: a row that already holds a sequence receives several tokens at once
    // (an environment's observation) while another row decodes one token.
    let (_tmp, dir) = common::tiny_checkpoint(3);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let model = &policy.model;
    let first: Vec<i64> = vec![1, 20, 21, 22, 23];
    let second: Vec<i64> = vec![1, 30, 31];
    let extra: Vec<i64> = vec![40, 41, 42, 43];
    let _g = tch::no_grad_guard();
    let mut cache = model.new_cache(2, 32);
    let pad = |v: &[i64], w: usize| v.iter().copied().chain(std::iter::repeat(0)).take(w).collect::<Vec<_>>();
    let prefill = Tensor::from_slice(&[pad(&first, 5), pad(&second, 5)].concat()).view([2, 5]);
    let _ = model.forward_cached(&prefill, &[5, 3], &mut cache, None).unwrap();
    let step = Tensor::from_slice(&[pad(&extra, 4), pad(&[50], 4)].concat()).view([2, 4]);
    let hidden = model.forward_cached(&step, &[4, 1], &mut cache, None).unwrap();
    assert_eq!(cache.lens(), &[9, 4]);
    let logits = model.logits(&hidden, None).log_softmax(-1, Kind::Float);
    // Row 0's last new position predicts the token after `first + extra`.
    let full: Vec<i64> = first.iter().chain(&extra).copied().collect();
    let reference = model.forward_hidden(&Tensor::from_slice(&full).view([1, -1]), None);
    let ref_logits = model.logits(&reference, None).log_softmax(-1, Kind::Float);
    let diff = (logits.get(0).narrow(0, 0, 4) - ref_logits.get(0).narrow(0, 5, 4)).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "row 0 differs by {diff}");
    let full2: Vec<i64> = second.iter().chain(&[50]).copied().collect();
    let reference2 = model.forward_hidden(&Tensor::from_slice(&full2).view([1, -1]), None);
    let ref2 = model.logits(&reference2, None).log_softmax(-1, Kind::Float);
    let diff2 = (logits.get(1).get(0) - ref2.get(0).get(3)).abs().max().double_value(&[]);
    assert!(diff2 < 1e-4, "row 1 differs by {diff2}");
}

#[test]
fn stop_strings_and_eos_end_sequences() {
    let (_tmp, dir) = common::tiny_checkpoint(4);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let prompt = policy.tokenizer.encode("go", true).unwrap();
    let free = policy.generate(None, std::slice::from_ref(&prompt), &[0], &SamplingParams { max_new_tokens: 40, seed: 1, ..Default::default() }).unwrap();
    let text = &free[0].text;
    assert!(text.chars().count() >= 3, "the test needs a few characters of output: {text:?}");
    // Stop at the first, then at the third character the model produced: the same sequence, cut
    // there (at the first, the text is empty).
    for at in [0, 2] {
        let stop: String = text.chars().skip(at).take(1).collect();
        let params = SamplingParams { max_new_tokens: 40, seed: 1, stop: vec![stop.clone()], ..Default::default() };
        let cut = policy.generate(None, std::slice::from_ref(&prompt), &[0], &params).unwrap();
        assert_eq!(cut[0].finish_reason, policies::FinishReason::Stop);
        assert!(!cut[0].text.contains(&stop), "{:?} still holds {stop:?}", cut[0].text);
        assert!(text.starts_with(&cut[0].text));
        assert_eq!(&free[0].tokens[..cut[0].tokens.len()], &cut[0].tokens[..]);
        if at == 0 {
            assert_eq!(cut[0].text, "");
        }
    }
}

#[test]
fn a_prefilled_row_joins_a_running_batch() {
    // Continuous batching: a prompt prefilled in its own cache is copied into a slot of a cache
    // that holds other sequences; decoding then continues as if it had been there all along.
    let (_tmp, dir) = common::tiny_checkpoint(10);
    let policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let model = &policy.model;
    let _g = tch::no_grad_guard();
    let newcomer: Vec<i64> = vec![1, 30, 31, 32, 33, 34];
    let mut big = model.new_cache(3, 32);
    let others = Tensor::from_slice(&[1i64, 5, 6, 7, 1, 8, 9, 10, 1, 11, 12, 13]).view([3, 4]);
    let _ = model.forward_cached(&others, &[4, 4, 4], &mut big, None).unwrap();
    let mut small = model.new_cache(1, 16);
    let _ = model.forward_cached(&Tensor::from_slice(&newcomer).view([1, -1]), &[6], &mut small, None).unwrap();
    big.copy_rows_from(&small, &[0], &[1]).unwrap();
    assert_eq!(big.lens(), &[4, 6, 4]);
    let next = Tensor::from_slice(&[20i64, 40, 21]).view([3, 1]);
    let hidden = model.forward_cached(&next, &[1, 1, 1], &mut big, None).unwrap();
    let got = model.logits(&hidden.get(1), None).log_softmax(-1, Kind::Float);
    let full: Vec<i64> = newcomer.iter().copied().chain([40]).collect();
    let want = model.logits(&model.forward_hidden(&Tensor::from_slice(&full).view([1, -1]), None), None)
        .get(0)
        .get(6)
        .log_softmax(-1, Kind::Float);
    let diff = (got.get(0) - want).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "joined row differs by {diff}");
}

#[test]
fn half_precision_weights_track_f32() {
    // bf16/f16 weights compute in that dtype; log-probs stay within the format's precision of f32.
    let (_tmp, dir) = common::tiny_checkpoint(9);
    let f32_policy = Policy::load(&dir, None, Device::Cpu).unwrap();
    let tokens = Tensor::from_slice(&[1i64, 20, 21, 30, 40, 41, 50, 7]).view([1, 8]);
    let reference = tch::no_grad(|| f32_policy.model.token_logprobs(&tokens, None));
    for kind in [Kind::BFloat16, Kind::Half] {
        let policy = Policy::load(&dir, Some(kind), Device::Cpu).unwrap();
        assert_eq!(policy.model.kind(), kind);
        let logp = tch::no_grad(|| policy.model.token_logprobs(&tokens, None));
        assert_eq!(logp.kind(), Kind::Float, "log-probs are reported in f32");
        let diff = (logp - &reference).abs().max().double_value(&[]);
        assert!(diff < 0.15, "{kind:?} log-probs differ from f32 by {diff}");
        let prompt = policy.tokenizer.encode("1+2=", true).unwrap();
        let out = policy.generate(None, &[prompt], &[0], &SamplingParams { max_new_tokens: 5, ..Default::default() }).unwrap();
        assert_eq!(out[0].tokens.len(), out[0].logprobs.len());
    }
}
