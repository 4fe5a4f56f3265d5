//! The fused CPU kernels against the eager ops they replace: same values and same gradients.

use policies::kernels::{self, with_fused};
use policies::model::rms_norm;
use tch::{Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn randn(shape: &[i64], scale: f64) -> Tensor {
    (Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)) * scale).set_requires_grad(true)
}

/// Value and input gradients of `f` under a fixed upstream gradient, fused and eager.
fn both_ways(inputs: &[&Tensor], f: impl Fn() -> Tensor) -> [(Tensor, Vec<Tensor>); 2] {
    [true, false].map(|fused| {
        with_fused(fused, || {
            let y = f();
            // A fixed upstream gradient (not from the global RNG, which parallel tests share).
            let upstream = Tensor::arange(y.numel() as i64, (Kind::Float, tch::Device::Cpu)).sin().view(y.size().as_slice());
            let loss = (y.shallow_clone() * upstream).sum(Kind::Float);
            (y.detach(), Tensor::run_backward(&[loss], inputs, false, false))
        })
    })
}

fn assert_same(what: &str, [(y1, g1), (y0, g0)]: [(Tensor, Vec<Tensor>); 2], tol: f64) {
    assert!(max_diff(&y1, &y0) < tol, "{what}: values differ by {}", max_diff(&y1, &y0));
    for (i, (a, b)) in g1.iter().zip(&g0).enumerate() {
        assert!(max_diff(a, b) < tol, "{what}: gradient {i} differs by {}", max_diff(a, b));
    }
}

#[test]
fn rms_norm_matches_eager_values_and_gradients() {
    tch::manual_seed(0);
    let x = randn(&[3, 5, 96], 2.0);
    let w = randn(&[96], 1.0);
    assert_same("rms_norm", both_ways(&[&x, &w], || rms_norm(&x, &w, 1e-6)), 1e-5);
    // A strided view (qwen3's q/k norms see slices of the fused qkv output).
    let wide = randn(&[2, 7, 6, 32], 1.0);
    let hw = randn(&[32], 1.0);
    let slice = || wide.narrow(2, 1, 3);
    assert_same("rms_norm on a view", both_ways(&[&wide, &hw], || rms_norm(&slice(), &hw, 1e-5)), 1e-5);
}

#[test]
fn rope_matches_eager_values_and_gradients() {
    tch::manual_seed(1);
    let (b, t, heads, hd) = (2, 9, 5, 16);
    let qkv = randn(&[b, t, heads + 2, hd], 1.0);
    let cos = Tensor::rand([b * t, hd], (Kind::Float, tch::Device::Cpu));
    let sin = Tensor::rand([b * t, hd], (Kind::Float, tch::Device::Cpu)) - 0.5;
    let f = || policies::rope::apply(&qkv.narrow(2, 0, heads), &cos, &sin);
    assert_same("rope", both_ways(&[&qkv], f), 1e-6);
}

#[test]
fn silu_mul_matches_eager_values_and_gradients() {
    tch::manual_seed(2);
    // Wide enough range to reach the clamps of the kernel's exp.
    let gu = randn(&[37, 2 * 45], 30.0);
    let f = || {
        if kernels::applies(&gu) {
            kernels::silu_mul(&gu)
        } else {
            let parts = gu.chunk(2, 1);
            parts[0].silu() * &parts[1]
        }
    };
    let [(y1, g1), (y0, g0)] = both_ways(&[&gu], f);
    // Relative: values reach ~1e3.
    let rel = |a: &Tensor, b: &Tensor| max_diff(a, b) / (1.0 + b.abs().max().double_value(&[]));
    assert!(rel(&y1, &y0) < 1e-6, "silu_mul values differ: {}", rel(&y1, &y0));
    assert!(rel(&g1[0], &g0[0]) < 1e-6, "silu_mul gradients differ: {}", rel(&g1[0], &g0[0]));
}

