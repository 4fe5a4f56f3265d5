// RMSNorm, rotary embedding and SwiGLU's silu(gate)·up as torch::autograd::Functions with
// hand-written backward passes: each replaces a chain of eager ops (6 forward / ~10 backward, 4 and
// 4, 3 and 5) with one pass over memory and one dispatch. Checked against the eager ops' values
// and gradients in policies/tests/kernels.rs. RMSNorm and SwiGLU also come in variants that make
// the learner's adapter product x·A of the rows they write (last section).

#include "common.h"

namespace nr {
namespace {

// ---- RMSNorm: y = w · (x / sqrt(mean(x²) + eps)), as transformers computes it in float32 ----

NR_INLINE float rms_norm_row(const float* x, const float* w, float* y, int64_t d, float eps) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < d; ++j) ss += x[j] * x[j];
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] = w[j] * (x[j] * r);
  return r;
}

NR_CLONES void rms_norm_rows(const float* x, const float* w, float* y, float* rstd, int64_t d, float eps,
                             int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) rstd[i] = rms_norm_row(x + i * d, w, y + i * d, d, eps);
}

// dx = rstd·(g − x̂·mean(g·x̂)) with g = dy·w and x̂ = x·rstd.
NR_INLINE void rms_norm_grad_row(const float* dy, const float* x, const float* w, float r, float* dx, int64_t d) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < d; ++j) dot += dy[j] * w[j] * x[j];
  const float c = dot * r * r / static_cast<float>(d);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) dx[j] = r * (dy[j] * w[j] - x[j] * c);
}

NR_CLONES void rms_norm_grad_rows(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                                  int64_t d, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) rms_norm_grad_row(dy + i * d, x + i * d, w, rstd[i], dx + i * d, d);
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

NR_INLINE float sigmoid(float g) { return 1.0f / (1.0f + exp_approx(-g)); }
NR_INLINE float silu(float g) { return g / (1.0f + exp_approx(-g)); }

NR_INLINE void silu_mul_row(const float* g, const float* u, float* y, int64_t inter) {
#pragma omp simd
  for (int64_t j = 0; j < inter; ++j) y[j] = silu(g[j]) * u[j];
}

NR_CLONES void silu_mul_rows(const float* gu, float* y, int64_t inter, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) silu_mul_row(gu + i * 2 * inter, gu + i * 2 * inter + inter, y + i * inter, inter);
}

// d gate = dy·up·σ(g)·(1 + g·(1 − σ(g))), d up = dy·silu(g).
NR_INLINE void silu_mul_grad_row(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t inter) {
#pragma omp simd
  for (int64_t j = 0; j < inter; ++j) {
    const float s = sigmoid(g[j]);
    du[j] = dy[j] * g[j] * s;
    dg[j] = dy[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
  }
}

NR_CLONES void silu_mul_grad_rows(const float* dy, const float* gu, float* dgu, int64_t inter, int64_t begin,
                                  int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* g = gu + i * 2 * inter;
    float* dg = dgu + i * 2 * inter;
    silu_mul_grad_row(dy + i * inter, g, g + inter, dg, dg + inter, inter);
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

// ---- The adapter's x·A made by the op that makes x: RMSNorm, SwiGLU ----
// A learner's linear layer with an adapter reads its input x for x·a_t forward and again with
// dx backward (for dx += d(x·a_t)·a_tᵀ and a_t's gradient). When RMSNorm or SwiGLU makes x,
// these variants compute x·a_t from each row as they write it, and take d(x·a_t) back in their
// own backward pass, which reads the row's inputs anyway: the linear layer (LinearPlusUpdate in
// lora.cpp) then never touches x. Outputs x and xa [rows, R]; a_t [K, R] trainable.

// The passes below keep R (the update's width: 3 × rank for q|k|v) in registers, compiled for
// every width ranks 1–4 give (1–4, 6, 8, 9, 12; NR_BY_RANK); a generic loop serves the others.

// out[r] = x·a[r] for the R rows of a [R, K]: one pass over x, R accumulators.
template <int R>
NR_INLINE void row_times_rows(const float* x, const float* a, int64_t k, float* out) {
  v16 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = v16{};
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    const v16 xv = load16(x + j);
    for (int r = 0; r < R; ++r) acc[r] += xv * load16(a + r * k + j);
  }
  for (int r = 0; r < R; ++r) {
    float total = horizontal_sum(acc[r]);
    for (int64_t t = j; t < k; ++t) total += x[t] * a[r * k + t];
    out[r] = total;
  }
}

NR_INLINE void row_times_rows_any(const float* x, const float* a, int64_t k, int64_t rank, float* out) {
  for (int64_t r = 0; r < rank; ++r) {
    const float* ar = a + r * k;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < k; ++j) acc += x[j] * ar[j];
    out[r] = acc;
  }
}

