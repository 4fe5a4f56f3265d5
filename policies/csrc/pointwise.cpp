// RMSNorm, rotary embedding and SwiGLU's silu(gate)·up as torch::autograd::Functions with
// hand-written backward passes: each replaces a chain of eager ops (6 forward / ~10 backward, 4 and
// 4, 3 and 5) with one pass over memory and one dispatch. Checked against the eager ops' values
// and gradients in policies/tests/kernels.rs.

#include "common.h"

namespace nr {
namespace {

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

bool nr_grad_enabled() { return at::GradMode::is_enabled(); }

}  // extern "C"