/// Prefill then decode through the KV cache with the fused kernels and with the eager ops:
/// hidden states agree. Head sizes 64, 128 and 32 (compiled in) and 24 (the general loop); query
/// heads per kv head 2, 4 (for size 128: two chunks of 2), 3 (chunks of 2 and 1) and 8 (two of 4);
/// one row with 3-token steps, 3 rows decoding, 6 rows with 2-token steps; rows of different
/// lengths.
#[test]
fn cached_forward_fused_equals_eager() {
    for (head_dim, heads, kv_heads) in [(64, 4, 2), (24, 4, 2), (128, 8, 2), (32, 6, 2), (64, 8, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let shape = serde_json::json!({"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": heads,
                                       "num_key_value_heads": kv_heads, "intermediate_size": 80, "head_dim": head_dim});
        policies::init::write_random_checkpoint(dir.path(), &shape, 5, 0.3).unwrap();
        let model = policies::Model::load(dir.path(), None, tch::Device::Cpu).unwrap();
        let _g = tch::no_grad_guard();
        for (rows, step_len) in [(1, 3), (3, 1), (6, 2)] {
            let run = |fused: bool| {
                with_fused(fused, || {
                    let mut cache = model.new_cache(rows, 40);
                    let prompt = Tensor::arange_start(4, 4 + rows * 7, (Kind::Int64, tch::Device::Cpu)).view([rows, 7]);
                    let counts: Vec<i64> = (0..rows).map(|r| 7 - r % 3).collect(); // rows of different lengths
                    let mut out = vec![model.forward_cached(&prompt, &counts, &mut cache, None).unwrap()];
                    for step in 0..4 {
                        let next = Tensor::full([rows, step_len], 10 + step, (Kind::Int64, tch::Device::Cpu));
                        out.push(model.forward_cached(&next, &vec![step_len; rows as usize], &mut cache, None).unwrap());
                    }
                    out
                })
            };
            for (i, (a, b)) in run(true).iter().zip(run(false)).enumerate() {
                let d = max_diff(a, &b);
                assert!(d < 1e-4, "head_dim {head_dim}, {heads}/{kv_heads} heads, {rows} rows: call {i} differs by {d}");
            }
        }
    }
}

/// The causal attention kernel against libtorch's scaled_dot_product_attention: values and the
/// gradients of q, k and v, for head sizes 32, 64 and 128, lengths that are and are not multiples of
/// the kernel's 16-row blocks, GQA groups of 1, 2 and 4, and strided inputs (views of one buffer).
#[test]
fn causal_attention_matches_sdpa_values_and_gradients() {
    tch::manual_seed(2);
    for (hd, t, heads, kv_heads) in [(64, 1, 2, 2), (64, 37, 4, 2), (128, 16, 4, 1), (64, 50, 8, 2), (128, 33, 2, 2), (32, 20, 4, 2)] {
        let b = 2;
        let qkv = randn(&[b, t, heads + 2 * kv_heads, hd], 1.5);
        let parts = || qkv.split_with_sizes([heads, kv_heads, kv_heads], 2);
        let fused = || {
            let p = parts();
            kernels::causal_attention(&p[0], &p[1], &p[2])
        };
        let reference = || {
            let p = parts();
            let (q, k, v) = (p[0].transpose(1, 2), p[1].transpose(1, 2), p[2].transpose(1, 2));
            let out = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, kv_heads != heads);
            out.transpose(1, 2).reshape([b * t, heads * hd])
        };
        let upstream = Tensor::arange(b * t * heads * hd, (Kind::Float, tch::Device::Cpu)).sin().view([b * t, heads * hd]);
        let run = |f: &dyn Fn() -> Tensor| {
            let y = f();
            let loss = (y.shallow_clone() * &upstream).sum(Kind::Float);
            (y.detach(), Tensor::run_backward(&[loss], &[&qkv], false, false))
        };
        let what = format!("causal attention hd {hd}, T {t}, {heads}/{kv_heads} heads");
        assert_same(&what, [run(&fused), run(&reference)], 2e-5);

        // With the rotation inside the kernel, against eager rotation then SDPA.
        let cos = Tensor::rand([b * t, hd], (Kind::Float, tch::Device::Cpu));
        let sin = Tensor::rand([b * t, hd], (Kind::Float, tch::Device::Cpu)) - 0.5;
        let rotated = || kernels::rope_causal_attention(&qkv, heads, kv_heads, &cos, &sin);
        let rotate_then_sdpa = || {
            let p = parts();
            let qk = with_fused(false, || policies::rope::apply(&qkv.narrow(2, 0, heads + kv_heads), &cos, &sin));
            let (q, k) = (qk.narrow(2, 0, heads).transpose(1, 2), qk.narrow(2, heads, kv_heads).transpose(1, 2));
            let out = Tensor::scaled_dot_product_attention(&q, &k, &p[2].transpose(1, 2), None::<Tensor>, 0.0, true, None, kv_heads != heads);
            out.transpose(1, 2).reshape([b * t, heads * hd])
        };
        assert_same(&format!("rope + {what}"), [run(&rotated), run(&rotate_then_sdpa)], 2e-5);

        // Tables with one row per position, shared by every batch row, against the same rows
        // repeated for each batch row.
        let (cos_t, sin_t) = (cos.narrow(0, 0, t), sin.narrow(0, 0, t));
        let (cos_bt, sin_bt) = (cos_t.repeat([b, 1]), sin_t.repeat([b, 1]));
        let shared = || kernels::rope_causal_attention(&qkv, heads, kv_heads, &cos_t, &sin_t);
        let per_row = || kernels::rope_causal_attention(&qkv, heads, kv_heads, &cos_bt, &sin_bt);
        assert_same(&format!("shared tables, {what}"), [run(&shared), run(&per_row)], 1e-6);
    }
}

