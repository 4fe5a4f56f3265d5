// An adapter's low-rank update: y += (x·A)·B in one pass per row for sampling, and the learner's
// frozen linear layer plus update as one autograd op with a leaner backward pass (computing x·A
// itself, or given it by the op that made x).

#include "common.h"

namespace nr {
namespace {

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
void add_update(at::Tensor& y, const at::Tensor& x_in, const at::Tensor& a_t, const at::Tensor& b_t,
                const at::Tensor& mask_in) {
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.stride(-1) == 1 && x_in.dim() == 2 ? x_in : x_in.contiguous().view({-1, x_in.size(-1)});
  const int64_t m = x.size(0), k = x.size(1), rank = a_t.size(1), n = b_t.size(1);
  TORCH_CHECK(y.is_contiguous() && y.size(0) == m && y.size(1) == n && a_t.size(0) == k && b_t.size(0) == rank &&
                  rank <= kMaxSamplingRank,
              "lora update: y ", y.sizes(), " x ", x.sizes(), " a_t ", a_t.sizes(), " b_t ", b_t.sizes());
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
  TORCH_CHECK(!mask.defined() || (mask.size(1) == rank && m % mask.size(0) == 0), "lora update: mask ", mask.sizes());
  const int64_t tokens_per_row = mask.defined() ? m / mask.size(0) : 1;
  const float *xp = x.data_ptr<float>(), *ap = a.data(), *bp = b.data_ptr<float>();
  const float* mp = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, m, grain_rows((k + n) * rank), [&](int64_t bgn, int64_t e) {
    lora_add_rows(xp, ldx, ap, bp, mp, tokens_per_row, yp, k, n, rank, bgn, e);
  });
}

// ---- A frozen linear layer with a trainable low-rank update, for the learner ----
// y = init + x·w + (x·a_t)·b_t, with w [K, N] frozen, a_t [K, R] and b_t [R, N] (α/r folded in)
// trainable, init a residual [M, N], a bias [N] or absent. As separate autograd ops the update's
// backward reads dy twice (for d(x·a_t) and d b_t), writes its share of dx to a fresh tensor and
// adds it to the base's dx in another pass. Here dy is read once, and the update's dx is added
// into the base's dx while x is read for d a_t.
//
// A fused group's b_t is block-diagonal (q|k|v: each module's rank columns reach only its own
// output columns), so the caller lists the blocks that may be non-zero, as (first rank, end rank,
// first column, end column); the dy pass works inside them only (a third of the work for q|k|v)
// and b_t's gradient is zero outside them. Both passes take rows four at a time so that each
// load of b_t, a_t or a gradient accumulator serves four rows.

// Rows m..m+ROWS, ranks r0..r0+RB of one block, columns [c0, c1):
// gxa[m][r] = dy[m]·b_t[r] and gb[r] += xa[m][r]·dy[m].
template <int ROWS, int RB>
NR_INLINE void dy_block(const float* dy, int64_t n, const float* xa, const float* b, float* gxa, float* gb,
                        int64_t rank, int64_t m, int64_t r0, int64_t c0, int64_t c1) {
  v16 acc[ROWS][RB];
  float w[ROWS][RB], tail[ROWS][RB];
  for (int i = 0; i < ROWS; ++i) {
    for (int r = 0; r < RB; ++r) {
      acc[i][r] = v16{};
      tail[i][r] = 0.0f;
      w[i][r] = xa[(m + i) * rank + r0 + r];
    }
  }
  const float* d0 = dy + m * n;
  int64_t j = c0;
  for (; j + 16 <= c1; j += 16) {
    v16 d[ROWS];
    for (int i = 0; i < ROWS; ++i) {
      d[i] = load16(d0 + i * n + j);
      __builtin_prefetch(d0 + (ROWS + i) * n + j);  // the next rows' same columns (see x_block)
    }
    for (int r = 0; r < RB; ++r) {
      const v16 bv = load16(b + (r0 + r) * n + j);
      v16 g = load16(gb + (r0 + r) * n + j);
      for (int i = 0; i < ROWS; ++i) {
        acc[i][r] += d[i] * bv;
        g += d[i] * w[i][r];
      }
      store16(gb + (r0 + r) * n + j, g);
    }
  }
  for (; j < c1; ++j) {
    for (int r = 0; r < RB; ++r) {
      float g = gb[(r0 + r) * n + j];
      for (int i = 0; i < ROWS; ++i) {
        tail[i][r] += d0[i * n + j] * b[(r0 + r) * n + j];
        g += d0[i * n + j] * w[i][r];
      }
      gb[(r0 + r) * n + j] = g;
    }
  }
  for (int i = 0; i < ROWS; ++i) {
    for (int r = 0; r < RB; ++r) gxa[(m + i) * rank + r0 + r] = horizontal_sum(acc[i][r]) + tail[i][r];
  }
}

template <int ROWS>
NR_INLINE void dy_rows_in_block(const float* dy, int64_t n, const float* xa, const float* b, float* gxa, float* gb,
                                int64_t rank, int64_t m, const int64_t* block) {
  const int64_t c0 = block[2], c1 = block[3];
  for (int64_t r = block[0]; r < block[1]; r += 4) {
    switch (std::min<int64_t>(4, block[1] - r)) {
      case 1: dy_block<ROWS, 1>(dy, n, xa, b, gxa, gb, rank, m, r, c0, c1); break;
      case 2: dy_block<ROWS, 2>(dy, n, xa, b, gxa, gb, rank, m, r, c0, c1); break;
      case 3: dy_block<ROWS, 3>(dy, n, xa, b, gxa, gb, rank, m, r, c0, c1); break;
      default: dy_block<ROWS, 4>(dy, n, xa, b, gxa, gb, rank, m, r, c0, c1); break;
    }
  }
}

// Rows [begin, end) of the dy pass, over every block (gb [R, N] is this task's own).
NR_CLONES void lora_dy_rows(const float* dy, const float* xa, const float* b_t, const int64_t* blocks,
                            int64_t num_blocks, float* gxa, float* gb, int64_t n, int64_t rank, int64_t begin,
                            int64_t end) {
  int64_t m = begin;
  for (; m + kRowBlock <= end; m += kRowBlock) {
    for (int64_t k = 0; k < num_blocks; ++k) dy_rows_in_block<kRowBlock>(dy, n, xa, b_t, gxa, gb, rank, m, blocks + 4 * k);
  }
  for (; m < end; ++m) {
    for (int64_t k = 0; k < num_blocks; ++k) dy_rows_in_block<1>(dy, n, xa, b_t, gxa, gb, rank, m, blocks + 4 * k);
  }
}

// Rows m..m+ROWS: dx[m] += gxa[m]·a (a = a_tᵀ, [R, K]) when dx is given, and ga += gxa[m]ᵀ·x[m].
template <int ROWS>
NR_INLINE void x_block(const float* x, const float* gxa, const float* a, float* dx, float* ga, int64_t k,
                       int64_t rank, int64_t m) {
  const float* x0 = x + m * k;
  float* dx0 = dx ? dx + m * k : nullptr;
  const float* g0 = gxa + m * rank;
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    v16 xv[ROWS], dv[ROWS];
    for (int i = 0; i < ROWS; ++i) {
      xv[i] = load16(x0 + i * k + j);
      if (dx0) dv[i] = load16(dx0 + i * k + j);
      // The next rows' same columns: four rows read side by side are four short streams, which
      // the hardware prefetcher picks up too late (loads were over half of this pass).
      __builtin_prefetch(x0 + (ROWS + i) * k + j);
      if (dx0) __builtin_prefetch(dx0 + (ROWS + i) * k + j, 1);
    }
    for (int64_t r = 0; r < rank; ++r) {
      v16 g = load16(ga + r * k + j);
      const v16 av = load16(a + r * k + j);
      for (int i = 0; i < ROWS; ++i) {
        const float s = g0[i * rank + r];
        g += xv[i] * s;
        if (dx0) dv[i] += av * s;
      }
      store16(ga + r * k + j, g);
    }
    if (dx0) {
      for (int i = 0; i < ROWS; ++i) store16(dx0 + i * k + j, dv[i]);
    }
  }
  for (; j < k; ++j) {
    for (int64_t r = 0; r < rank; ++r) {
      float g = ga[r * k + j];
      for (int i = 0; i < ROWS; ++i) {
        const float s = g0[i * rank + r];
        g += x0[i * k + j] * s;
        if (dx0) dx0[i * k + j] += a[r * k + j] * s;
      }
      ga[r * k + j] = g;
    }
  }
}