// CALL with a constexpr int R = rank for widths 1–9 and 12; ANY otherwise.
#define NR_BY_RANK(rank, CALL, ANY)                    \
  switch (rank) {                                       \
    case 1: { constexpr int R = 1; CALL; break; }       \
    case 2: { constexpr int R = 2; CALL; break; }       \
    case 3: { constexpr int R = 3; CALL; break; }       \
    case 4: { constexpr int R = 4; CALL; break; }       \
    case 5: { constexpr int R = 5; CALL; break; }       \
    case 6: { constexpr int R = 6; CALL; break; }       \
    case 7: { constexpr int R = 7; CALL; break; }       \
    case 8: { constexpr int R = 8; CALL; break; }       \
    case 9: { constexpr int R = 9; CALL; break; }       \
    case 12: { constexpr int R = 12; CALL; break; }     \
    default: ANY;                                       \
  }

// One row's share of the update's gradients, any width: ga[r] += x·dxa[r] and, when g is given,
// the row's whole gradient g = dy + Σ_r dxa[r]·a[r].
NR_INLINE void update_input_grads_any(const float* dy, const float* x, const float* a, const float* dxa, float* g,
                                      float* ga, int64_t k, int64_t rank) {
  if (g) std::memcpy(g, dy, k * sizeof(float));
  for (int64_t r = 0; r < rank; ++r) {
    const float s = dxa[r];
    const float* ar = a + r * k;
    float* gar = ga + r * k;
#pragma omp simd
    for (int64_t j = 0; j < k; ++j) {
      if (g) g[j] += s * ar[j];
      gar[j] += x[j] * s;
    }
  }
}

NR_CLONES void rms_norm_lora_rows(const float* x, const float* w, const float* a, float* y, float* rstd, float* xa,
                                  int64_t d, int64_t rank, float eps, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    rstd[i] = rms_norm_row(x + i * d, w, y + i * d, d, eps);
    NR_BY_RANK(rank, row_times_rows<R>(y + i * d, a, d, xa + i * rank),
               row_times_rows_any(y + i * d, a, d, rank, xa + i * rank));
  }
}

// One row, width R: g = dy + Σ_r dxa[r]·a[r] into g (scratch), ga[r] += y·dxa[r] with y = w·x·rstd,
// and dx from g as rms_norm_grad_row makes it (when dx is given).
template <int R>
NR_INLINE void rms_norm_lora_grad_row(const float* dy, const float* x, const float* w, float rs, const float* a,
                                      const float* dxa, float* dx, float* ga, float* g, int64_t d) {
  float s[R];
  for (int r = 0; r < R; ++r) s[r] = dxa[r];
  if (!dx) {
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const float y = w[j] * (x[j] * rs);
      for (int r = 0; r < R; ++r) ga[r * d + j] += y * s[r];
    }
    return;
  }
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < d; ++j) {
    float gj = dy[j];
    for (int r = 0; r < R; ++r) gj += s[r] * a[r * d + j];
    const float xw = x[j] * w[j];
    for (int r = 0; r < R; ++r) ga[r * d + j] += xw * rs * s[r];
    g[j] = gj;
    dot += gj * xw;
  }
  const float c = dot * rs * rs / static_cast<float>(d);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) dx[j] = rs * (g[j] * w[j] - x[j] * c);
}

NR_INLINE void rms_norm_lora_grad_row_any(const float* dy, const float* x, const float* w, float rs, const float* a,
                                          const float* dxa, float* dx, float* ga, float* y, float* g, int64_t d,
                                          int64_t rank) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] = w[j] * (x[j] * rs);
  update_input_grads_any(dy, y, a, dxa, dx ? g : nullptr, ga, d, rank);
  if (dx) rms_norm_grad_row(g, x, w, rs, dx, d);
}

// dx (when given) and this task's ga [R, d] for rows [begin, end); y and g are a row each of scratch.
NR_CLONES void rms_norm_lora_grad_rows(const float* dy, const float* x, const float* w, const float* rstd,
                                       const float* a, const float* dxa, float* dx, float* ga, float* y, float* g,
                                       int64_t d, int64_t rank, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float *dyi = dy + i * d, *xi = x + i * d, *dxai = dxa + i * rank;
    float* dxi = dx ? dx + i * d : nullptr;
    NR_BY_RANK(rank, rms_norm_lora_grad_row<R>(dyi, xi, w, rstd[i], a, dxai, dxi, ga, g, d),
               rms_norm_lora_grad_row_any(dyi, xi, w, rstd[i], a, dxai, dxi, ga, y, g, d, rank));
  }
}

