// Attention kernels: over the KV cache for sampling (rotate q and k, append k and v, attend),
// and causal attention over fresh sequences for training and scoring, forward and backward,
// optionally with the rotary embedding folded in.

#include "common.h"

namespace nr {
namespace {

// ---- Small products both attention kernels are built from ----

constexpr int64_t kBlock = 16;  // causal attention's query rows per block, and keys per score vector
int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

// s[r·ld + j] = Σ_e a[r·HD + e]·xt[e·ldt + j] for the ROWS rows of a and keys j < npad (a
// multiple of 16): ROWS score vectors accumulate in registers over the head dimension, from keys
// stored as columns, so no horizontal sums are needed.
template <int64_t HD, int ROWS>
NR_INLINE void block_scores(const float* a, const float* xt, int64_t ldt, int64_t npad, float* s, int64_t ld) {
  for (int64_t j = 0; j < npad; j += 16) {
    v16 acc[ROWS];
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) acc[r] = v16{};
    for (int64_t e = 0; e < HD; ++e) {
      const v16 x = load16(xt + e * ldt + j);
#pragma GCC unroll 16
      for (int r = 0; r < ROWS; ++r) acc[r] += x * a[r * HD + e];
    }
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) store16(s + r * ld + j, acc[r]);
  }
}

// The unnormalised softmax of one score row: p[j] = exp(scale·p[j] − top) for j < n, with
// top = scale·max(p) (written out); returns Σ p[j].
NR_INLINE float exp_shifted(float* p, int64_t n, float scale, float& top) {
  top = max_of(p, n) * scale;
  const float shift = top;
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < n; ++j) {
    p[j] = exp_approx(p[j] * scale - shift);
    total += p[j];
  }
  return total;
}

// Rows of a tile: as many as keep the tile's accumulators in 16 registers.
template <int64_t HD>
constexpr int kTile = 256 / HD;

// acc[t] = Σ_{u < n} w[t·wt + u·wu]·y[u·ldy .. +HD] for the tile's R rows t: an [R × n]·[n × HD]
// product whose left factor may be read transposed (wt = 1) — P·V and dS·K by query rows, Pᵀ·dO
// and dSᵀ·Q by key rows.
template <int64_t HD, int R = kTile<HD>>
NR_INLINE void tile_product(const float* w, int64_t wt, int64_t wu, int64_t n, const float* y, int64_t ldy,
                            v16 (&acc)[R][HD / 16]) {
  constexpr int C = HD / 16;
#pragma GCC unroll 8
  for (int t = 0; t < R; ++t)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[t][c] = v16{};
  for (int64_t u = 0; u < n; ++u) {
    const float* yu = y + u * ldy;
    v16 yv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) yv[c] = load16(yu + 16 * c);
#pragma GCC unroll 8
    for (int t = 0; t < R; ++t) {
      const float wv = w[t * wt + u * wu];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[t][c] += yv[c] * wv;
    }
  }
}

// ---- Cached attention for sampling: rotate q and k, append k and v to the cache, attend ----
// Row b's new token t sits at position lens[b] + t and sees cache positions 0..=that. Keys are
// cached as columns ([hd, ldk] per row and kv head, ldk a multiple of 16), so the scores of 16
// positions accumulate in registers with no horizontal sums, and the query heads that share a kv
// head are handled together, so each cached key and value is read once per new token.

struct CachedAttentionArgs {
  const float *q, *k, *v, *cos, *ssin;
  int64_t q_strides[3], k_strides[3], v_strides[3];
  float *k_cache, *v_cache, *out;  // k_cache [B, kv_heads, hd, ldk], v_cache [B, kv_heads, capacity, hd]
  const int64_t* lens;
  int64_t t_len, heads, kv_heads, hd, capacity, ldk;
};

// Each of the G score rows s [G, ld] over its first `visible` entries becomes exp(s − max), in
// place; inv[g] gets 1 / the row's sum (applied to the weighted sum of values, not to each entry).
template <int G>
NR_INLINE void softmax_rows(float* s, int64_t ld, int64_t visible, float* inv) {
  for (int g = 0; g < G; ++g) {
    float top;
    inv[g] = 1.0f / exp_shifted(s + g * ld, visible, 1.0f, top);
  }
}

