// linear_attention_common.cuh: the Taylor feature map phi shared by the LA kernels, and the
// exact 160-feature symmetric form the tensor-core prefill keeps its state in.
#pragma once

#include "common.cuh"

namespace based_core {
namespace cuda {

/// phi(x)[r] for the TaylorExp row order (SPEC 2.1, ops.h LA state layout):
///   r = 0: 1;  r = 1 + i: x_i / f^(1/4);  r = 1 + f + f*i + j: x_i x_j / (sqrt2 sqrt f).
/// `x` holds the f-vector in fp32; c1 = f^(-1/4), c2 = 1 / (sqrt2 sqrt f).
__device__ __forceinline__ float taylor_phi(const float* x, int r, int f, float c1, float c2) {
  if (r == 0) return 1.f;
  if (r <= f) return x[r - 1] * c1;
  const int q = r - 1 - f;
  const int i = q / f, j = q - i * f;
  return x[i] * x[j] * c2;
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

/// The value of symmetric feature row r for column `col` of a 273-row state `base` (row stride
/// ld): the exact inverse of store_state.
__device__ __forceinline__ float load_state(const float* base, int64_t ld, int r, int col) {
  if (r < kPairs) {
    const int i = pair_i(r), j = pair_j(r);
    if (i == j) return base[int64_t(1 + kF + kF * i + j) * ld + col] * kSToPair;
    const float a = base[int64_t(1 + kF + kF * i + j) * ld + col];
    const float b = base[int64_t(1 + kF + kF * j + i) * ld + col];
    return (a + b) * (0.5f * kSToPair);
  }
  if (r < kConst) return base[int64_t(1 + r - kLin) * ld + col] * 2.f;
  if (r == kConst) return base[col];
  return 0.f;
}

/// Writes symmetric feature row r (value x) into the 273-row state (both mirror rows of a pair).
__device__ __forceinline__ void store_state(float* base, int64_t ld, int r, int col, float x) {
  if (r < kPairs) {
    const int i = pair_i(r), j = pair_j(r);
    const float s = x * kPairToS;
    base[int64_t(1 + kF + kF * i + j) * ld + col] = s;
    if (i != j) base[int64_t(1 + kF + kF * j + i) * ld + col] = s;
  } else if (r < kConst) {
    base[int64_t(1 + r - kLin) * ld + col] = x * 0.5f;
  } else if (r == kConst) {
    base[col] = x;
  }
}
}  // namespace lasym

}  // namespace cuda
}  // namespace based_core
