// linear_attention_common.cuh: the Taylor feature map phi shared by the LA kernels.
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

}  // namespace cuda
}  // namespace based_core