// G queries qs [G, HD] (rotated, scaled) against the first `visible` cached positions; the
// results go to G consecutive output heads at out.
template <int64_t HD, int G>
NR_INLINE void attend_group(const float* qs, const float* kt, int64_t ldk, const float* values, int64_t visible,
                            float* s, float* out) {
  block_scores<HD, G>(qs, kt, ldk, round_up16(visible), s, ldk);
  float inv[G];
  softmax_rows<G>(s, ldk, visible, inv);
  v16 acc[G][HD / 16];
  tile_product<HD, G>(s, ldk, 1, visible, values, HD, acc);
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < HD / 16; ++c) store16(out + g * HD + 16 * c, acc[g][c] * inv[g]);
}

// A kv head's `group` query heads, in chunks of 8, 4, 2 or 1 (no more than a tile holds).
template <int64_t HD>
NR_INLINE void attend_heads(const float* qs, int64_t group, const float* kt, int64_t ldk, const float* values,
                            int64_t visible, float* s, float* out) {
  constexpr int R = kTile<HD>;
  for (int64_t g = 0; g < group;) {
    const int64_t left = group - g;
    const float* q = qs + g * HD;
    float* o = out + g * HD;
    if (R >= 8 && left >= 8) {
      attend_group<HD, (R >= 8 ? 8 : 1)>(q, kt, ldk, values, visible, s, o);
      g += 8;
    } else if (R >= 4 && left >= 4) {
      attend_group<HD, (R >= 4 ? 4 : 1)>(q, kt, ldk, values, visible, s, o);
      g += 4;
    } else if (left >= 2) {
      attend_group<HD, 2>(q, kt, ldk, values, visible, s, o);
      g += 2;
    } else {
      attend_group<HD, 1>(q, kt, ldk, values, visible, s, o);
      g += 1;
    }
  }
}

// Any head size: the same steps as plain loops (the compiler vectorizes each over positions or
// over the head dimension).
NR_INLINE void attend_any(const float* q, const float* kt, int64_t ldk, const float* values, int64_t visible,
                          int64_t hd, float* s, float* out) {
  std::fill(s, s + visible, 0.0f);
  for (int64_t e = 0; e < hd; ++e) {
    const float qe = q[e];
    const float* row = kt + e * ldk;
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) s[j] += qe * row[j];
  }
  float inv;
  softmax_rows<1>(s, ldk, visible, &inv);
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = 0; j < visible; ++j) {
    const float p = s[j] * inv;
    const float* vj = values + j * hd;
#pragma omp simd
    for (int64_t e = 0; e < hd; ++e) out[e] += p * vj[e];
  }
}

NR_CLONES void cached_attention_tasks(const CachedAttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t hd = a.hd, group = a.heads / a.kv_heads, ldk = a.ldk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> s(8 * ldk), qs(group * hd), key(hd);
  for (int64_t task = begin; task < end; ++task) {  // task = b·kv_heads + kv head
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads, start = a.lens[b];
    float* kt = a.k_cache + task * hd * ldk;
    float* values = a.v_cache + task * a.capacity * hd;
    for (int64_t t = 0; t < a.t_len; ++t) {
      const int64_t row = b * a.t_len + t;
      const float* k = a.k + b * a.k_strides[0] + t * a.k_strides[1] + h * a.k_strides[2];
      const float* v = a.v + b * a.v_strides[0] + t * a.v_strides[1] + h * a.v_strides[2];
      const float* sine = a.ssin + row * hd;
      rotate_into(k, a.cos + row * hd, sine, sine + hd / 2, 1.0f, key.data(), hd);
      for (int64_t e = 0; e < hd; ++e) kt[e * ldk + start + t] = key[e];
      std::memcpy(values + (start + t) * hd, v, hd * sizeof(float));
    }
    for (int64_t t = 0; t < a.t_len; ++t) {
      const int64_t row = b * a.t_len + t, visible = start + t + 1;
      const float* sine = a.ssin + row * hd;
      for (int64_t g = 0; g < group; ++g) {
        const float* q = a.q + b * a.q_strides[0] + t * a.q_strides[1] + (h * group + g) * a.q_strides[2];
        rotate_into(q, a.cos + row * hd, sine, sine + hd / 2, scale, qs.data() + g * hd, hd);
      }
      float* o = a.out + (row * a.heads + h * group) * hd;
      switch (hd) {
        case 32: attend_heads<32>(qs.data(), group, kt, ldk, values, visible, s.data(), o); break;
        case 64: attend_heads<64>(qs.data(), group, kt, ldk, values, visible, s.data(), o); break;
        case 128: attend_heads<128>(qs.data(), group, kt, ldk, values, visible, s.data(), o); break;
        default:
          for (int64_t g = 0; g < group; ++g) {
            attend_any(qs.data() + g * hd, kt, ldk, values, visible, hd, s.data(), o + g * hd);
          }
      }
    }
  }
}

