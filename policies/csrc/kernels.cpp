// Fused float32 CPU kernels for the decoder. Each replaces a chain of eager ops with one pass
// over memory and one dispatch: RMSNorm (6 ops forward, ~10 backward), rotary embedding (4 and
// 4), SwiGLU's silu(gate)·up (3 and 5), and cached attention with its two cache writes (7). On
// the models RL post-training runs on CPU, such chains cost as much as the matmuls.
//
// The first three are torch::autograd::Functions with hand-written backward passes (checked
// against the eager ops' gradients in policies/tests/kernels.rs); cached attention serves
// sampling only. Rust calls them through the extern "C" functions at the end, which take and
// return at::Tensor handles (what tch's tensors wrap) and report failures as a null result plus
// a message, never by unwinding across the language boundary.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Each hot loop is compiled for AVX-512, AVX2 and plain x86-64; the loader picks by CPU features.
// (Built with -fno-trapping-math, without which GCC will not vectorize the clamps in exp_approx,
// and -fopenmp, without which at::parallel_for silently runs on one thread.)
#define NR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// Helpers called from those loops must be inlined into each clone to get its instruction set.
#define NR_INLINE inline __attribute__((always_inline))

thread_local std::string last_error;

// Kernels index rows through strides but need each row's last axis contiguous.
at::Tensor last_axis_contiguous(const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// Rows per parallel task: enough work that a task outweighs waking a thread.
int64_t grain_rows(int64_t row_len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_len, 1)); }

// exp(x) to about 2 ulp, in a form the compiler vectorizes: x = n·ln2 + r with |r| <= ln2/2,
// e^r from its Taylor polynomial to r^6, and 2^n written straight into the exponent bits.
// x is clamped to ±80, well inside the normal range: the vectorized clamp evaluates both sides,
// and results near the denormal range (e^-87) trigger microcode assists that cost 15× the loop.
// Callers lose nothing: e^-80 ≈ 2e-35 is 0 next to the 1 it is added to.
NR_INLINE float exp_approx(float x) {
  x = x < -80.0f ? -80.0f : x;
  x = x > 80.0f ? 80.0f : x;
  const float shifter = 12582912.0f;  // 1.5·2^23: adding it rounds to the nearest integer
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;  // ln2 in two parts (Cody–Waite), so r keeps its precision
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// ---- RMSNorm: y = w · (x / sqrt(mean(x²) + eps)), as transformers computes it in float32 ----

NR_CLONES void rms_norm_rows(const float* x, const float* w, float* y, float* rstd, int64_t d, float eps,
                             int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < d; ++j) ss += xi[j] * xi[j];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
    rstd[i] = r;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yi[j] = w[j] * (xi[j] * r);
  }
}

// dx = rstd·(g − x̂·mean(g·x̂)) with g = dy·w and x̂ = x·rstd.
NR_CLONES void rms_norm_grad_rows(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                                  int64_t d, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* dyi = dy + i * d;
    const float* xi = x + i * d;
    float* dxi = dx + i * d;
    const float r = rstd[i];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += dyi[j] * w[j] * xi[j];
    const float c = dot * r * r / static_cast<float>(d);
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) dxi[j] = r * (dyi[j] * w[j] - xi[j] * c);
  }
}

struct RmsNorm : public torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight, double eps) {
    const at::Tensor x = input.contiguous();
    const at::Tensor w = weight.contiguous();
    const int64_t d = x.size(-1);
    TORCH_CHECK(w.numel() == d, "rms_norm: weight has ", w.numel(), " elements for rows of ", d);
    const int64_t rows = x.numel() / std::max<int64_t>(d, 1);
    at::Tensor y = at::empty_like(x);
    at::Tensor rstd = at::empty({rows}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(d), [&](int64_t b, int64_t e) {
      rms_norm_rows(xp, wp, yp, rp, d, static_cast<float>(eps), b, e);
    });
    ctx->save_for_backward({x, w, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t d = x.size(-1), rows = rstd.numel();
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = at::empty_like(x);
      const float *dyp = dy.data_ptr<float>(), *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(),
                  *rp = rstd.data_ptr<float>();
      float* dxp = dx.data_ptr<float>();
      at::parallel_for(0, rows, grain_rows(d), [&](int64_t b, int64_t e) {
        rms_norm_grad_rows(dyp, xp, wp, rp, dxp, d, b, e);
      });
    }
    at::Tensor dw;
    if (ctx->needs_input_grad(1)) {  // full fine-tuning only: plain ops are fine here
      dw = (dy.view({rows, d}) * x.view({rows, d}) * rstd.unsqueeze(1)).sum(0);
    }
    return {dx, dw, at::Tensor()};
  }
};

// ---- Rotary embedding, HF "rotate half": y = x·cos + (−x₂, x₁)·sin ----
// `signed_sin` holds (−sin, sin) per half, so y_j = x_j·cos_j + x_swap(j)·s_j. The backward pass
// applies the transpose, dx_j = dy_j·cos_j + dy_swap(j)·s_swap(j).

// One head: y = (x·cos + x_swap·sine) · scale, where s_lo multiplies x_{j+half} (j < half) and
// s_hi multiplies x_{j-half} (j >= half). Forward: (s, s + half); transpose: (s + half, s).
NR_INLINE void rotate_into(const float* x, const float* c, const float* s_lo, const float* s_hi, float scale,
                           float* y, int64_t hd) {
  const int64_t half = hd / 2;
#pragma omp simd
  for (int64_t j = 0; j < half; ++j) {
    y[j] = (x[j] * c[j] + x[j + half] * s_lo[j]) * scale;
    y[j + half] = (x[j + half] * c[j + half] + x[j] * s_hi[j]) * scale;
  }
}

NR_CLONES void rope_rows(const float* x, int64_t sb, int64_t st, int64_t sh, int64_t t_len, int64_t heads,
                         const float* cos, const float* ssin, bool transpose, float* y, int64_t hd, int64_t begin,
                         int64_t end) {
  const int64_t half = hd / 2;
  for (int64_t row = begin; row < end; ++row) {  // row = b·T + t
    const int64_t b = row / t_len, t = row % t_len;
    const float* c = cos + row * hd;
    const float* s = ssin + row * hd;
    const float* s_lo = transpose ? s + half : s;  // the sine multiplying x_{j+half} for j < half
    const float* s_hi = transpose ? s : s + half;  // ... and x_{j-half} for j >= half
    for (int64_t h = 0; h < heads; ++h) {
      rotate_into(x + b * sb + t * st + h * sh, c, s_lo, s_hi, 1.0f, y + (row * heads + h) * hd, hd);
    }
  }
}