// Rows [begin, end) of the x pass (ga [R, K] is this task's own).
NR_CLONES void lora_x_rows(const float* x, const float* gxa, const float* a, float* dx, float* ga, int64_t k,
                           int64_t rank, int64_t begin, int64_t end) {
  int64_t m = begin;
  for (; m + kRowBlock <= end; m += kRowBlock) x_block<kRowBlock>(x, gxa, a, dx, ga, k, rank, m);
  for (; m < end; ++m) x_block<1>(x, gxa, a, dx, ga, k, rank, m);
}

// The parts of both learner ops below that do not involve x: y = init + x·w + xa·b_t forward;
// backward, d init, dx's base part dy·wᵀ, and the dy pass, which gives d xa = dy·b_tᵀ and b_t's
// gradient xaᵀ·dy.
at::Tensor base_plus_update(const at::Tensor& x, const at::Tensor& w, const at::Tensor& init, const at::Tensor& xa,
                            const at::Tensor& b_t) {
  at::Tensor y = init.numel() > 0 ? at::addmm(init, x, w) : at::mm(x, w);  // empty init: none
  return y.addmm_(xa, b_t);
}

struct UpdateGrads {
  at::Tensor dx, dinit, gxa, gb;  // dx: the base part only; undefined where not asked for
};