// q [B, T, heads, hd], k and v [B, T, kv_heads, hd] (any strides, contiguous last axis);
// cos, signed_sin [B·T, hd]; k_cache [B, kv_heads, hd, ldk] (keys as columns, ldk ≥ capacity
// rounded up to 16), v_cache [B, kv_heads, capacity, hd]; lens [B] int64.
// Returns [B·T, heads·hd].
at::Tensor cached_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& cos, const at::Tensor& ssin, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& lens_in) {
  at::NoGradGuard no_grad;
  const at::Tensor q = last_axis_contiguous(q_in), k = last_axis_contiguous(k_in), v = last_axis_contiguous(v_in);
  const at::Tensor lens = lens_in.to(at::kLong).contiguous();
  const int64_t bsz = q.size(0), t_len = q.size(1), heads = q.size(2), hd = q.size(3);
  const int64_t kv_heads = k.size(2), capacity = v_cache.size(2);
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0 && k.sizes() == v.sizes() && k.size(0) == bsz &&
                  k.size(1) == t_len && k.size(3) == hd,
              "cached_attention: q ", q.sizes(), " k ", k.sizes(), " v ", v.sizes());
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && v_cache.size(0) == bsz &&
                  v_cache.size(1) == kv_heads && v_cache.size(3) == hd && k_cache.size(0) == bsz &&
                  k_cache.size(1) == kv_heads && k_cache.size(2) == hd && k_cache.size(3) >= round_up16(capacity),
              "cached_attention: caches ", k_cache.sizes(), " and ", v_cache.sizes(), " do not fit ", k.sizes());
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
                        heads, kv_heads, hd, capacity, k_cache.size(3)};
  at::parallel_for(0, bsz * kv_heads, 1, [&](int64_t b, int64_t e) { cached_attention_tasks(a, b, e); });
  return out;
}

// ---- Causal attention over fresh sequences (training, scoring), forward and backward ----
// q [B, T, heads, hd], k and v [B, T, kv_heads, hd] (any strides, contiguous last axis) give
// out [B·T, heads·hd], the layout the output projection takes, plus each query's log-sum-exp,
// which is all the backward pass keeps (it recomputes the probabilities, as FlashAttention does).
// One task per (batch row, kv head) takes every query head of that group, so the backward pass
// adds into its key and value gradients without locks. Queries go in blocks of 16 rows, copied
// (rotated) into a contiguous buffer with the task's keys and values, so every product below is
// a small register-tiled matrix product over buffers in cache.

struct CausalArgs {
  const float *q, *k, *v;
  int64_t qs[3], ks[3], vs[3];  // strides of batch, position, head (elements)
  const float *cos, *ssin;      // rotary tables for q and k, or null: already rotated
  int64_t table_rows_per_b;     // T: tables [B·T, hd]; 0: [T, hd], one row per position for all rows
  int64_t t_len, heads, kv_heads;
  float scale;
};

// Where the backward pass writes dq, dk, dv (separate tensors, or slices of one d(qkv)).
struct CausalGrads {
  float *dq, *dk, *dv;
  int64_t qs[3], ks[3], vs[3];
};