// x [B, T, heads, hd] with any strides but a contiguous last axis; cos, signed_sin [B·T, hd].
at::Tensor rope_apply(const at::Tensor& input, const at::Tensor& cos, const at::Tensor& ssin, bool transpose) {
  const at::Tensor x = last_axis_contiguous(input);
  const int64_t bsz = x.size(0), t_len = x.size(1), heads = x.size(2), hd = x.size(3);
  TORCH_CHECK(hd % 2 == 0 && cos.size(0) == bsz * t_len && cos.size(1) == hd && cos.is_contiguous() &&
                  ssin.is_contiguous() && ssin.sizes() == cos.sizes(),
              "rope: tables ", cos.sizes(), " do not fit activations ", x.sizes());
  at::Tensor y = at::empty({bsz, t_len, heads, hd}, x.options());
  const float *xp = x.data_ptr<float>(), *cp = cos.data_ptr<float>(), *sp = ssin.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t sb = x.stride(0), st = x.stride(1), sh = x.stride(2);
  at::parallel_for(0, bsz * t_len, grain_rows(heads * hd), [&](int64_t b, int64_t e) {
    rope_rows(xp, sb, st, sh, t_len, heads, cp, sp, transpose, yp, hd, b, e);
  });
  return y;
}

struct Rope : public torch::autograd::Function<Rope> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& ssin) {
    ctx->save_for_backward({cos, ssin});
    return rope_apply(x, cos, ssin, false);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {rope_apply(grads[0], saved[0], saved[1], true), at::Tensor(), at::Tensor()};
  }
};

// ---- SwiGLU: y = silu(gate)·up from gate|up side by side, [N, 2I] -> [N, I] ----

NR_CLONES void silu_mul_rows(const float* gu, float* y, int64_t inter, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* g = gu + i * 2 * inter;
    const float* u = g + inter;
    float* yi = y + i * inter;
#pragma omp simd
    for (int64_t j = 0; j < inter; ++j) yi[j] = g[j] / (1.0f + exp_approx(-g[j])) * u[j];
  }
}

// d gate = dy·up·σ(g)·(1 + g·(1 − σ(g))), d up = dy·silu(g).
NR_CLONES void silu_mul_grad_rows(const float* dy, const float* gu, float* dgu, int64_t inter, int64_t begin,
                                  int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* g = gu + i * 2 * inter;
    const float* u = g + inter;
    const float* dyi = dy + i * inter;
    float* dg = dgu + i * 2 * inter;
    float* du = dg + inter;
#pragma omp simd
    for (int64_t j = 0; j < inter; ++j) {
      const float s = 1.0f / (1.0f + exp_approx(-g[j]));
      du[j] = dyi[j] * g[j] * s;
      dg[j] = dyi[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
    }
  }
}

struct SiluMul : public torch::autograd::Function<SiluMul> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input) {
    const at::Tensor gu = input.contiguous();
    const int64_t inter = gu.size(-1) / 2, rows = gu.numel() / std::max<int64_t>(gu.size(-1), 1);
    TORCH_CHECK(gu.size(-1) % 2 == 0, "silu_mul: odd last axis ", gu.size(-1));
    std::vector<int64_t> shape = gu.sizes().vec();
    shape.back() = inter;
    at::Tensor y = at::empty(shape, gu.options());
    const float* gp = gu.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(inter), [&](int64_t b, int64_t e) { silu_mul_rows(gp, yp, inter, b, e); });
    ctx->save_for_backward({gu});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor gu = ctx->get_saved_variables()[0];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t inter = gu.size(-1) / 2, rows = dy.numel() / std::max<int64_t>(inter, 1);
    at::Tensor dgu = at::empty_like(gu);
    const float *dyp = dy.data_ptr<float>(), *gp = gu.data_ptr<float>();
    float* dp = dgu.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(2 * inter),
                     [&](int64_t b, int64_t e) { silu_mul_grad_rows(dyp, gp, dp, inter, b, e); });
    return {dgu};
  }
};

// ---- Cached attention for sampling: rotate q and k, append k and v to the cache, attend ----
// Row b's new token t sits at position lens[b] + t and sees cache positions 0..=that. The query
// heads sharing a kv head are handled by one task, so each key and value is read once per row.

struct CachedAttentionArgs {
  const float *q, *k, *v, *cos, *ssin;
  int64_t q_strides[3], k_strides[3], v_strides[3];
  float *k_cache, *v_cache, *out;
  const int64_t* lens;
  int64_t t_len, heads, kv_heads, hd, capacity;
};

// One query against `visible` cached keys: scores, softmax, weighted sum of values into `out`.
// HD is the head size when known at compile time (then the output accumulates in registers),
// 0 for any other size. Keys are taken four at a time so their dot products run side by side.
template <int64_t HD>
NR_INLINE void attend(const float* query, const float* keys, const float* values, int64_t visible, int64_t hd_any,
                   float* scores, float* out) {
  const int64_t hd = HD > 0 ? HD : hd_any;
  float top = -INFINITY;
  int64_t j = 0;
  for (; j + 4 <= visible; j += 4) {
    const float *k0 = keys + j * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
    for (int64_t e = 0; e < hd; ++e) {
      d0 += query[e] * k0[e];
      d1 += query[e] * k1[e];
      d2 += query[e] * k2[e];
      d3 += query[e] * k3[e];
    }
    scores[j] = d0, scores[j + 1] = d1, scores[j + 2] = d2, scores[j + 3] = d3;
    top = std::max(top, std::max(std::max(d0, d1), std::max(d2, d3)));
  }
  for (; j < visible; ++j) {
    const float* kj = keys + j * hd;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t e = 0; e < hd; ++e) dot += query[e] * kj[e];
    scores[j] = dot;
    top = std::max(top, dot);
  }
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < visible; ++i) {
    scores[i] = exp_approx(scores[i] - top);
    total += scores[i];
  }
  const float inv = 1.0f / total;
  float acc[HD > 0 ? HD : 1];
  float* o = HD > 0 ? acc : out;
  std::fill(o, o + hd, 0.0f);
  for (int64_t i = 0; i < visible; ++i) {
    const float p = scores[i] * inv;
    const float* vi = values + i * hd;
#pragma omp simd
    for (int64_t e = 0; e < hd; ++e) o[e] += p * vi[e];
  }
  if (HD > 0) std::memcpy(out, acc, hd * sizeof(float));
}

