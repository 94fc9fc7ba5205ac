// gemm.cpp: the CPU GEMM, Y = X W^T (+ bias) (+ Y), fp32.
//
// W is [n, k] row-major (PyTorch Linear layout), so every output element is a
// contiguous dot product of an X row and a W row. The loops are blocked:
// 64x64 output tiles (parallelised with OpenMP, tile order shares X blocks
// between neighbours) and 256-long k panels (so the 64 X rows and 64 W rows
// of a panel, 2 x 64 KiB, stay in L2 while the tile is computed), inside
// which a 4x4 register micro-kernel walks k with 16 independent accumulators.
#include <algorithm>
#include <cstring>

#include "cpu/cpu_ops.h"

namespace based_core {
namespace cpu {
namespace {

constexpr int64_t kTileM = 64;
constexpr int64_t kTileN = 64;
constexpr int64_t kPanelK = 256;
constexpr int kMr = 4;
constexpr int kNr = 4;

// computes: acc[i][j] += sum_{kk < len} x[i][kk] * w[j][kk] for a 4x4 block.
// Rows/cols beyond the block edge are passed as duplicates of a valid row
// by the caller and their results are discarded, so there is one code path.
inline void micro_4x4(const float* const x[kMr], const float* const w[kNr], int64_t len,
                      float acc[kMr][kNr]) {
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
  float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
  // The simd reduction lets the compiler reorder the fp32 sums into vector
  // lanes (it may not do that on its own without -ffast-math).
#ifdef _OPENMP
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, \
                               a31, a32, a33)
#endif
  for (int64_t kk = 0; kk < len; ++kk) {
    const float xa = x0[kk], xb = x1[kk], xc = x2[kk], xd = x3[kk];
    const float wa = w0[kk], wb = w1[kk], wc = w2[kk], wd = w3[kk];
    a00 += xa * wa; a01 += xa * wb; a02 += xa * wc; a03 += xa * wd;
    a10 += xb * wa; a11 += xb * wb; a12 += xb * wc; a13 += xb * wd;
    a20 += xc * wa; a21 += xc * wb; a22 += xc * wc; a23 += xc * wd;
    a30 += xd * wa; a31 += xd * wb; a32 += xd * wc; a33 += xd * wd;
  }
  acc[0][0] += a00; acc[0][1] += a01; acc[0][2] += a02; acc[0][3] += a03;
  acc[1][0] += a10; acc[1][1] += a11; acc[1][2] += a12; acc[1][3] += a13;
  acc[2][0] += a20; acc[2][1] += a21; acc[2][2] += a22; acc[2][3] += a23;
  acc[3][0] += a30; acc[3][1] += a31; acc[3][2] += a32; acc[3][3] += a33;
}

// computes: one output tile Y[m0:m0+mt, n0:n0+nt] of the GEMM, k panel by k panel.
void gemm_tile(const ops::GemmParams& p, int64_t m0, int64_t mt, int64_t n0, int64_t nt) {
  const float* X = static_cast<const float*>(p.x);
  const float* W = static_cast<const float*>(p.w);
  float tile[kTileM][kTileN];
  for (int64_t i = 0; i < mt; ++i)
    for (int64_t j = 0; j < nt; ++j) tile[i][j] = 0.f;

  for (int64_t k0 = 0; k0 < p.k; k0 += kPanelK) {
    const int64_t len = std::min(kPanelK, p.k - k0);
    for (int64_t i0 = 0; i0 < mt; i0 += kMr) {
      const float* xr[kMr];
      for (int r = 0; r < kMr; ++r)  // rows past the edge repeat the block's first row
        xr[r] = X + (m0 + i0 + (i0 + r < mt ? r : 0)) * p.ldx + k0;
      for (int64_t j0 = 0; j0 < nt; j0 += kNr) {
        const float* wr[kNr];
        for (int c = 0; c < kNr; ++c) wr[c] = W + (n0 + j0 + (j0 + c < nt ? c : 0)) * p.k + k0;
        float acc[kMr][kNr] = {};
        micro_4x4(xr, wr, len, acc);
        for (int r = 0; r < kMr && i0 + r < mt; ++r)
          for (int c = 0; c < kNr && j0 + c < nt; ++c) tile[i0 + r][j0 + c] += acc[r][c];
      }
    }
  }

  const float* bias = static_cast<const float*>(p.bias);
  float* Y = static_cast<float*>(p.y);
  for (int64_t i = 0; i < mt; ++i) {
    float* yrow = Y + (m0 + i) * p.ldy + n0;
    for (int64_t j = 0; j < nt; ++j) {
      float v = tile[i][j];
      if (bias) v += bias[n0 + j];
      yrow[j] = p.accumulate ? yrow[j] + v : v;
    }
  }
}

}  // namespace

// computes: Y[m, n] = (accumulate ? Y[m, n] : 0) + sum_k X[m, k] W[n, k] + (bias ? bias[n] : 0).
void gemm(const ops::GemmParams& p) {
  const char* op = "gemm";
  detail::require_nonneg(p.m, op, "m");
  detail::require_nonneg(p.n, op, "n");
  detail::require_nonneg(p.k, op, "k");
  detail::require_f32(p.in_dtype, op, "in_dtype");
  detail::require_f32(p.out_dtype, op, "out_dtype");
  const bool work = p.m > 0 && p.n > 0;
  detail::require_ptr(p.y, work, op, "y");
  detail::require_ptr(p.x, work && p.k > 0, op, "x");
  detail::require_ptr(p.w, work && p.k > 0, op, "w");
  detail::require_ld(p.ldx, p.k, work ? p.m : 0, op, "ldx");
  detail::require_ld(p.ldy, p.n, work ? p.m : 0, op, "ldy");
  if (!work) return;

  const int64_t tiles_m = (p.m + kTileM - 1) / kTileM;
  const int64_t tiles_n = (p.n + kTileN - 1) / kTileN;
  const int64_t tiles = tiles_m * tiles_n;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t m0 = (t / tiles_n) * kTileM, n0 = (t % tiles_n) * kTileN;
    gemm_tile(p, m0, std::min(kTileM, p.m - m0), n0, std::min(kTileN, p.n - n0));
  }
}

}  // namespace cpu
}  // namespace based_core