// Ask for n rows of HD floats, `stride` floats apart, to be brought into L2 ahead of use (for
// writing: fetched for ownership). The rows of one head lie a few KB apart in q|k|v, out and
// their gradients, beyond what the hardware prefetcher follows; without this, the first touch
// of each query row stalled a fifth of the backward pass. Asked one block ahead: a whole head at
// once overran the core's queue of outstanding misses.
template <int64_t HD>
NR_INLINE void prefetch_rows(const float* x, int64_t stride, int64_t n, bool write) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < HD; c += 16) {
      if (write) {
        __builtin_prefetch(x + j * stride + c, 1, 2);
      } else {
        __builtin_prefetch(x + j * stride + c, 0, 2);
      }
    }
  }
}

// Where the query block after block i0 of (task, group member g) lies, in a task range ending
// at `end` (for prefetching its rows).
struct NextBlock {
  bool exists;
  int64_t b, head, i0, rows;
};

NR_INLINE NextBlock next_block(const CausalArgs& a, int64_t task, int64_t g, int64_t i0, int64_t end) {
  const int64_t group = a.heads / a.kv_heads;
  int64_t t = task;
  if (i0 + kBlock < a.t_len) {
    i0 += kBlock;
  } else {
    i0 = 0;
    g = g + 1 < group ? g + 1 : 0;
    t = g == 0 ? task + 1 : task;
  }
  return {t < end, t / a.kv_heads, (t % a.kv_heads) * group + g, i0, std::min(kBlock, a.t_len - i0)};
}

// Row `pos` of batch row b, rotated when the args carry tables (inverse rotation: transpose).
template <int64_t HD>
NR_INLINE void load_row(const CausalArgs& a, const float* x, int64_t b, int64_t pos, bool transpose, float* out) {
  if (!a.cos) {
    std::memcpy(out, x, HD * sizeof(float));
    return;
  }
  const int64_t row = b * a.table_rows_per_b + pos;
  const float* s = a.ssin + row * HD;
  rotate_into(x, a.cos + row * HD, transpose ? s + HD / 2 : s, transpose ? s : s + HD / 2, 1.0f, out, HD);
}

// One stage of a 16×16 transpose: rows i and i + H swap their off-diagonal H-wide column blocks
// (after the stages H = 8, 4, 2, 1 every block is transposed). Shuffles, not 256 scalar moves.
#define NR_SWAP_LO(H) \
  NR_SHUF(0, H), NR_SHUF(1, H), NR_SHUF(2, H), NR_SHUF(3, H), NR_SHUF(4, H), NR_SHUF(5, H), NR_SHUF(6, H), \
      NR_SHUF(7, H), NR_SHUF(8, H), NR_SHUF(9, H), NR_SHUF(10, H), NR_SHUF(11, H), NR_SHUF(12, H), NR_SHUF(13, H), \
      NR_SHUF(14, H), NR_SHUF(15, H)
#define NR_SWAP_HI(H) \
  NR_SHUF_HI(0, H), NR_SHUF_HI(1, H), NR_SHUF_HI(2, H), NR_SHUF_HI(3, H), NR_SHUF_HI(4, H), NR_SHUF_HI(5, H), \
      NR_SHUF_HI(6, H), NR_SHUF_HI(7, H), NR_SHUF_HI(8, H), NR_SHUF_HI(9, H), NR_SHUF_HI(10, H), NR_SHUF_HI(11, H), \
      NR_SHUF_HI(12, H), NR_SHUF_HI(13, H), NR_SHUF_HI(14, H), NR_SHUF_HI(15, H)
// Lane k of the new row i: its own lane k, or row i + H's lane k − H; of the new row i + H: row
// i's lane k + H, or its own lane k (indices 16..31 name the second operand's lanes).
#define NR_SHUF(K, H) (((K) & (H)) ? 16 + (K) - (H) : (K))
#define NR_SHUF_HI(K, H) (((K) & (H)) ? 16 + (K) : (K) + (H))