NR_CLONES void cached_attention_tasks(const CachedAttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t hd = a.hd, group = a.heads / a.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> scores(a.capacity), query(hd);
  for (int64_t task = begin; task < end; ++task) {  // task = b·kv_heads + kv head
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads, start = a.lens[b];
    float* keys = a.k_cache + task * a.capacity * hd;
    float* values = a.v_cache + task * a.capacity * hd;
    for (int64_t t = 0; t < a.t_len; ++t) {
      const int64_t row = b * a.t_len + t;
      const float* k = a.k + b * a.k_strides[0] + t * a.k_strides[1] + h * a.k_strides[2];
      const float* v = a.v + b * a.v_strides[0] + t * a.v_strides[1] + h * a.v_strides[2];
      const float* sine = a.ssin + row * hd;
      rotate_into(k, a.cos + row * hd, sine, sine + hd / 2, 1.0f, keys + (start + t) * hd, hd);
      std::memcpy(values + (start + t) * hd, v, hd * sizeof(float));
    }
    for (int64_t t = 0; t < a.t_len; ++t) {
      const int64_t row = b * a.t_len + t, visible = start + t + 1;
      for (int64_t g = 0; g < group; ++g) {
        const int64_t head = h * group + g;
        const float* q = a.q + b * a.q_strides[0] + t * a.q_strides[1] + head * a.q_strides[2];
        const float* sine = a.ssin + row * hd;
        rotate_into(q, a.cos + row * hd, sine, sine + hd / 2, scale, query.data(), hd);
        float* o = a.out + (row * a.heads + head) * hd;
        switch (hd) {
          case 64: attend<64>(query.data(), keys, values, visible, hd, scores.data(), o); break;
          case 128: attend<128>(query.data(), keys, values, visible, hd, scores.data(), o); break;
          default: attend<0>(query.data(), keys, values, visible, hd, scores.data(), o);
        }
      }
    }
  }
}

// q [B, T, heads, hd], k and v [B, T, kv_heads, hd] (any strides, contiguous last axis);
// cos, signed_sin [B·T, hd]; caches [B, kv_heads, capacity, hd]; lens [B] int64.
// Returns [B·T, heads·hd].
at::Tensor cached_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& cos, const at::Tensor& ssin, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& lens_in) {
  at::NoGradGuard no_grad;
  const at::Tensor q = last_axis_contiguous(q_in), k = last_axis_contiguous(k_in), v = last_axis_contiguous(v_in);
  const at::Tensor lens = lens_in.to(at::kLong).contiguous();
  const int64_t bsz = q.size(0), t_len = q.size(1), heads = q.size(2), hd = q.size(3);
  const int64_t kv_heads = k.size(2), capacity = k_cache.size(2);
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0 && k.sizes() == v.sizes() && k.size(0) == bsz &&
                  k.size(1) == t_len && k.size(3) == hd,
              "cached_attention: q ", q.sizes(), " k ", k.sizes(), " v ", v.sizes());
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.sizes() == v_cache.sizes() &&
                  k_cache.size(0) == bsz && k_cache.size(1) == kv_heads && k_cache.size(3) == hd,
              "cached_attention: cache ", k_cache.sizes(), " does not fit ", k.sizes());
  TORCH_CHECK(lens.numel() == bsz && cos.is_contiguous() && ssin.is_contiguous() && cos.size(0) == bsz * t_len &&
                  cos.size(1) == hd,
              "cached_attention: lens or rope tables do not fit");
  const int64_t* lp = lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < bsz; ++b) {
    TORCH_CHECK(lp[b] >= 0 && lp[b] + t_len <= capacity, "cached_attention: row ", b, " at ", lp[b], " + ", t_len,
                " overflows the cache's ", capacity, " positions");
  }
  at::Tensor out = at::empty({bsz * t_len, heads * hd}, q.options());
  CachedAttentionArgs a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), cos.data_ptr<float>(),
                        ssin.data_ptr<float>(), {q.stride(0), q.stride(1), q.stride(2)},
                        {k.stride(0), k.stride(1), k.stride(2)}, {v.stride(0), v.stride(1), v.stride(2)},
                        k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), out.data_ptr<float>(), lp, t_len,
                        heads, kv_heads, hd, capacity};
  at::parallel_for(0, bsz * kv_heads, 1, [&](int64_t b, int64_t e) { cached_attention_tasks(a, b, e); });
  return out;
}

// ---- Causal attention over fresh sequences (training, scoring), forward and backward ----
// q [B, T, heads, hd], k and v [B, T, kv_heads, hd] (any strides, contiguous last axis) give
// out [B·T, heads·hd], the layout the output projection takes, plus each query's log-sum-exp,
// which is all the backward pass keeps (it recomputes the probabilities, as FlashAttention does).
// One task per (batch row, kv head) takes every query head of that group, so the backward pass
// adds into its key and value gradients without locks. Scores for a block of 16 queries × 16
// keys accumulate in registers over the head dimension, from keys transposed once per task.

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // for unaligned loads and stores

NR_INLINE v16 load16(const float* p) { return *reinterpret_cast<const v16u*>(p); }
NR_INLINE void store16(float* p, v16 v) { *reinterpret_cast<v16u*>(p) = v; }

NR_INLINE float horizontal_sum(v16 v) {
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s += v[l];
  return s;
}

template <int64_t HD>
NR_INLINE float dot(const float* a, const float* b) {
  v16 acc = load16(a) * load16(b);
  for (int64_t c = 1; c < HD / 16; ++c) acc += load16(a + 16 * c) * load16(b + 16 * c);
  return horizontal_sum(acc);
}

// max of x[0..n), n >= 1. (An `omp simd reduction(max)` here compiled to scalar stores read back
// as a vector: a store-forwarding stall that took a quarter of the forward pass.)
NR_INLINE float max_of(const float* x, int64_t n) {
  float top = x[0];
  int64_t j = 0;
  if (n >= 16) {
    v16 m = load16(x);
    for (j = 16; j + 16 <= n; j += 16) {
      const v16 y = load16(x + j);
      m = m > y ? m : y;
    }
    for (int l = 0; l < 16; ++l) top = std::max(top, m[l]);
  }
  for (; j < n; ++j) top = std::max(top, x[j]);
  return top;
}

constexpr int64_t kBlock = 16;  // query rows per block, and keys per score vector
int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

// s[r·ld + j] = Σ_e a[r][e]·xt[e·ldt + j] for the block's rows r and keys j < npad (a multiple
// of 16). All kBlock row pointers must be valid (callers repeat the last row).
template <int64_t HD>
NR_INLINE void block_scores(const float* const* a, int64_t rows, const float* xt, int64_t ldt, int64_t npad,
                            float* s, int64_t ld) {
  for (int64_t j = 0; j < npad; j += 16) {
    v16 acc[kBlock];
#pragma GCC unroll 16
    for (int r = 0; r < kBlock; ++r) acc[r] = v16{};
    for (int64_t e = 0; e < HD; ++e) {
      const v16 x = load16(xt + e * ldt + j);
#pragma GCC unroll 16
      for (int r = 0; r < kBlock; ++r) acc[r] += x * a[r][e];
    }
    for (int64_t r = 0; r < rows; ++r) store16(s + r * ld + j, acc[r]);
  }
}

