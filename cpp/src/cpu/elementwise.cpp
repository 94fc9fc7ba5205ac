// elementwise.cpp: the row-wise CPU ops: embedding, RMSNorm, SwiGLU, argmax
// (and the slot check shared by the decode ops).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_ops.h"

namespace based_core {
namespace cpu {

namespace detail {

void check_decode_slots(const int32_t* slots, int64_t n, const char* op) {
  require_ptr(slots, n > 0, op, "slots");
  std::vector<int32_t> sorted(slots, slots + n);
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) {
    require(sorted[i] >= 0, op, "slots[] must be >= 0, got " + std::to_string(sorted[i]));
    require(i == 0 || sorted[i] != sorted[i - 1], op,
            "slots[] must be distinct, slot " + std::to_string(sorted[i]) + " appears twice");
  }
}

}  // namespace detail

// computes: out[t, :] = table[ids[t], :].
void embedding(const ops::EmbeddingParams& p) {
  const char* op = "embedding";
  detail::require_nonneg(p.n_tokens, op, "n_tokens");
  detail::require_nonneg(p.vocab, op, "vocab");
  detail::require_nonneg(p.dim, op, "dim");
  detail::require_f32(p.dtype, op, "dtype");
  const bool work = p.n_tokens > 0 && p.dim > 0;
  detail::require_ptr(p.ids, p.n_tokens > 0, op, "ids");
  detail::require_ptr(p.table, work, op, "table");
  detail::require_ptr(p.out, work, op, "out");
  // The caller checks the ids; re-checking here is one compare per token and
  // turns a caller bug into an exception instead of an out-of-bounds read.
  for (int64_t t = 0; t < p.n_tokens; ++t)
    if (p.ids[t] < 0 || p.ids[t] >= p.vocab)
      throw OutOfRange("embedding: ids[" + std::to_string(t) + "] = " + std::to_string(p.ids[t]) +
                       " is outside the vocabulary [0, " + std::to_string(p.vocab) + ")");
  if (!work) return;
  const float* table = static_cast<const float*>(p.table);
  for (int64_t t = 0; t < p.n_tokens; ++t)
    std::memcpy(p.out + t * p.dim, table + int64_t(p.ids[t]) * p.dim, sizeof(float) * p.dim);
}

// computes: y[i, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight, r = rows ? rows[i] : i.
void rmsnorm(const ops::RmsNormParams& p) {
  const char* op = "rmsnorm";
  detail::require_nonneg(p.n_rows, op, "n_rows");
  detail::require_nonneg(p.dim, op, "dim");
  detail::require_f32(p.dtype, op, "dtype");
  detail::require(p.dim > 0 || p.n_rows == 0, op, "dim must be > 0 when n_rows > 0");
  const bool work = p.n_rows > 0;
  detail::require_ptr(p.x, work, op, "x");
  detail::require_ptr(p.weight, work, op, "weight");
  detail::require_ptr(p.y, work, op, "y");
  if (p.rows)
    for (int64_t i = 0; i < p.n_rows; ++i)
      detail::require(p.rows[i] >= 0, op, "rows[" + std::to_string(i) + "] must be >= 0");
  if (!work) return;
  const float* w = static_cast<const float*>(p.weight);
  float* Y = static_cast<float*>(p.y);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (p.n_rows * p.dim > 32768)
#endif
  for (int64_t i = 0; i < p.n_rows; ++i) {
    const float* x = p.x + (p.rows ? int64_t(p.rows[i]) : i) * p.dim;
    double ss = 0;  // double: the mean of squares over d = 1792 loses nothing
    for (int64_t j = 0; j < p.dim; ++j) ss += double(x[j]) * x[j];
    const float r = float(1.0 / std::sqrt(ss / double(p.dim) + double(p.eps)));
    float* y = Y + i * p.dim;
    for (int64_t j = 0; j < p.dim; ++j) y[j] = (x[j] * r) * w[j];
  }
}

// computes: y[t, i] = u[t, i] * SiLU(u[t, n + i]), SiLU(g) = g / (1 + exp(-g)).
void swiglu(const ops::SwigluParams& p) {
  const char* op = "swiglu";
  detail::require_nonneg(p.n, op, "n");
  detail::require_nonneg(p.n_tokens, op, "n_tokens");
  detail::require_f32(p.dtype, op, "dtype");
  const bool work = p.n > 0 && p.n_tokens > 0;
  detail::require_ptr(p.u, work, op, "u");
  detail::require_ptr(p.y, work, op, "y");
  detail::require_ld(p.ld_u, 2 * p.n, work ? p.n_tokens : 0, op, "ld_u");
  detail::require_ld(p.ld_y, p.n, work ? p.n_tokens : 0, op, "ld_y");
  if (!work) return;
  const float* U = static_cast<const float*>(p.u);
  float* Y = static_cast<float*>(p.y);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (p.n_tokens * p.n > 32768)
#endif
  for (int64_t t = 0; t < p.n_tokens; ++t) {
    const float* u = U + t * p.ld_u;
    float* y = Y + t * p.ld_y;
    for (int64_t i = 0; i < p.n; ++i) {
      const float g = u[p.n + i];
      y[i] = u[i] * (g / (1.f + std::exp(-g)));
    }
  }
}

// computes: out[i] = the lowest j with logits[i, j] = max_j logits[i, :].
void argmax(const ops::ArgmaxParams& p) {
  const char* op = "argmax";
  detail::require_nonneg(p.rows, op, "rows");
  detail::require_nonneg(p.vocab, op, "vocab");
  detail::require(p.vocab > 0 || p.rows == 0, op, "vocab must be > 0 when rows > 0");
  detail::require(p.vocab <= INT32_MAX, op, "vocab must fit int32");
  detail::require_ptr(p.logits, p.rows > 0, op, "logits");
  detail::require_ptr(p.out, p.rows > 0, op, "out");
  detail::require(p.ld == 0 || p.ld >= p.vocab, op, "ld must be 0 or >= vocab");
  for (int64_t i = 0; i < p.rows; ++i) {
    const float* l = p.logits + i * p.row_stride();
    int64_t best = 0;
    // Strict '>' keeps the lowest index on ties (a NaN past index 0 never wins).
    for (int64_t j = 1; j < p.vocab; ++j)
      if (l[j] > l[best]) best = j;
    p.out[i] = int32_t(best);
  }
}

}  // namespace cpu
}  // namespace based_core