/// The learner's fused linear + LoRA against the separate ops it replaces: values and the
/// gradients of x, the residual or bias it starts from, A and B; widths 1 and 6, and a
/// block-diagonal B of three blocks (ranks 2, 1, 3 over ragged column ranges), whose gradient
/// must match inside the blocks and be zero outside.
/// 1 where b_t [rank, n] may be non-zero under `blocks` (all of it when there are none), else 0.
fn block_mask(rank: i64, n: i64, blocks: &[[i64; 4]]) -> Tensor {
    if blocks.is_empty() {
        return Tensor::ones([rank, n], (Kind::Float, tch::Device::Cpu));
    }
    let inside = Tensor::zeros([rank, n], (Kind::Float, tch::Device::Cpu));
    for &[r0, r1, c0, c1] in blocks {
        let _ = inside.narrow(0, r0, r1 - r0).narrow(1, c0, c1 - c0).fill_(1.0);
    }
    inside
}

/// The learner's linear layer with its adapter (`linear_lora`, and `linear_plus_update` given
/// x·a_t) against the matmuls, with and without the blocks of a block-diagonal B.
#[test]
fn linear_lora_matches_eager_values_and_gradients() {
    tch::manual_seed(3);
    // Enough rows for two parallel tasks, and a ragged last row block.
    let (m, k, n) = (141, 48, 80);
    let w = Tensor::randn([k, n], (Kind::Float, tch::Device::Cpu)) * 0.2;
    let three_blocks: &[[i64; 4]] = &[[0, 2, 0, 30], [2, 3, 30, 50], [3, 6, 50, 80]];
    for (rank, blocks) in [(1, &[][..]), (6, &[][..]), (6, three_blocks)] {
        let inside = block_mask(rank, n, blocks);
        let x = randn(&[m, k], 1.0);
        let a_t = randn(&[k, rank], 0.3);
        let b_t = (randn(&[rank, n], 0.3) * &inside).detach().set_requires_grad(true);
        let residual = randn(&[m, n], 1.0);
        let bias = randn(&[n], 1.0);
        for (what, init) in [("no init", None), ("residual", Some(&residual)), ("bias", Some(&bias))] {
            let fused = || kernels::linear_lora(&x, &w, init, &a_t, &b_t, blocks);
            let eager = || {
                let y = match init {
                    Some(i) => i.addmm(&x, &w),
                    None => x.mm(&w),
                };
                y + x.mm(&a_t).mm(&b_t)
            };
            let mut inputs = vec![&x, &a_t, &b_t];
            inputs.extend(init);
            let upstream = Tensor::arange(m * n, (Kind::Float, tch::Device::Cpu)).sin().view([m, n]);
            let run = |f: &dyn Fn() -> Tensor, mask_b: bool| {
                let y = f();
                let loss = (y.shallow_clone() * &upstream).sum(Kind::Float);
                let mut grads = Tensor::run_backward(&[loss], &inputs, false, false);
                if mask_b {
                    grads[2] = &grads[2] * &inside;
                }
                (y.detach(), grads)
            };
            let what = format!("rank {rank}, {} blocks, {what}", blocks.len());
            assert_same(&format!("linear_lora {what}"), [run(&fused, false), run(&eager, true)], 1e-4);
            // x·a_t made outside (here by a plain matmul, whose backward takes d(x·a_t) back).
            let given = || kernels::linear_plus_update(&x, &w, init, &x.mm(&a_t), &b_t, blocks);
            assert_same(&format!("linear_plus_update {what}"), [run(&given, false), run(&eager, true)], 1e-4);
        }
    }
}