// out = scale · Σ_{j < n} p[j]·y_j for rows y_j = y + j·stride.
template <int64_t HD>
NR_INLINE void weighted_rows(const float* p, int64_t n, const float* y, int64_t stride, float scale, float* out) {
  v16 acc[HD / 16];
  for (int64_t c = 0; c < HD / 16; ++c) acc[c] = v16{};
  for (int64_t j = 0; j < n; ++j) {
    const float w = p[j];
    const float* yj = y + j * stride;
#pragma GCC unroll 8
    for (int64_t c = 0; c < HD / 16; ++c) acc[c] += load16(yj + 16 * c) * w;
  }
  for (int64_t c = 0; c < HD / 16; ++c) store16(out + 16 * c, acc[c] * scale);
}

struct CausalArgs {
  const float *q, *k, *v;
  int64_t qs[3], ks[3], vs[3];  // strides of batch, position, head (elements)
  const float *cos, *ssin;      // rotary tables [B·T, hd] for q and k, or null: already rotated
  int64_t t_len, heads, kv_heads;
  float scale;
};

// Where the backward pass writes dq, dk, dv (separate tensors, or slices of one d(qkv)).
struct CausalGrads {
  float *dq, *dk, *dv;
  int64_t qs[3], ks[3], vs[3];
};

// Row `pos` of batch row b, rotated when the args carry tables (inverse rotation: transpose).
template <int64_t HD>
NR_INLINE void load_row(const CausalArgs& a, const float* x, int64_t b, int64_t pos, bool transpose, float* out) {
  if (!a.cos) {
    std::memcpy(out, x, HD * sizeof(float));
    return;
  }
  const int64_t row = b * a.t_len + pos;
  const float* s = a.ssin + row * HD;
  rotate_into(x, a.cos + row * HD, transpose ? s + HD / 2 : s, transpose ? s : s + HD / 2, 1.0f, out, HD);
}

// Rows x_j = x + j·stride, transposed into xt [HD, ldt], zero-padded.
template <int64_t HD>
NR_INLINE void transpose_rows(const float* x, int64_t stride, int64_t n, float* xt, int64_t ldt) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < HD; c += 16) __builtin_prefetch(x + (j + 4) * stride + c);
    const float* row = x + j * stride;
    for (int64_t e = 0; e < HD; ++e) xt[e * ldt + j] = row[e];
  }
  for (int64_t e = 0; e < HD; ++e) std::fill(xt + e * ldt + n, xt + (e + 1) * ldt, 0.0f);
}

// One task's keys (rotated) into kr [T, HD] and transposed into kt [HD, ldt], zero-padded.
template <int64_t HD>
NR_INLINE void task_keys(const CausalArgs& a, int64_t b, int64_t h, float* kr, float* kt, int64_t ldt) {
  const float* k = a.k + b * a.ks[0] + h * a.ks[2];
  for (int64_t j = 0; j < a.t_len; ++j) {
    // Rows lie a page or so apart in the fused qkv buffer (prefetch also in transpose_rows).
    for (int64_t c = 0; c < HD; c += 16) __builtin_prefetch(k + (j + 4) * a.ks[1] + c);
    load_row<HD>(a, k + j * a.ks[1], b, j, false, kr + j * HD);
  }
  transpose_rows<HD>(kr, HD, a.t_len, kt, ldt);
}

// The block's query rows (rotated) into qb [kBlock, HD]; rows past the end repeat the last.
template <int64_t HD>
NR_INLINE void block_queries(const CausalArgs& a, int64_t b, int64_t head, int64_t i0, int64_t rows, float* qb,
                             const float** qr) {
  for (int64_t r = 0; r < kBlock; ++r) {
    if (r < rows) {
      load_row<HD>(a, a.q + b * a.qs[0] + (i0 + r) * a.qs[1] + head * a.qs[2], b, i0 + r, false, qb + r * HD);
    }
    qr[r] = qb + std::min(r, rows - 1) * HD;
  }
}

template <int64_t HD>
NR_INLINE void causal_forward(const CausalArgs& a, float* out, float* lse, int64_t begin, int64_t end) {
  const int64_t T = a.t_len, ldt = round_up16(T), group = a.heads / a.kv_heads;
  std::vector<float> kr(T * HD), kt(HD * ldt), s(kBlock * ldt), qb(kBlock * HD);
  const float* qr[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads;
    const float* v = a.v + b * a.vs[0] + h * a.vs[2];
    task_keys<HD>(a, b, h, kr.data(), kt.data(), ldt);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;
      for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - i0), n = i0 + rows;
        block_queries<HD>(a, b, head, i0, rows, qb.data(), qr);
        block_scores<HD>(qr, rows, kt.data(), ldt, round_up16(n), s.data(), ldt);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, visible = i + 1;
          float* p = s.data() + r * ldt;
          const float top = max_of(p, visible) * a.scale;
          float total = 0.0f;
#pragma omp simd reduction(+ : total)
          for (int64_t j = 0; j < visible; ++j) {
            p[j] = exp_approx(p[j] * a.scale - top);
            total += p[j];
          }
          lse[(b * a.heads + head) * T + i] = top + std::log(total);
          weighted_rows<HD>(p, visible, v, a.vs[1], 1.0f / total, out + ((b * T + i) * a.heads + head) * HD);
        }
      }
    }
  }
}

