// argmax.cu: greedy sampling on the device.
#include <cfloat>
#include <climits>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 512;

/// (v, i) beats (bv, bi): larger value, lower index on ties; NaN counts as the largest
/// value (as in torch.argmax / numpy.argmax).
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}

// computes: out[row] = argmax_j logits[row, j], lowest j on ties (SPEC 4: greedy top_k == 1).
template <bool VEC4>
__global__ void argmax_kernel(const float* __restrict__ logits, int64_t vocab, int64_t ld,
                              int32_t* __restrict__ out) {
  __shared__ float s_val[32];
  __shared__ int s_idx[32];
  const float* row = logits + int64_t(blockIdx.x) * ld;
  float bv = -INFINITY;
  int bi = INT_MAX;
  if (VEC4) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = int(vocab / 4);
    for (int j = threadIdx.x; j < n4; j += blockDim.x) {
      const float4 v = r4[j];
      if (better(v.x, 4 * j, bv, bi)) bv = v.x, bi = 4 * j;
      if (better(v.y, 4 * j + 1, bv, bi)) bv = v.y, bi = 4 * j + 1;
      if (better(v.z, 4 * j + 2, bv, bi)) bv = v.z, bi = 4 * j + 2;
      if (better(v.w, 4 * j + 3, bv, bi)) bv = v.w, bi = 4 * j + 3;
    }
    for (int j = 4 * n4 + threadIdx.x; j < vocab; j += blockDim.x)  // vocab % 4 tail
      if (better(row[j], j, bv, bi)) bv = row[j], bi = j;
  } else {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
      if (better(row[j], j, bv, bi)) bv = row[j], bi = j;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_val[warp] = bv, s_idx[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    bv = lane < nw ? s_val[lane] : -INFINITY;
    bi = lane < nw ? s_idx[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
  }
}

}  // namespace

cudaError_t launch_argmax(const ops::ArgmaxParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.vocab <= 0 || p.vocab > INT_MAX - 4) return cudaErrorInvalidValue;
  const int64_t ld = p.row_stride();
  if (ld < p.vocab) return cudaErrorInvalidValue;
  const bool vec4 = ld % 4 == 0 && aligned_to(p.logits, 16);  // every row 16-byte aligned
  if (vec4)
    argmax_kernel<true><<<unsigned(p.rows), kThreads, 0, stream>>>(p.logits, p.vocab, ld, p.out);
  else
    argmax_kernel<false><<<unsigned(p.rows), kThreads, 0, stream>>>(p.logits, p.vocab, ld, p.out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace based_core