struct RmsNormLora : public torch::autograd::Function<RmsNormLora> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight, double eps,
                               const at::Tensor& a_t) {
    const at::Tensor x = input.contiguous(), w = weight.contiguous();
    const int64_t d = x.size(-1), rank = a_t.size(1), rows = x.numel() / std::max<int64_t>(d, 1);
    TORCH_CHECK(w.numel() == d && a_t.size(0) == d, "rms_norm_lora: weight ", w.sizes(), " and a_t ", a_t.sizes(),
                " for rows of ", d);
    const at::Tensor a = a_t.t().contiguous();  // [R, d]
    at::Tensor y = at::empty_like(x), rstd = at::empty({rows}, x.options()), xa = at::empty({rows, rank}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *ap = a.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = rstd.data_ptr<float>(), *xap = xa.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(d * (rank + 1)), [&](int64_t b, int64_t e) {
      rms_norm_lora_rows(xp, wp, ap, yp, rp, xap, d, rank, static_cast<float>(eps), b, e);
    });
    ctx->save_for_backward({x, w, rstd, a_t});
    return {y, xa};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2], &a_t = saved[3];
    const at::Tensor dy = grads[0].contiguous(), dxa = grads[1].contiguous();
    const int64_t d = x.size(-1), rows = rstd.numel(), rank = a_t.size(1);
    const at::Tensor a = a_t.t().contiguous();
    at::Tensor dx = ctx->needs_input_grad(0) ? at::empty_like(x) : at::Tensor();
    const float *dyp = dy.data_ptr<float>(), *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(),
                *rp = rstd.data_ptr<float>(), *ap = a.data_ptr<float>(), *dxap = dxa.data_ptr<float>();
    float* dxp = dx.defined() ? dx.data_ptr<float>() : nullptr;
    at::Tensor ga = parallel_accumulate(rows, grain_rows(d * (rank + 1)), rank * d, x.options(),
                                        [&](int64_t b, int64_t e, float* part) {
                                          std::vector<float> y(d), g(d);
                                          rms_norm_lora_grad_rows(dyp, xp, wp, rp, ap, dxap, dxp, part, y.data(),
                                                                  g.data(), d, rank, b, e);
                                        });
    at::Tensor dw;
    if (ctx->needs_input_grad(1)) {  // full fine-tuning only: plain ops are fine here
      const at::Tensor g = dy.view({rows, d}) + at::mm(dxa, a);
      dw = (g * x.view({rows, d}) * rstd.unsqueeze(1)).sum(0);
    }
    return {dx, dw, at::Tensor(), ga.view({rank, d}).t()};
  }
};

NR_CLONES void silu_mul_lora_rows(const float* gu, const float* a, float* y, float* xa, int64_t inter, int64_t rank,
                                  int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float* yi = y + i * inter;
    silu_mul_row(gu + i * 2 * inter, gu + i * 2 * inter + inter, yi, inter);
    NR_BY_RANK(rank, row_times_rows<R>(yi, a, inter, xa + i * rank), row_times_rows_any(yi, a, inter, rank, xa + i * rank));
  }
}

// One row, width R, in one pass: the row's whole gradient dy + Σ_r dxa[r]·a[r] through SwiGLU's
// backward into dg, du, and ga[r] += act·dxa[r] with act = silu(gate)·up rebuilt.
template <int R>
NR_INLINE void silu_mul_lora_grad_row(const float* dy, const float* gate, const float* up, const float* a,
                                      const float* dxa, float* dg, float* du, float* ga, int64_t inter) {
  float s[R];
  for (int r = 0; r < R; ++r) s[r] = dxa[r];
#pragma omp simd
  for (int64_t j = 0; j < inter; ++j) {
    const float sig = sigmoid(gate[j]);
    const float act = gate[j] * sig * up[j];
    float gj = dy[j];
    for (int r = 0; r < R; ++r) {
      gj += s[r] * a[r * inter + j];
      ga[r * inter + j] += act * s[r];
    }
    du[j] = gj * gate[j] * sig;
    dg[j] = gj * up[j] * sig * (1.0f + gate[j] * (1.0f - sig));
  }
}