template <int64_t HD>
NR_INLINE void causal_backward(const CausalArgs& a, const float* out, const float* lse, const float* dout,
                               const CausalGrads& d, int64_t begin, int64_t end) {
  const int64_t T = a.t_len, ldt = round_up16(T), group = a.heads / a.kv_heads, H = a.heads, KV = a.kv_heads;
  std::vector<float> kr(T * HD), kt(HD * ldt), vt(HD * ldt), p(kBlock * ldt), dp(kBlock * ldt), qb(kBlock * HD),
      dk_acc(T * HD), dv_acc(T * HD), row(HD);
  const float *qr[kBlock], *dor[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / KV, h = task % KV;
    const float* v = a.v + b * a.vs[0] + h * a.vs[2];
    task_keys<HD>(a, b, h, kr.data(), kt.data(), ldt);
    transpose_rows<HD>(v, a.vs[1], T, vt.data(), ldt);
    std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
    std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;
      for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - i0), n = i0 + rows;
        block_queries<HD>(a, b, head, i0, rows, qb.data(), qr);
        for (int64_t r = 0; r < kBlock; ++r) dor[r] = dout + ((b * T + i0 + std::min(r, rows - 1)) * H + head) * HD;
        block_scores<HD>(qr, rows, kt.data(), ldt, round_up16(n), p.data(), ldt);
        block_scores<HD>(dor, rows, vt.data(), ldt, round_up16(n), dp.data(), ldt);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, visible = i + 1;
          const float dsum = dot<HD>(dor[r], out + ((b * T + i) * H + head) * HD);
          const float l = lse[(b * H + head) * T + i];
          float* pr = p.data() + r * ldt;
          float* dsr = dp.data() + r * ldt;  // dP becomes dS in place
#pragma omp simd
          for (int64_t j = 0; j < visible; ++j) {
            pr[j] = exp_approx(pr[j] * a.scale - l);
            dsr[j] = pr[j] * (dsr[j] - dsum);
          }
          std::fill(pr + visible, pr + n, 0.0f);
          std::fill(dsr + visible, dsr + n, 0.0f);
          // dq in rotated space, then back through the rotation into its place.
          weighted_rows<HD>(dsr, visible, kr.data(), HD, a.scale, row.data());
          load_row<HD>(a, row.data(), b, i, true, d.dq + b * d.qs[0] + i * d.qs[1] + head * d.qs[2]);
        }
        // Keys and values gain from every row of the block that sees them (the rest are 0).
        for (int64_t j = 0; j < n; ++j) {
          v16 gk[HD / 16], gv[HD / 16];
          for (int64_t c = 0; c < HD / 16; ++c) gk[c] = gv[c] = v16{};
          for (int64_t r = std::max<int64_t>(0, j - i0); r < rows; ++r) {
            const float pw = p[r * ldt + j], sw = dp[r * ldt + j];
#pragma GCC unroll 8
            for (int64_t c = 0; c < HD / 16; ++c) {
              gv[c] += load16(dor[r] + 16 * c) * pw;
              gk[c] += load16(qr[r] + 16 * c) * sw;
            }
          }
          for (int64_t c = 0; c < HD / 16; ++c) {
            store16(dv_acc.data() + j * HD + 16 * c, load16(dv_acc.data() + j * HD + 16 * c) + gv[c]);
            store16(dk_acc.data() + j * HD + 16 * c, load16(dk_acc.data() + j * HD + 16 * c) + gk[c] * a.scale);
          }
        }
      }
    }
    for (int64_t j = 0; j < T; ++j) {
      load_row<HD>(a, dk_acc.data() + j * HD, b, j, true, d.dk + b * d.ks[0] + j * d.ks[1] + h * d.ks[2]);
      std::memcpy(d.dv + b * d.vs[0] + j * d.vs[1] + h * d.vs[2], dv_acc.data() + j * HD, HD * sizeof(float));
    }
  }
}

NR_CLONES void causal_forward_tasks(const CausalArgs& a, int64_t hd, float* out, float* lse, int64_t begin,
                                    int64_t end) {
  switch (hd) {
    case 32: causal_forward<32>(a, out, lse, begin, end); break;
    case 64: causal_forward<64>(a, out, lse, begin, end); break;
    default: causal_forward<128>(a, out, lse, begin, end);
  }
}

NR_CLONES void causal_backward_tasks(const CausalArgs& a, int64_t hd, const float* out, const float* lse,
                                     const float* dout, const CausalGrads& d, int64_t begin, int64_t end) {
  switch (hd) {
    case 32: causal_backward<32>(a, out, lse, dout, d, begin, end); break;
    case 64: causal_backward<64>(a, out, lse, dout, d, begin, end); break;
    default: causal_backward<128>(a, out, lse, dout, d, begin, end);
  }
}

void strides3(const at::Tensor& t, int64_t* out) {
  for (int i = 0; i < 3; ++i) out[i] = t.stride(i);
}

// q, k, v: views [B, T, heads or kv_heads, hd]; cos and ssin undefined when q and k are rotated.
CausalArgs causal_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& ssin) {
  const int64_t hd = q.size(3);
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && k.sizes() == v.sizes() && k.size(0) == q.size(0) &&
                  k.size(1) == q.size(1) && k.size(3) == hd && k.size(2) > 0 && q.size(2) % k.size(2) == 0 &&
                  (hd == 32 || hd == 64 || hd == 128) && q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "causal_attention: q ", q.sizes(), " k ", k.sizes(), " v ", v.sizes());
  TORCH_CHECK(!cos.defined() || (cos.is_contiguous() && ssin.is_contiguous() && ssin.sizes() == cos.sizes() &&
                                 cos.size(0) == q.size(0) * q.size(1) && cos.size(1) == hd),
              "causal_attention: rotary tables ", cos.sizes(), " do not fit ", q.sizes());
  CausalArgs a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), {}, {}, {},
               cos.defined() ? cos.data_ptr<float>() : nullptr, cos.defined() ? ssin.data_ptr<float>() : nullptr,
               q.size(1), q.size(2), k.size(2), 1.0f / std::sqrt(static_cast<float>(hd))};
  strides3(q, a.qs);
  strides3(k, a.ks);
  strides3(v, a.vs);
  return a;
}

std::vector<at::Tensor> split_qkv(const at::Tensor& qkv, int64_t heads, int64_t kv_heads) {
  return {qkv.narrow(2, 0, heads), qkv.narrow(2, heads, kv_heads), qkv.narrow(2, heads + kv_heads, kv_heads)};
}

at::Tensor causal_attention_forward(const CausalArgs& a, int64_t bsz, int64_t hd, const at::TensorOptions& options,
                                    at::Tensor& lse) {
  at::Tensor out = at::empty({bsz * a.t_len, a.heads * hd}, options);
  lse = at::empty({bsz, a.heads, a.t_len}, options);
  float *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>();
  at::parallel_for(0, bsz * a.kv_heads, 1, [&](int64_t b, int64_t e) { causal_forward_tasks(a, hd, op, lp, b, e); });
  return out;
}

void causal_attention_backward(const CausalArgs& a, int64_t bsz, int64_t hd, const at::Tensor& out,
                               const at::Tensor& lse, const at::Tensor& dout, const CausalGrads& d) {
  const float *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>(), *gp = dout.data_ptr<float>();
  at::parallel_for(0, bsz * a.kv_heads, 1,
                   [&](int64_t b, int64_t e) { causal_backward_tasks(a, hd, op, lp, gp, d, b, e); });
}