/// The norm and SwiGLU variants that also make the adapter's x·a_t (and take its gradient back)
/// against the plain ops and a matmul: widths compiled in (1, 2, 6, 12) and not (11), rows
/// for two parallel tasks with a ragged end, rows not a multiple of 16 wide, and an input
/// without a gradient (the first layer's norm sees the frozen embedding).
#[test]
fn norm_and_swiglu_with_update_input_match_eager() {
    tch::manual_seed(5);
    let (m, d, inter) = (141, 40, 45);
    for rank in [1, 2, 6, 11, 12] {
        let w = randn(&[d], 1.0);
        let a_t = randn(&[d, rank], 0.3);
        for x_grad in [true, false] {
            let x = randn(&[m, d], 2.0).set_requires_grad(x_grad);
            let f = || {
                let (y, xa) = if kernels::applies(&x) {
                    kernels::rms_norm_lora(&x, &w, 1e-6, &a_t)
                } else {
                    let y = rms_norm(&x, &w, 1e-6);
                    let xa = y.mm(&a_t);
                    (y, xa)
                };
                Tensor::cat(&[y.view([-1]), xa.view([-1])], 0)
            };
            let inputs: Vec<&Tensor> = if x_grad { vec![&x, &w, &a_t] } else { vec![&w, &a_t] };
            assert_same(&format!("rms_norm_lora rank {rank}, x grad {x_grad}"), both_ways(&inputs, f), 1e-4);
        }
        let gu = randn(&[m, 2 * inter], 3.0);
        let a_t = randn(&[inter, rank], 0.3);
        let f = || {
            let (act, xa) = if kernels::applies(&gu) {
                kernels::silu_mul_lora(&gu, &a_t)
            } else {
                let parts = gu.chunk(2, 1);
                let act = parts[0].silu() * &parts[1];
                let xa = act.mm(&a_t);
                (act, xa)
            };
            Tensor::cat(&[act.view([-1]), xa.view([-1])], 0)
        };
        assert_same(&format!("silu_mul_lora rank {rank}"), both_ways(&[&gu, &a_t], f), 1e-4);
    }
}

/// The sampling-time adapter update against the two matmuls it replaces, with and without a
/// per-row adapter mask (rows of 3 tokens) and with a strided x.
#[test]
fn lora_add_matches_matmuls() {
    tch::manual_seed(4);
    let _g = tch::no_grad_guard();
    let (rows, tokens, k, n, rank) = (4, 3, 40, 72, 5);
    let wide = Tensor::randn([rows * tokens, k + 8], (Kind::Float, tch::Device::Cpu));
    let x = wide.narrow(1, 3, k);
    let a_t = Tensor::randn([k, rank], (Kind::Float, tch::Device::Cpu));
    let b_t = Tensor::randn([rank, n], (Kind::Float, tch::Device::Cpu));
    let y0 = Tensor::randn([rows * tokens, n], (Kind::Float, tch::Device::Cpu));
    let mask = Tensor::from_slice(&[1f32, 1., 0., 0., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 0., 1., 0., 1., 0., 1.]).view([rows, rank]);
    for m in [None, Some(&mask)] {
        let got = kernels::lora_add(y0.copy(), &x, &a_t, &b_t, m);
        let xa = x.mm(&a_t);
        let xa = match m {
            Some(m) => (xa.view([rows, tokens, rank]) * m.unsqueeze(1)).view([-1, rank]),
            None => xa,
        };
        let want = &y0 + xa.mm(&b_t);
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "mask {}: differs by {d}", m.is_some());
    }
}

/// Pre-packed weights give the product plain `mm` gives: any row count, with no initial value,
/// a residual [M, N] or a bias [N], and a strided left operand.
#[test]
fn packed_matmul_equals_mm() {
    let w = Tensor::randn([96, 40], (Kind::Float, tch::Device::Cpu));
    if !kernels::packing_applies(&w) {
        eprintln!("this libtorch has no MKL packed GEMM: nothing to compare");
        return;
    }
    let packed = kernels::PackedWeight::new(&w);
    for rows in [1, 3, 64, 300] {
        let wide = Tensor::randn([rows, 130], (Kind::Float, tch::Device::Cpu));
        let x = wide.narrow(1, 7, 96); // rows 130 floats apart
        let residual = Tensor::randn([rows, 40], (Kind::Float, tch::Device::Cpu));
        let bias = Tensor::randn([40], (Kind::Float, tch::Device::Cpu));
        let cases = [
            ("plain", packed.matmul(&x, None), x.mm(&w)),
            ("residual", packed.matmul(&x, Some(&residual)), residual.addmm(&x, &w)),
            ("bias", packed.matmul(&x, Some(&bias)), bias.addmm(&x, &w)),
        ];
        for (what, got, want) in cases {
            assert_eq!(got.size(), want.size());
            let d = max_diff(&got, &want);
            assert!(d < 1e-4, "{rows} rows, {what}: differs by {d}");
        }
    }
}