template <int H>
NR_INLINE void transpose_stage(v16 (&r)[16]) {
  for (int i = 0; i < 16; ++i) {
    if (i & H) continue;
    const v16 lo = __builtin_shufflevector(r[i], r[i + H], NR_SWAP_LO(H));
    const v16 hi = __builtin_shufflevector(r[i], r[i + H], NR_SWAP_HI(H));
    r[i] = lo;
    r[i + H] = hi;
  }
}

// x [ldt, HD] (rows contiguous, ldt a multiple of 16) transposed into xt [HD, ldt].
template <int64_t HD>
NR_INLINE void transpose_rows(const float* x, int64_t ldt, float* xt) {
  for (int64_t j0 = 0; j0 < ldt; j0 += 16) {
    for (int64_t e0 = 0; e0 < HD; e0 += 16) {
      v16 r[16];
      for (int i = 0; i < 16; ++i) r[i] = load16(x + (j0 + i) * HD + e0);
      transpose_stage<8>(r);
      transpose_stage<4>(r);
      transpose_stage<2>(r);
      transpose_stage<1>(r);
      for (int i = 0; i < 16; ++i) store16(xt + (e0 + i) * ldt + j0, r[i]);
    }
  }
}

// One task's keys (rotated) and values into kr, vr [ldt, HD] (rows past T zero) and the keys
// transposed into kt [HD, ldt]. Rows lie a page or so apart in the fused qkv buffer: the next
// ones are asked for early.
template <int64_t HD>
NR_INLINE void task_keys_values(const CausalArgs& a, int64_t b, int64_t h, float* kr, float* vr, float* kt,
                                int64_t ldt) {
  const float* k = a.k + b * a.ks[0] + h * a.ks[2];
  const float* v = a.v + b * a.vs[0] + h * a.vs[2];
  for (int64_t j = 0; j < a.t_len; ++j) {
    for (int64_t c = 0; c < HD; c += 16) {
      __builtin_prefetch(k + (j + 4) * a.ks[1] + c);
      __builtin_prefetch(v + (j + 4) * a.vs[1] + c);
    }
    load_row<HD>(a, k + j * a.ks[1], b, j, false, kr + j * HD);
    std::memcpy(vr + j * HD, v + j * a.vs[1], HD * sizeof(float));
  }
  std::fill(kr + a.t_len * HD, kr + ldt * HD, 0.0f);
  std::fill(vr + a.t_len * HD, vr + ldt * HD, 0.0f);
  transpose_rows<HD>(kr, ldt, kt);
}

// The block's query rows (rotated) into qb [kBlock, HD]; rows past the end are zero.
template <int64_t HD>
NR_INLINE void block_queries(const CausalArgs& a, int64_t b, int64_t head, int64_t i0, int64_t rows, float* qb) {
  for (int64_t r = 0; r < rows; ++r) {
    load_row<HD>(a, a.q + b * a.qs[0] + (i0 + r) * a.qs[1] + head * a.qs[2], b, i0 + r, false, qb + r * HD);
  }
  std::fill(qb + rows * HD, qb + kBlock * HD, 0.0f);
}