UpdateGrads update_backward(AutogradContext* ctx, const at::Tensor& dy, const at::Tensor& w, const at::Tensor& xa,
                            const at::Tensor& b_t, int64_t grain) {
  const int64_t m = dy.size(0), n = dy.size(1), rank = xa.size(1);
  const at::Tensor b_c = b_t.contiguous();  // [R, N]
  UpdateGrads g;
  if (ctx->needs_input_grad(0)) g.dx = at::mm(dy, w.t());
  if (ctx->needs_input_grad(2)) g.dinit = ctx->saved_data["init_is_bias"].toBool() ? dy.sum(0) : dy;
  g.gxa = at::empty({m, rank}, dy.options());
  const float *dyp = dy.data_ptr<float>(), *xap = xa.data_ptr<float>(), *bp = b_c.data_ptr<float>();
  float* gp = g.gxa.data_ptr<float>();
  const std::vector<int64_t> blocks = ctx->saved_data["blocks"].toIntVector();
  g.gb = parallel_accumulate(m, grain, rank * n, dy.options(), [&](int64_t b, int64_t e, float* part) {
           lora_dy_rows(dyp, xap, bp, blocks.data(), static_cast<int64_t>(blocks.size() / 4), gp, part, n, rank, b, e);
         }).view({rank, n});
  return g;
}

void save_update_settings(AutogradContext* ctx, const at::Tensor& init, std::vector<int64_t> blocks) {
  ctx->saved_data["init_is_bias"] = init.numel() > 0 && init.dim() == 1;
  ctx->saved_data["blocks"] = std::move(blocks);
}

// y = init + x·w + (x·a_t)·b_t: the update's x·a_t computed here, and its share of dx and a_t's
// gradient in one pass over x and dx backward.
struct LinearLora : public torch::autograd::Function<LinearLora> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w,
                            const at::Tensor& init, const at::Tensor& a_t, const at::Tensor& b_t,
                            std::vector<int64_t> blocks) {  // blocks as checked_blocks gives them
    const at::Tensor x = x_in.contiguous();
    // At learner row counts MKL's two skinny products beat add_update's row pass (24 vs 16 ms per
    // small-preset step, measured), and x·a_t is kept for the backward pass.
    const at::Tensor xa = at::mm(x, a_t);
    ctx->save_for_backward({x, w, a_t, b_t, xa});
    save_update_settings(ctx, init, std::move(blocks));
    return base_plus_update(x, w, init, xa, b_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &a_t = saved[2], &b_t = saved[3], &xa = saved[4];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t m = x.size(0), k = x.size(1), rank = a_t.size(1);
    const int64_t grain = grain_rows(std::max(dy.size(1), k) * rank);
    UpdateGrads g = update_backward(ctx, dy, w, xa, b_t, grain);
    const at::Tensor a = a_t.t().contiguous();  // [R, K]
    const float *xp = x.data_ptr<float>(), *ap = a.data_ptr<float>(), *gp = g.gxa.data_ptr<float>();
    float* dxp = g.dx.defined() ? g.dx.data_ptr<float>() : nullptr;
    at::Tensor ga = parallel_accumulate(m, grain, rank * k, dy.options(), [&](int64_t b, int64_t e, float* part) {
      lora_x_rows(xp, gp, ap, dxp, part, k, rank, b, e);
    });
    return {g.dx, at::Tensor(), g.dinit, ga.view({rank, k}).t(), g.gb, at::Tensor()};
  }
};

