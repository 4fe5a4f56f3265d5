// Weights pre-packed by MKL for products that need no gradient.

#include "common.h"

#include <dlfcn.h>

namespace nr {
namespace {

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

}  // namespace
}  // namespace nr

using namespace nr;

extern "C" {

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