// Attention over q, k, v already rotated (separate tensors).
struct CausalAttention : public torch::autograd::Function<CausalAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                            const at::Tensor& v_in) {
    const at::Tensor q = last_axis_contiguous(q_in), k = last_axis_contiguous(k_in), v = last_axis_contiguous(v_in);
    at::Tensor lse;
    const at::Tensor out =
        causal_attention_forward(causal_args(q, k, v, {}, {}), q.size(0), q.size(3), q.options(), lse);
    ctx->save_for_backward({q, k, v, out, lse});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
               dv = at::empty(v.sizes(), v.options());
    CausalGrads d{dq.data_ptr<float>(), dk.data_ptr<float>(), dv.data_ptr<float>(), {}, {}, {}};
    strides3(dq, d.qs);
    strides3(dk, d.ks);
    strides3(dv, d.vs);
    causal_attention_backward(causal_args(q, k, v, {}, {}), q.size(0), q.size(3), saved[3], saved[4],
                              grads[0].contiguous(), d);
    return {dq, dk, dv};
  }
};

// Rotary embedding and attention from the fused projection's output qkv [B, T, heads + 2·kv, hd]
// (q, k, v heads side by side): the gradient comes back as one d(qkv), with no rotated copies of
// q and k kept and no concatenation of separate gradients.
struct RopeCausalAttention : public torch::autograd::Function<RopeCausalAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv_in, int64_t heads, int64_t kv_heads,
                            const at::Tensor& cos, const at::Tensor& ssin) {
    const at::Tensor qkv = last_axis_contiguous(qkv_in);
    TORCH_CHECK(qkv.dim() == 4 && qkv.size(2) == heads + 2 * kv_heads, "rope_causal_attention: qkv ", qkv.sizes(),
                " for ", heads, " + 2·", kv_heads, " heads");
    const auto parts = split_qkv(qkv, heads, kv_heads);
    at::Tensor lse;
    const at::Tensor out = causal_attention_forward(causal_args(parts[0], parts[1], parts[2], cos, ssin),
                                                    qkv.size(0), qkv.size(3), qkv.options(), lse);
    ctx->save_for_backward({qkv, cos, ssin, out, lse});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& qkv = saved[0];
    const int64_t heads = ctx->saved_data["heads"].toInt(), kv_heads = ctx->saved_data["kv_heads"].toInt();
    const auto parts = split_qkv(qkv, heads, kv_heads);
    at::Tensor dqkv = at::empty(qkv.sizes(), qkv.options());
    const auto dparts = split_qkv(dqkv, heads, kv_heads);
    CausalGrads d{dparts[0].data_ptr<float>(), dparts[1].data_ptr<float>(), dparts[2].data_ptr<float>(), {}, {}, {}};
    strides3(dparts[0], d.qs);
    strides3(dparts[1], d.ks);
    strides3(dparts[2], d.vs);
    causal_attention_backward(causal_args(parts[0], parts[1], parts[2], saved[1], saved[2]), qkv.size(0),
                              qkv.size(3), saved[3], saved[4], grads[0].contiguous(), d);
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- A frozen linear layer with a trainable low-rank update, for the learner ----
// y = init + x·w + (x·a_t)·b_t, with w [K, N] frozen, a_t [K, R] and b_t [R, N] (α/r folded in)
// trainable, init a residual [M, N], a bias [N] or absent. As separate autograd ops the update's
// backward reads dy twice (for d(x·a_t) and d b_t), writes its share of dx to a fresh tensor and
// adds it to the base's dx in another pass. Here dy is read once, and the update's dx is added
// into the base's dx row by row while x is read for d a_t.

// Σ_j d[j]·b[j], and g[j] += w·d[j] on the way, over n floats: one read of d for both. Four
// accumulators, so the sum is not one FMA latency chain.
NR_INLINE float dot_and_axpy(const float* d, const float* b, float* g, float w, int64_t n) {
  v16 a0 = v16{}, a1 = v16{}, a2 = v16{}, a3 = v16{};
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
    const v16 d0 = load16(d + j), d1 = load16(d + j + 16), d2 = load16(d + j + 32), d3 = load16(d + j + 48);
    a0 += d0 * load16(b + j);
    a1 += d1 * load16(b + j + 16);
    a2 += d2 * load16(b + j + 32);
    a3 += d3 * load16(b + j + 48);
    store16(g + j, load16(g + j) + d0 * w);
    store16(g + j + 16, load16(g + j + 16) + d1 * w);
    store16(g + j + 32, load16(g + j + 32) + d2 * w);
    store16(g + j + 48, load16(g + j + 48) + d3 * w);
  }
  float acc = horizontal_sum((a0 + a1) + (a2 + a3));
  for (; j < n; ++j) {
    acc += d[j] * b[j];
    g[j] += w * d[j];
  }
  return acc;
}

// Rows [begin, end): gxa[m] = dy[m]·b_tᵀ and gb += xa[m]ᵀ·dy[m] (gb [R, N] is this task's own).
NR_CLONES void lora_dy_rows(const float* dy, const float* xa, const float* b_t, float* gxa, float* gb, int64_t n,
                            int64_t rank, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    for (int64_t r = 0; r < rank; ++r) {
      gxa[m * rank + r] = dot_and_axpy(dy + m * n, b_t + r * n, gb + r * n, xa[m * rank + r], n);
    }
  }
}

// Rows [begin, end): dx[m] += gxa[m]·a (a = a_tᵀ, [R, K]) when dx is given, and ga += gxa[m]ᵀ·x[m]
// (ga [R, K] is this task's own).
NR_CLONES void lora_x_rows(const float* x, const float* gxa, const float* a, float* dx, float* ga, int64_t k,
                           int64_t rank, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float* xm = x + m * k;
    for (int64_t r = 0; r < rank; ++r) {
      const float g = gxa[m * rank + r];
      const float* ar = a + r * k;
      float* gar = ga + r * k;
      if (dx) {
        float* dxm = dx + m * k;
#pragma omp simd
        for (int64_t j = 0; j < k; ++j) {
          dxm[j] += g * ar[j];
          gar[j] += g * xm[j];
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < k; ++j) gar[j] += g * xm[j];
      }
    }
  }
}

// Run `rows_fn(begin, end, partial)` over rows in parallel, each task accumulating into its own
// zeroed [size] partial; returns the partials' sum.
template <typename F>
at::Tensor parallel_accumulate(int64_t rows, int64_t grain, int64_t size, const at::TensorOptions& options,
                               const F& rows_fn) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (rows + grain - 1) / grain));
  at::Tensor partials = at::zeros({tasks, size}, options);
  float* pp = partials.data_ptr<float>();
  const int64_t per_task = (rows + tasks - 1) / tasks;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      rows_fn(t * per_task, std::min(rows, (t + 1) * per_task), pp + t * size);
    }
  });
  return partials.sum(0);
}