template <int64_t HD>
NR_INLINE void causal_forward(const CausalArgs& a, float* out, float* lse, int64_t begin, int64_t end) {
  constexpr int R = kTile<HD>, C = HD / 16;
  const int64_t T = a.t_len, ldt = round_up16(T), group = a.heads / a.kv_heads;
  std::vector<float> kr(ldt * HD), vr(ldt * HD), kt(HD * ldt), s(kBlock * ldt), qb(kBlock * HD);
  float inv_total[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads;
    task_keys_values<HD>(a, b, h, kr.data(), vr.data(), kt.data(), ldt);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;
      for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - i0), n = i0 + rows, npad = round_up16(n);
        if (const NextBlock nx = next_block(a, task, g, i0, end); nx.exists) {
          prefetch_rows<HD>(a.q + nx.b * a.qs[0] + nx.i0 * a.qs[1] + nx.head * a.qs[2], a.qs[1], nx.rows, false);
          prefetch_rows<HD>(out + ((nx.b * T + nx.i0) * a.heads + nx.head) * HD, a.heads * HD, nx.rows, true);
        }
        block_queries<HD>(a, b, head, i0, rows, qb.data());
        block_scores<HD, kBlock>(qb.data(), kt.data(), ldt, npad, s.data(), ldt);
        for (int64_t r = 0; r < kBlock; ++r) {
          const int64_t i = i0 + r, visible = r < rows ? i + 1 : 0;
          float* p = s.data() + r * ldt;
          if (visible > 0) {
            float top;
            const float total = exp_shifted(p, visible, a.scale, top);
            lse[(b * a.heads + head) * T + i] = top + std::log(total);
            inv_total[r] = 1.0f / total;
          }
          std::fill(p + visible, p + npad, 0.0f);
        }
        // out rows = P·V, a tile of rows at a time, over the keys the tile's last row sees.
        for (int64_t t0 = 0; t0 < rows; t0 += R) {
          v16 acc[R][C];
          tile_product<HD>(s.data() + t0 * ldt, ldt, 1, std::min(n, i0 + t0 + R), vr.data(), HD, acc);
          for (int64_t t = 0; t < R && t0 + t < rows; ++t) {
            float* o = out + ((b * T + i0 + t0 + t) * a.heads + head) * HD;
            for (int c = 0; c < C; ++c) store16(o + 16 * c, acc[t][c] * inv_total[t0 + t]);
          }
        }
      }
    }
  }
}