// y = init + x·w + xa·b_t with xa = x·a_t made by the op that made x (RMSNorm, SwiGLU: see
// pointwise.cpp), which also takes d xa back: this op never reads x, forward or backward, and
// does not keep it.
struct LinearPlusUpdate : public torch::autograd::Function<LinearPlusUpdate> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w,
                            const at::Tensor& init, const at::Tensor& xa_in, const at::Tensor& b_t,
                            std::vector<int64_t> blocks) {
    const at::Tensor x = x_in.contiguous(), xa = xa_in.contiguous();
    ctx->save_for_backward({w, b_t, xa});
    save_update_settings(ctx, init, std::move(blocks));
    return base_plus_update(x, w, init, xa, b_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &w = saved[0], &b_t = saved[1], &xa = saved[2];
    const at::Tensor dy = grads[0].contiguous();
    UpdateGrads g = update_backward(ctx, dy, w, xa, b_t, grain_rows(dy.size(1) * xa.size(1)));
    return {g.dx, at::Tensor(), g.dinit, ctx->needs_input_grad(3) ? g.gxa : at::Tensor(), g.gb, at::Tensor()};
  }
};

// The blocks as a list, checked: each of the update's `rank` columns in exactly one block, all
// inside b_t [R, N]. None given: one block, all of b_t.
std::vector<int64_t> checked_blocks(const int64_t* blocks, int64_t num_blocks, int64_t rank, const at::Tensor& b_t) {
  const int64_t n = b_t.size(1);
  if (num_blocks == 0) return {0, rank, 0, n};
  std::vector<bool> covered(rank, false);
  for (int64_t k = 0; k < num_blocks; ++k) {
    const int64_t* bk = blocks + 4 * k;
    TORCH_CHECK(0 <= bk[0] && bk[0] < bk[1] && bk[1] <= rank && 0 <= bk[2] && bk[2] <= bk[3] && bk[3] <= n,
                "linear_lora: block ", k, " (", bk[0], ", ", bk[1], ", ", bk[2], ", ", bk[3], ") outside b_t ",
                b_t.sizes());
    for (int64_t r = bk[0]; r < bk[1]; ++r) {
      TORCH_CHECK(!covered[r], "linear_lora: rank column ", r, " in two blocks");
      covered[r] = true;
    }
  }
  TORCH_CHECK(std::all_of(covered.begin(), covered.end(), [](bool c) { return c; }),
              "linear_lora: blocks do not cover every rank column");
  return std::vector<int64_t>(blocks, blocks + 4 * num_blocks);
}

}  // namespace
}  // namespace nr

using namespace nr;

extern "C" {

// `init` may be null (no initial value). `blocks`: num_blocks × (first rank, end rank, first
// column, end column), the parts of b_t that may be non-zero; none: all of it.
at::Tensor* nr_linear_lora(const at::Tensor* x, const at::Tensor* w, const at::Tensor* init, const at::Tensor* a_t,
                           const at::Tensor* b_t, const int64_t* blocks, int64_t num_blocks) {
  RECORD_FUNCTION("noregret::linear_lora", std::vector<c10::IValue>());
  return guarded([&] {
    const at::Tensor none = at::empty({0}, x->options());  // autograd inputs cannot be undefined
    return LinearLora::apply(*x, *w, init ? *init : none, *a_t, *b_t, checked_blocks(blocks, num_blocks, a_t->size(1), *b_t));
  });
}

// As nr_linear_lora, with xa = x·a_t given (made by the op that made x).
at::Tensor* nr_linear_plus_update(const at::Tensor* x, const at::Tensor* w, const at::Tensor* init, const at::Tensor* xa,
                                  const at::Tensor* b_t, const int64_t* blocks, int64_t num_blocks) {
  RECORD_FUNCTION("noregret::linear_plus_update", std::vector<c10::IValue>());
  return guarded([&] {
    const at::Tensor none = at::empty({0}, x->options());
    TORCH_CHECK(xa->dim() == 2 && xa->size(0) == x->size(0) && xa->size(1) == b_t->size(0),
                "linear_plus_update: xa ", xa->sizes(), " for x ", x->sizes(), " and b_t ", b_t->sizes());
    return LinearPlusUpdate::apply(*x, *w, init ? *init : none, *xa, *b_t,
                                   checked_blocks(blocks, num_blocks, xa->size(1), *b_t));
  });
}

// `mask` may be null (every row uses the adapter). Adds into y and returns it.
at::Tensor* nr_lora_add(const at::Tensor* y, const at::Tensor* x, const at::Tensor* a_t, const at::Tensor* b_t,
                        const at::Tensor* mask) {
  RECORD_FUNCTION("noregret::lora_add", std::vector<c10::IValue>());
  return guarded([&] {
    at::Tensor out = *y;
    add_update(out, *x, *a_t, *b_t, mask ? *mask : at::Tensor());
    return out;
  });
}

}  // extern "C"