NR_INLINE void silu_mul_lora_grad_row_any(const float* dy, const float* gate, const float* up, const float* a,
                                          const float* dxa, float* dg, float* du, float* ga, float* act, float* g,
                                          int64_t inter, int64_t rank) {
  silu_mul_row(gate, up, act, inter);
  update_input_grads_any(dy, act, a, dxa, g, ga, inter, rank);
  silu_mul_grad_row(g, gate, up, dg, du, inter);
}

// dgu and this task's ga [R, I] for rows [begin, end); act and g are a row each of scratch.
NR_CLONES void silu_mul_lora_grad_rows(const float* dy, const float* gu, const float* a, const float* dxa, float* dgu,
                                       float* ga, float* act, float* g, int64_t inter, int64_t rank, int64_t begin,
                                       int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float *dyi = dy + i * inter, *gate = gu + i * 2 * inter, *dxai = dxa + i * rank;
    float* dg = dgu + i * 2 * inter;
    NR_BY_RANK(rank, silu_mul_lora_grad_row<R>(dyi, gate, gate + inter, a, dxai, dg, dg + inter, ga, inter),
               silu_mul_lora_grad_row_any(dyi, gate, gate + inter, a, dxai, dg, dg + inter, ga, act, g, inter, rank));
  }
}

struct SiluMulLora : public torch::autograd::Function<SiluMulLora> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& a_t) {
    const at::Tensor gu = input.contiguous();
    const int64_t inter = gu.size(-1) / 2, rank = a_t.size(1), rows = gu.numel() / std::max<int64_t>(gu.size(-1), 1);
    TORCH_CHECK(gu.size(-1) % 2 == 0 && a_t.size(0) == inter, "silu_mul_lora: gate|up ", gu.sizes(), " and a_t ",
                a_t.sizes());
    std::vector<int64_t> shape = gu.sizes().vec();
    shape.back() = inter;
    const at::Tensor a = a_t.t().contiguous();  // [R, I]
    at::Tensor y = at::empty(shape, gu.options()), xa = at::empty({rows, rank}, gu.options());
    const float *gp = gu.data_ptr<float>(), *ap = a.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *xap = xa.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(inter * (rank + 2)), [&](int64_t b, int64_t e) {
      silu_mul_lora_rows(gp, ap, yp, xap, inter, rank, b, e);
    });
    ctx->save_for_backward({gu, a_t});
    return {y, xa};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gu = saved[0], &a_t = saved[1];
    const at::Tensor dy = grads[0].contiguous(), dxa = grads[1].contiguous();
    const int64_t inter = gu.size(-1) / 2, rank = a_t.size(1), rows = dxa.size(0);
    const at::Tensor a = a_t.t().contiguous();
    at::Tensor dgu = at::empty_like(gu);
    const float *dyp = dy.data_ptr<float>(), *gp = gu.data_ptr<float>(), *ap = a.data_ptr<float>(),
                *dxap = dxa.data_ptr<float>();
    float* dp = dgu.data_ptr<float>();
    at::Tensor ga = parallel_accumulate(rows, grain_rows(inter * (rank + 2)), rank * inter, gu.options(),
                                        [&](int64_t b, int64_t e, float* part) {
                                          std::vector<float> act(inter), g(inter);
                                          silu_mul_lora_grad_rows(dyp, gp, ap, dxap, dp, part, act.data(), g.data(),
                                                                  inter, rank, b, e);
                                        });
    return {dgu, ga.view({rank, inter}).t()};
  }
};

}  // namespace
}  // namespace nr

using namespace nr;

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

// Returns x; xa = x·a_t goes to *xa_out.
at::Tensor* nr_rms_norm_lora(const at::Tensor* x, const at::Tensor* weight, double eps, const at::Tensor* a_t,
                             at::Tensor** xa_out) {
  RECORD_FUNCTION("noregret::rms_norm_lora", std::vector<c10::IValue>());
  return guarded([&] {
    variable_list out = RmsNormLora::apply(*x, *weight, eps, *a_t);
    *xa_out = new at::Tensor(out[1]);
    return out[0];
  });
}

// Returns silu(gate)·up; its product with a_t goes to *xa_out.
at::Tensor* nr_silu_mul_lora(const at::Tensor* gate_up, const at::Tensor* a_t, at::Tensor** xa_out) {
  RECORD_FUNCTION("noregret::silu_mul_lora", std::vector<c10::IValue>());
  return guarded([&] {
    variable_list out = SiluMulLora::apply(*gate_up, *a_t);
    *xa_out = new at::Tensor(out[1]);
    return out[0];
  });
}

bool nr_grad_enabled() { return at::GradMode::is_enabled(); }

}  // extern "C"
