// linear_attention_common.cuh: the Taylor feature map phi shared by the LA kernels (both state
// layouts of ops.h), and the exact 160-feature symmetric form the tensor-core prefill computes in.
#pragma once

#include "common.cuh"

namespace based_core {
namespace cuda {

/// Feature row r as the product of two entries of an (f+1)-vector x whose entry f is 1:
/// phi_q(r) = cq * x[i] * x[j] for the query, phi_k(r) = ck * x[i] * x[j] for the key. Covers
/// both state layouts of ops.h (LinearAttentionShape): the full TaylorExp rows (cq = ck) and the
/// symmetric rows (key side unscaled, every scale on the query side).
struct PhiRow {
  int i, j;
  float cq, ck;
};

/// c1 = f^(-1/4), c2 = 1 / (sqrt2 sqrt f); r < state_rows().
__host__ __device__ inline PhiRow phi_row(int r, int f, bool symmetric, float c1, float c2) {
  if (!symmetric) {
    if (r == 0) return {f, f, 1.f, 1.f};
    if (r <= f) return {r - 1, f, c1, c1};
    const int q = r - 1 - f;
    return {q / f, q % f, c2, c2};
  }
  const int P = f * (f + 1) / 2;
  if (r < P) {  // upper-triangle pair (i, j), row i holding f - i pairs
    int i = 0, start = 0;
    while (r >= start + (f - i)) start += f - i, ++i;
    const int j = i + (r - start);
    return {i, j, (i == j ? 0.5f : 1.f) / float(f), 1.f};  // c2^2 = 1/(2f) once per mirror term
  }
  if (r < P + f) return {r - P, f, 1.f / sqrtf(float(f)), 1.f};  // c1^2
  return {f, f, 1.f, 1.f};
}

// ---- symmetric form for f = 16 (SPEC 2.1 "Optional compression", exact) ----
// Feature r of the 160-feature form:
//   r <  136: the pair (i <= j) (upper triangle, row-major): key side k_i k_j (unscaled),
//             query side q_i q_j / 16 for i < j (both mirror terms), q_i^2 / 32 for i = j;
//   136 + i : key side k_i, query side q_i / 4;
//   152     : key side 1, query side 1;
//   153..159: zero padding.
// The key-side sums are SPEC's A2 = sum (k (x) k) v^T, A1 = sum k v^T, A0 = sum v (and c2, c1, c0
// for z): S row 17 + 16i + j = S row 17 + 16j + i = A2[ij] / (4 sqrt2), row 1 + i = A1[i] / 2,
// row 0 = A0.
namespace lasym {
constexpr int kFeat = 160, kPairs = 136, kLin = 136, kConst = 152, kUsed = 153;
constexpr int kF = 16, kD = 273;
constexpr float kPairToS = 0.17677669529663687f;  // 1 / (4 sqrt2)
constexpr float kSToPair = 5.656854249492381f;    // 4 sqrt2

/// First pair index of row i of the upper triangle.
__host__ __device__ constexpr int pair_row_start(int i) { return i * kF - i * (i - 1) / 2; }
__host__ __device__ constexpr int pair_i(int r) {
  int i = 0;
  while (i + 1 < kF && pair_row_start(i + 1) <= r) ++i;
  return i;
}
__host__ __device__ constexpr int pair_j(int r) { return pair_i(r) + (r - pair_row_start(pair_i(r))); }

/// Where feature r (< kFeat) of this form lives in a state of either layout (ops.h): on load
/// the feature is (S[x] + S[y]) * w_in, on store S[x] = S[y] = feature * w_out (w_out = 0: padding,
/// not stored). A 153-row symmetric state holds rows 0..152 of this form as they are; a 273-row
/// full one holds each pair in two mirror rows (averaged on load), scaled. Returns
/// (x, y, bits of w_in, bits of w_out).
__device__ __forceinline__ int4 state_rows_of(int r, bool symmetric) {
  int x = 0, y = 0;
  float w_in = 0.f, w_out = 0.f;
  if (symmetric) {
    if (r < kUsed) x = y = r, w_in = 0.5f, w_out = 1.f;
  } else if (r < kPairs) {
    const int i = pair_i(r), j = pair_j(r);
    x = 1 + kF + kF * i + j, y = 1 + kF + kF * j + i, w_in = 0.5f * kSToPair, w_out = kPairToS;
  } else if (r < kConst) {
    x = y = 1 + r - kLin, w_in = 1.f, w_out = 0.5f;
  } else if (r == kConst) {
    w_in = 0.5f, w_out = 1.f;
  }
  return make_int4(x, y, __float_as_int(w_in), __float_as_int(w_out));
}

/// The value of feature row r for column `col` of the state `base` (row stride ld).
__device__ __forceinline__ float load_state(const float* base, int64_t ld, int r, int col, bool symmetric) {
  if (r >= kUsed) return 0.f;
  const int4 rw = state_rows_of(r, symmetric);
  return (base[int64_t(rw.x) * ld + col] + base[int64_t(rw.y) * ld + col]) * __int_as_float(rw.z);
}
}  // namespace lasym

}  // namespace cuda
}  // namespace based_core