template <int64_t HD>
NR_INLINE void causal_backward(const CausalArgs& a, const float* out, const float* lse, const float* dout,
                               const CausalGrads& d, int64_t begin, int64_t end) {
  constexpr int R = kTile<HD>, C = HD / 16;
  const int64_t T = a.t_len, ldt = round_up16(T), group = a.heads / a.kv_heads, H = a.heads, KV = a.kv_heads;
  std::vector<float> kr(ldt * HD), vr(ldt * HD), kt(HD * ldt), vt(HD * ldt), p(kBlock * ldt), ds(kBlock * ldt),
      qb(kBlock * HD), dob(kBlock * HD), dk_acc(ldt * HD), dv_acc(ldt * HD), row(HD);
  float dsum[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / KV, h = task % KV;
    task_keys_values<HD>(a, b, h, kr.data(), vr.data(), kt.data(), ldt);
    transpose_rows<HD>(vr.data(), ldt, vt.data());
    std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
    std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;
      for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - i0), n = i0 + rows, npad = round_up16(n);
        if (const NextBlock nx = next_block(a, task, g, i0, end); nx.exists) {
          const int64_t at = ((nx.b * T + nx.i0) * H + nx.head) * HD;
          prefetch_rows<HD>(a.q + nx.b * a.qs[0] + nx.i0 * a.qs[1] + nx.head * a.qs[2], a.qs[1], nx.rows, false);
          prefetch_rows<HD>(out + at, H * HD, nx.rows, false);
          prefetch_rows<HD>(dout + at, H * HD, nx.rows, false);
          prefetch_rows<HD>(d.dq + nx.b * d.qs[0] + nx.i0 * d.qs[1] + nx.head * d.qs[2], d.qs[1], nx.rows, true);
        }
        block_queries<HD>(a, b, head, i0, rows, qb.data());
        // The block's output gradients, and D_i = dO_i·O_i (softmax's backward needs it per row).
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t at = ((b * T + i0 + r) * H + head) * HD;
          std::memcpy(dob.data() + r * HD, dout + at, HD * sizeof(float));
          dsum[r] = dot<HD>(dob.data() + r * HD, out + at);
        }
        std::fill(dob.begin() + rows * HD, dob.end(), 0.0f);
        block_scores<HD, kBlock>(qb.data(), kt.data(), ldt, npad, p.data(), ldt);
        block_scores<HD, kBlock>(dob.data(), vt.data(), ldt, npad, ds.data(), ldt);
        for (int64_t r = 0; r < kBlock; ++r) {
          const int64_t visible = r < rows ? i0 + r + 1 : 0;
          float* pr = p.data() + r * ldt;
          float* dsr = ds.data() + r * ldt;  // dP becomes dS in place
          if (visible > 0) {
            const float l = lse[(b * H + head) * T + i0 + r], dsum_r = dsum[r];
#pragma omp simd
            for (int64_t j = 0; j < visible; ++j) {
              pr[j] = exp_approx(pr[j] * a.scale - l);
              dsr[j] = pr[j] * (dsr[j] - dsum_r);
            }
          }
          std::fill(pr + visible, pr + npad, 0.0f);
          std::fill(dsr + visible, dsr + npad, 0.0f);
        }
        // dQ = scale·dS·K in rotated space, then back through the rotation into its place.
        for (int64_t t0 = 0; t0 < rows; t0 += R) {
          v16 acc[R][C];
          tile_product<HD>(ds.data() + t0 * ldt, ldt, 1, std::min(n, i0 + t0 + R), kr.data(), HD, acc);
          for (int64_t t = 0; t < R && t0 + t < rows; ++t) {
            const int64_t i = i0 + t0 + t;
            for (int c = 0; c < C; ++c) store16(row.data() + 16 * c, acc[t][c] * a.scale);
            load_row<HD>(a, row.data(), b, i, true, d.dq + b * d.qs[0] + i * d.qs[1] + head * d.qs[2]);
          }
        }
        // dV += Pᵀ·dO and dK += scale·dSᵀ·Q over the keys the block sees, a tile of keys at a time.
        for (int64_t j0 = 0; j0 < n; j0 += R) {
          v16 gv[R][C], gk[R][C];
          tile_product<HD>(p.data() + j0, 1, ldt, kBlock, dob.data(), HD, gv);
          tile_product<HD>(ds.data() + j0, 1, ldt, kBlock, qb.data(), HD, gk);
          for (int t = 0; t < R; ++t) {
            float *dv = dv_acc.data() + (j0 + t) * HD, *dk = dk_acc.data() + (j0 + t) * HD;
            for (int c = 0; c < C; ++c) {
              store16(dv + 16 * c, load16(dv + 16 * c) + gv[t][c]);
              store16(dk + 16 * c, load16(dk + 16 * c) + gk[t][c] * a.scale);
            }
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
  // Tables with a row per (batch row, position), or with a row per position shared by every batch
  // row (fresh sequences all start at 0: 16× less table to read at batch 16).
  const int64_t bt = q.size(0) * q.size(1);
  TORCH_CHECK(!cos.defined() || (cos.is_contiguous() && ssin.is_contiguous() && ssin.sizes() == cos.sizes() &&
                                 (cos.size(0) == bt || cos.size(0) == q.size(1)) && cos.size(1) == hd),
              "causal_attention: rotary tables ", cos.sizes(), " do not fit ", q.sizes());
  CausalArgs a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), {}, {}, {},
               cos.defined() ? cos.data_ptr<float>() : nullptr, cos.defined() ? ssin.data_ptr<float>() : nullptr,
               cos.defined() && cos.size(0) == bt ? q.size(1) : 0, q.size(1), q.size(2), k.size(2),
               1.0f / std::sqrt(static_cast<float>(hd))};
  strides3(q, a.qs);
  strides3(k, a.ks);
  strides3(v, a.vs);
  return a;
}

// Gradient buffers (views [B, T, heads or kv_heads, hd], contiguous last axis) as CausalGrads.
CausalGrads causal_grads(const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv) {
  CausalGrads d{dq.data_ptr<float>(), dk.data_ptr<float>(), dv.data_ptr<float>(), {}, {}, {}};
  strides3(dq, d.qs);
  strides3(dk, d.ks);
  strides3(dv, d.vs);
  return d;
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
    causal_attention_backward(causal_args(q, k, v, {}, {}), q.size(0), q.size(3), saved[3], saved[4],
                              grads[0].contiguous(), causal_grads(dq, dk, dv));
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
    causal_attention_backward(causal_args(parts[0], parts[1], parts[2], saved[1], saved[2]), qkv.size(0),
                              qkv.size(3), saved[3], saved[4], grads[0].contiguous(),
                              causal_grads(dparts[0], dparts[1], dparts[2]));
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace
}  // namespace nr

using namespace nr;

extern "C" {

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

}  // extern "C"