struct LinearLora : public torch::autograd::Function<LinearLora> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w,
                            const at::Tensor& init, const at::Tensor& a_t, const at::Tensor& b_t) {
    const at::Tensor x = x_in.contiguous();
    const bool has_init = init.numel() > 0;  // empty: none (autograd inputs cannot be undefined)
    at::Tensor y = has_init ? at::addmm(init, x, w) : at::mm(x, w);
    const at::Tensor xa = at::mm(x, a_t);
    y.addmm_(xa, b_t);
    ctx->save_for_backward({x, w, a_t, b_t, xa});
    ctx->saved_data["init_is_bias"] = has_init && init.dim() == 1;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &a_t = saved[2], &b_t = saved[3], &xa = saved[4];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t m = x.size(0), k = x.size(1), n = dy.size(1), rank = a_t.size(1);
    const at::Tensor b_c = b_t.contiguous(), a = a_t.t().contiguous();  // [R, N], [R, K]
    at::Tensor dx = ctx->needs_input_grad(0) ? at::mm(dy, w.t()) : at::Tensor();
    at::Tensor gxa = at::empty({m, rank}, dy.options());
    const float *dyp = dy.data_ptr<float>(), *xap = xa.data_ptr<float>(), *bp = b_c.data_ptr<float>();
    float* gp = gxa.data_ptr<float>();
    const int64_t grain = grain_rows(std::max(n, k) * rank);
    at::Tensor gb = parallel_accumulate(m, grain, rank * n, dy.options(), [&](int64_t b, int64_t e, float* part) {
      lora_dy_rows(dyp, xap, bp, gp, part, n, rank, b, e);
    });
    const float *xp = x.data_ptr<float>(), *ap = a.data_ptr<float>();
    float* dxp = dx.defined() ? dx.data_ptr<float>() : nullptr;
    at::Tensor ga = parallel_accumulate(m, grain, rank * k, dy.options(), [&](int64_t b, int64_t e, float* part) {
      lora_x_rows(xp, gp, ap, dxp, part, k, rank, b, e);
    });
    at::Tensor dinit;
    if (ctx->needs_input_grad(2)) dinit = ctx->saved_data["init_is_bias"].toBool() ? dy.sum(0) : dy;
    return {dx, at::Tensor(), dinit, ga.view({rank, k}).t(), gb.view({rank, n})};
  }
};

// ---- An adapter's update for sampling (no autograd): y += ((x·a_t) ⊙ mask)·b_t in place ----
// Two skinny MKL calls per fused group cost more in call overhead than in arithmetic at decode
// batch sizes; one pass per row does both products while the row is in cache.

constexpr int64_t kMaxSamplingRank = 64;

NR_CLONES void lora_add_rows(const float* x, int64_t ldx, const float* a, const float* b, const float* mask,
                             int64_t tokens_per_row, float* y, int64_t k, int64_t n, int64_t rank, int64_t begin,
                             int64_t end) {
  float xa[kMaxSamplingRank];
  for (int64_t m = begin; m < end; ++m) {
    const float* xm = x + m * ldx;
    for (int64_t r = 0; r < rank; ++r) {
      const float* ar = a + r * k;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < k; ++j) acc += xm[j] * ar[j];
      xa[r] = mask ? acc * mask[(m / tokens_per_row) * rank + r] : acc;
    }
    float* ym = y + m * n;
    for (int64_t r = 0; r < rank; ++r) {
      const float w = xa[r];
      const float* br = b + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) ym[j] += w * br[j];
    }
  }
}

// y [M, N] contiguous; x [M, K] with a contiguous last axis; a_t [K, R]; b_t [R, N]; mask
// [rows, R] (M = rows · tokens per row) or undefined.
void lora_add_(at::Tensor& y, const at::Tensor& x_in, const at::Tensor& a_t, const at::Tensor& b_t,
               const at::Tensor& mask_in) {
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.stride(-1) == 1 && x_in.dim() == 2 ? x_in : x_in.contiguous().view({-1, x_in.size(-1)});
  const int64_t m = x.size(0), k = x.size(1), rank = a_t.size(1), n = b_t.size(1);
  TORCH_CHECK(y.is_contiguous() && y.size(0) == m && y.size(1) == n && a_t.size(0) == k && b_t.size(0) == rank &&
                  rank <= kMaxSamplingRank,
              "lora_add_: y ", y.sizes(), " x ", x.sizes(), " a_t ", a_t.sizes(), " b_t ", b_t.sizes());
  // A as [R, K] for the row dot products; a plain loop, not tensor ops (their dispatch cost more
  // than this copy at decode sizes).
  std::vector<float> a(rank * k);
  const at::Tensor a_c = a_t.contiguous(), b = b_t.contiguous();
  const float* atp = a_c.data_ptr<float>();
  for (int64_t j = 0; j < k; ++j)
    for (int64_t r = 0; r < rank; ++r) a[r * k + j] = atp[j * rank + r];
  const at::Tensor mask =
      mask_in.defined() && (mask_in.scalar_type() != at::kFloat || !mask_in.is_contiguous())
          ? mask_in.to(at::kFloat).contiguous()
          : mask_in;
  TORCH_CHECK(!mask.defined() || (mask.size(1) == rank && m % mask.size(0) == 0), "lora_add_: mask ", mask.sizes());
  const int64_t tokens_per_row = mask.defined() ? m / mask.size(0) : 1;
  const float *xp = x.data_ptr<float>(), *ap = a.data(), *bp = b.data_ptr<float>();
  const float* mp = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, m, grain_rows((k + n) * rank), [&](int64_t bgn, int64_t e) {
    lora_add_rows(xp, ldx, ap, bp, mp, tokens_per_row, yp, k, n, rank, bgn, e);
  });
}

// ---- Pre-packed weights for matmuls that need no gradient (sampling, scoring) ----
// MKL's sgemm repacks its B operand (the weight) on every call; at decode batch sizes that copy
// is ~15 % of a step. cblas_sgemm_pack does it once, and the packed buffer serves any row count.
// libtorch builds with MKL export these functions; others lack them, so they are looked up at run
// time and packing is simply unavailable there. MKL sizes the buffer generously but writes only
// about the weight's own size of it; the untouched rest is never paged in.

enum { kRowMajor = 101, kNoTrans = 111, kBMatrix = 162, kPacked = 151 };
using PackGetSizeFn = size_t (*)(int, int, int, int);
using PackFn = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
using ComputeFn = void (*)(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int);

