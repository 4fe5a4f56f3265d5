// Shared by the fused float32 CPU kernels (csrc/*.cpp): build flags' consequences, the vector
// helpers every hot loop uses, and the error convention of the extern "C" entry points Rust calls
// (they take and return at::Tensor handles, what tch's tensors wrap, and report failures as a null
// result plus a message, never by unwinding across the language boundary).

#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace nr {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Each hot loop is compiled for AVX-512, AVX2 and plain x86-64; the loader picks by CPU features.
// (Built with -fno-trapping-math, without which GCC will not vectorize the clamps in exp_approx,
// and -fopenmp, without which at::parallel_for silently runs on one thread.)
#define NR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// Helpers called from those loops must be inlined into each clone to get its instruction set.
#define NR_INLINE inline __attribute__((always_inline))

// The message of the last failure on this thread, for nr_last_error.
inline thread_local std::string last_error;

// Kernels index rows through strides but need each row's last axis contiguous.
inline at::Tensor last_axis_contiguous(const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// Rows per parallel task: enough work that a task outweighs waking a thread.
inline int64_t grain_rows(int64_t row_len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_len, 1)); }

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

// 16 floats: one AVX-512 register (two AVX2 ones in that clone).
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

// Row-blocked passes take rows this many at a time, so each load of a small operand (an adapter
// factor, a gradient accumulator) serves several rows.
constexpr int kRowBlock = 4;

// Run `rows_fn(begin, end, partial)` over rows in parallel, each task accumulating into its own
// zeroed [size] partial; returns the partials' sum.
template <typename F>
at::Tensor parallel_accumulate(int64_t rows, int64_t grain, int64_t size, const at::TensorOptions& options,
                               const F& rows_fn) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (rows + grain - 1) / grain));
  at::Tensor partials = at::zeros({tasks, size}, options);
  float* pp = partials.data_ptr<float>();
  // Task boundaries on whole row blocks, so only the last task has a ragged tail.
  const int64_t per_task = (rows + tasks * kRowBlock - 1) / (tasks * kRowBlock) * kRowBlock;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      rows_fn(std::min(rows, t * per_task), std::min(rows, (t + 1) * per_task), pp + t * size);
    }
  });
  return partials.sum(0);
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

}  // namespace nr