/// Scoring without gradients goes through packed weights; once full fine-tuning owns the
/// weights, a change to them must show in the next forward (no stale packed copy).
#[test]
fn full_fine_tuning_sees_its_own_weight_updates() {
    let dir = tempfile::tempdir().unwrap();
    let shape = serde_json::json!({"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                                   "num_key_value_heads": 2, "intermediate_size": 96, "head_dim": 16});
    policies::init::write_random_checkpoint(dir.path(), &shape, 3, 0.3).unwrap();
    let mut model = policies::Model::load(dir.path(), None, tch::Device::Cpu).unwrap();
    let tokens = Tensor::arange_start(4, 20, (Kind::Int64, tch::Device::Cpu)).view([2, 8]);
    let score = |m: &policies::Model| tch::no_grad(|| m.token_logprobs(&tokens, None));
    let before = score(&model); // packs the weights
    let params = model.full_parameters();
    let _ = score(&model); // a sampler's forward between optimiser steps
    tch::no_grad(|| {
        for p in &params {
            let _ = p.shallow_clone().g_mul_scalar_(1.5);
        }
    });
    let after = score(&model);
    let mut reference = policies::Model::load(dir.path(), None, tch::Device::Cpu).unwrap();
    let ref_params = reference.full_parameters();
    tch::no_grad(|| {
        for p in &ref_params {
            let _ = p.shallow_clone().g_mul_scalar_(1.5);
        }
    });
    assert!(max_diff(&before, &after) > 1e-2, "scaling every weight changed nothing");
    assert!(max_diff(&after, &score(&reference)) < 1e-5);
}

#[test]
#[ignore = "timing probe: cargo test --release -p policies --test kernels -- --ignored --nocapture"]
fn timing_probe() {
    let time = |what: &str, f: &dyn Fn() -> Tensor| {
        for _ in 0..3 {
            let _ = f();
        }
        let start = std::time::Instant::now();
        for _ in 0..50 {
            let _ = f();
        }
        println!("{what}: {:.1} us", start.elapsed().as_secs_f64() * 1e6 / 50.0);
    };
    // The small preset's learner step: 16 rows of 96 tokens, 8 query heads over 4 kv heads of 64.
    let (b, t, heads, kv_heads, hd) = (16, 96, 8, 4, 64);
    let qkv = Tensor::randn([b, t, heads + 2 * kv_heads, hd], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    // One table row per position, as the model passes them for fresh sequences.
    let cos = Tensor::rand([t, hd], (Kind::Float, tch::Device::Cpu));
    let sin = Tensor::rand([t, hd], (Kind::Float, tch::Device::Cpu)) - 0.5;
    let upstream = Tensor::randn([b * t, heads * hd], (Kind::Float, tch::Device::Cpu));
    time("rope_causal_attention forward [16, 96, 8/4 heads, 64]", &|| {
        tch::no_grad(|| kernels::rope_causal_attention(&qkv, heads, kv_heads, &cos, &sin))
    });
    time("rope_causal_attention forward + backward", &|| {
        let y = kernels::rope_causal_attention(&qkv, heads, kv_heads, &cos, &sin);
        Tensor::run_backward(&[(y * &upstream).sum(Kind::Float)], &[&qkv], false, false).pop().unwrap()
    });
    for rows in [16, 64, 2048] {
        let gu = Tensor::randn([rows, 3072], (Kind::Float, tch::Device::Cpu));
        time(&format!("silu_mul fused [{rows}, 3072]"), &|| kernels::silu_mul(&gu));
        time(&format!("silu_mul eager [{rows}, 3072]"), &|| {
            let p = gu.chunk(2, 1);
            p[0].silu() * &p[1]
        });
        let x = Tensor::randn([rows, 512], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([512], (Kind::Float, tch::Device::Cpu));
        time(&format!("rms_norm fused [{rows}, 512]"), &|| with_fused(true, || rms_norm(&x, &w, 1e-6)));
        time(&format!("rms_norm eager [{rows}, 512]"), &|| with_fused(false, || rms_norm(&x, &w, 1e-6)));
    }
}