struct MklPacking {
  PackGetSizeFn get_size = nullptr;
  PackFn pack = nullptr;
  ComputeFn compute = nullptr;
  bool available() const { return get_size && pack && compute; }
};

const MklPacking& mkl_packing() {
  static const MklPacking fns = [] {
    MklPacking f;
    f.get_size = reinterpret_cast<PackGetSizeFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack_get_size"));
    f.pack = reinterpret_cast<PackFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack"));
    f.compute = reinterpret_cast<ComputeFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_compute"));
    return f;
  }();
  return fns;
}

// The row count MKL is told to expect; the buffer works for any other.
constexpr int64_t kPackRows = 64;

// Pack w [K, N] (float32, contiguous) as the right-hand operand of x·w.
at::Tensor pack_weight(const at::Tensor& w) {
  const MklPacking& mkl = mkl_packing();
  TORCH_CHECK(mkl.available(), "pack_weight: this libtorch has no MKL packed GEMM");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.device().is_cpu(), "pack_weight: w ", w.sizes());
  const at::Tensor wc = w.contiguous();
  const int k = static_cast<int>(wc.size(0)), n = static_cast<int>(wc.size(1));
  const size_t bytes = mkl.get_size(kBMatrix, kPackRows, n, k);
  at::Tensor buf = at::empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))}, wc.options());
  mkl.pack(kRowMajor, kBMatrix, kNoTrans, kPackRows, n, k, 1.0f, wc.data_ptr<float>(), n, buf.data_ptr<float>());
  return buf;
}

// init + x [M, K] · w [K, N] with w packed by pack_weight; `init` is [M, N] or [N] (a bias,
// broadcast) or undefined (zero).
at::Tensor packed_matmul(const at::Tensor& x_in, const at::Tensor& packed, int64_t k, int64_t n,
                         const at::Tensor& init) {
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.dim() == 2 && x_in.stride(1) == 1 && x_in.stride(0) >= k ? x_in : x_in.contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k && x.scalar_type() == at::kFloat, "packed_matmul: x ", x_in.sizes(),
              " for a [", k, ", ", n, "] weight");
  const int64_t m = x.size(0);
  at::Tensor y = at::empty({m, n}, x.options());
  if (init.defined()) y.copy_(init.expand({m, n}));
  if (m == 0) return y;
  mkl_packing().compute(kRowMajor, kNoTrans, kPacked, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                        x.data_ptr<float>(), static_cast<int>(x.stride(0)), packed.data_ptr<float>(),
                        static_cast<int>(n), init.defined() ? 1.0f : 0.0f, y.data_ptr<float>(), static_cast<int>(n));
  return y;
}

// Run `f`, turning a C++ exception into a null result and a message for the caller.
template <typename F>
at::Tensor* guarded(F f) {
  try {
    return new at::Tensor(f());
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return nullptr;
}

}  // namespace

extern "C" {

const char* nr_last_error() { return last_error.c_str(); }

at::Tensor* nr_rms_norm(const at::Tensor* x, const at::Tensor* weight, double eps) {
  RECORD_FUNCTION("noregret::rms_norm", std::vector<c10::IValue>());
  return guarded([&] { return RmsNorm::apply(*x, *weight, eps); });
}

at::Tensor* nr_rope(const at::Tensor* x, const at::Tensor* cos, const at::Tensor* signed_sin) {
  RECORD_FUNCTION("noregret::rope", std::vector<c10::IValue>());
  return guarded([&] { return Rope::apply(*x, *cos, *signed_sin); });
}

at::Tensor* nr_silu_mul(const at::Tensor* gate_up) {
  RECORD_FUNCTION("noregret::silu_mul", std::vector<c10::IValue>());
  return guarded([&] { return SiluMul::apply(*gate_up); });
}

at::Tensor* nr_cached_attention(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, const at::Tensor* cos,
                                const at::Tensor* signed_sin, at::Tensor* k_cache, at::Tensor* v_cache,
                                const at::Tensor* lens) {
  RECORD_FUNCTION("noregret::cached_attention", std::vector<c10::IValue>());
  return guarded([&] { return cached_attention(*q, *k, *v, *cos, *signed_sin, *k_cache, *v_cache, *lens); });
}

at::Tensor* nr_causal_attention(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v) {
  RECORD_FUNCTION("noregret::causal_attention", std::vector<c10::IValue>());
  return guarded([&] { return CausalAttention::apply(*q, *k, *v); });
}

at::Tensor* nr_rope_causal_attention(const at::Tensor* qkv, int64_t heads, int64_t kv_heads, const at::Tensor* cos,
                                     const at::Tensor* signed_sin) {
  RECORD_FUNCTION("noregret::rope_causal_attention", std::vector<c10::IValue>());
  return guarded([&] { return RopeCausalAttention::apply(*qkv, heads, kv_heads, *cos, *signed_sin); });
}

// `init` may be null (no initial value).
at::Tensor* nr_linear_lora(const at::Tensor* x, const at::Tensor* w, const at::Tensor* init, const at::Tensor* a_t,
                           const at::Tensor* b_t) {
  RECORD_FUNCTION("noregret::linear_lora", std::vector<c10::IValue>());
  return guarded([&] { return LinearLora::apply(*x, *w, init ? *init : at::empty({0}, x->options()), *a_t, *b_t); });
}

// `mask` may be null (every row uses the adapter). Returns false (and sets the error) on failure.
bool nr_lora_add_(at::Tensor* y, const at::Tensor* x, const at::Tensor* a_t, const at::Tensor* b_t,
                  const at::Tensor* mask) {
  RECORD_FUNCTION("noregret::lora_add_", std::vector<c10::IValue>());
  try {
    lora_add_(*y, *x, *a_t, *b_t, mask ? *mask : at::Tensor());
    return true;
  } catch (const std::exception& e) {
    last_error = e.what();
  }
  return false;
}

bool nr_grad_enabled() { return at::GradMode::is_enabled(); }

bool nr_packing_available() { return mkl_packing().available(); }

at::Tensor* nr_pack_weight(const at::Tensor* w) {
  return guarded([&] { return pack_weight(*w); });
}

// `init` may be null (no initial value).
at::Tensor* nr_packed_matmul(const at::Tensor* x, const at::Tensor* packed, int64_t k, int64_t n,
                             const at::Tensor* init) {
  RECORD_FUNCTION("noregret::packed_matmul", std::vector<c10::IValue>());
  return guarded([&] { return packed_matmul(*x, *packed, k, n, init ? *init : at::Tensor()); });
}

}  // extern "C"
