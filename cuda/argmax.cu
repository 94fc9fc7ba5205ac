// argmax.cu: greedy sampling on the device.
//
// One CTA per row reads the whole row (50k floats for the BASED vocab: ~37 us on an H100,
// 2% of a batch-1 decode step). When there are few rows the row is split over several CTAs
// instead; each folds its slice's best (value, index) into a 64-bit key ordered like
// better() below and atomicMax'es it into a per-row workspace word, and the last CTA of the
// row (a counter) writes the index and zeroes the key and counter for the next launch, so
// the launch needs no memset and replays from CUDA graphs.
#include <algorithm>
#include <cfloat>
#include <climits>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kTargetCtas = 256;      // about two per SM
constexpr int kMaxSplits = 32;
constexpr int64_t kMinSlice = 2048;   // elements per CTA, at least

/// (v, i) beats (bv, bi): larger value, lower index on ties; NaN counts as the largest
/// value (as in torch.argmax / numpy.argmax).
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}

/// A key whose unsigned order is better()'s: the value's bits made monotonic (NaN above
/// everything, -0 as +0), then the complemented index (lower index, larger key). Never 0.
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
  unsigned u = v == 0.f ? 0u : __float_as_uint(v);
  u = isnan(v) ? 0xffffffffu : (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(u) << 32) | (0xffffffffu - static_cast<unsigned>(i));
}

/// The best (value, index) of row[lo, hi), left in thread 0 (lo a multiple of 4 with VEC4).
template <bool VEC4>
__device__ void block_argmax(const float* __restrict__ row, int lo, int hi, float& bv, int& bi) {
  __shared__ float s_val[32];
  __shared__ int s_idx[32];
  bv = -INFINITY;
  bi = INT_MAX;
  if (VEC4) {
    const float4* r4 = reinterpret_cast<const float4*>(row + lo);
    const int n4 = (hi - lo) / 4;
    for (int j = threadIdx.x; j < n4; j += blockDim.x) {
      const float4 v = r4[j];
      const int i = lo + 4 * j;
      if (better(v.x, i, bv, bi)) bv = v.x, bi = i;
      if (better(v.y, i + 1, bv, bi)) bv = v.y, bi = i + 1;
      if (better(v.z, i + 2, bv, bi)) bv = v.z, bi = i + 2;
      if (better(v.w, i + 3, bv, bi)) bv = v.w, bi = i + 3;
    }
    for (int j = lo + 4 * n4 + threadIdx.x; j < hi; j += blockDim.x)  // (hi - lo) % 4 tail
      if (better(row[j], j, bv, bi)) bv = row[j], bi = j;
  } else {
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x)
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
  }
}

// computes: out[row] = argmax_j logits[row, j], lowest j on ties (SPEC 4: greedy top_k == 1).
template <bool VEC4>
__global__ void argmax_kernel(const float* __restrict__ logits, int64_t vocab, int64_t ld,
                              int32_t* __restrict__ out) {
  float bv;
  int bi;
  block_argmax<VEC4>(logits + int64_t(blockIdx.x) * ld, 0, int(vocab), bv, bi);
  if (threadIdx.x == 0) out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
}

// The same over gridDim.y slices of `slice` elements per row (see the top of the file);
// keys[row] and counts[row] are zero on entry and left zero.
template <bool VEC4>
__global__ void argmax_split_kernel(const float* __restrict__ logits, int64_t vocab, int64_t ld, int slice,
                                    int32_t* __restrict__ out, unsigned long long* keys, unsigned* counts) {
  const int row = blockIdx.x;
  const int lo = int(blockIdx.y) * slice;
  const int hi = int(min(int64_t(lo) + slice, vocab));
  float bv;
  int bi;
  block_argmax<VEC4>(logits + int64_t(row) * ld, lo, hi, bv, bi);
  if (threadIdx.x != 0) return;
  atomicMax(&keys[row], argmax_key(bv, bi));
  __threadfence();  // the key before the count: the last CTA must see every slice's key
  if (atomicAdd(&counts[row], 1u) != gridDim.y - 1) return;
  __threadfence();
  const unsigned long long k = atomicExch(&keys[row], 0ull);
  counts[row] = 0;
  out[row] = int32_t(0xffffffffu - unsigned(k & 0xffffffffull));
}

}  // namespace

cudaError_t launch_argmax(const ops::ArgmaxParams& p, cudaStream_t stream, void* workspace,
                          std::size_t workspace_bytes) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.vocab <= 0 || p.vocab > INT_MAX - 4) return cudaErrorInvalidValue;
  const int64_t ld = p.row_stride();
  if (ld < p.vocab) return cudaErrorInvalidValue;
  const bool vec4 = ld % 4 == 0 && aligned_to(p.logits, 16);  // every row 16-byte aligned
  int64_t splits = std::min<int64_t>(kMaxSplits, std::max<int64_t>(1, kTargetCtas / p.rows));
  splits = std::min<int64_t>(splits, (p.vocab + kMinSlice - 1) / kMinSlice);
  if (splits > 1 && workspace && workspace_bytes >= argmax_workspace_bytes(p.rows) && p.rows <= 65535) {
    // Slices of a multiple of 4 elements keep each slice's float4 loads aligned.
    const int64_t slice = ((p.vocab + splits - 1) / splits + 3) / 4 * 4;
    const dim3 grid(unsigned(p.rows), unsigned((p.vocab + slice - 1) / slice));
    auto* keys = static_cast<unsigned long long*>(workspace);
    auto* counts = reinterpret_cast<unsigned*>(keys + p.rows);
    if (vec4)
      argmax_split_kernel<true><<<grid, kThreads, 0, stream>>>(p.logits, p.vocab, ld, int(slice), p.out, keys, counts);
    else
      argmax_split_kernel<false><<<grid, kThreads, 0, stream>>>(p.logits, p.vocab, ld, int(slice), p.out, keys, counts);
    return cudaGetLastError();
  }
  if (vec4)
    argmax_kernel<true><<<unsigned(p.rows), kThreads, 0, stream>>>(p.logits, p.vocab, ld, p.out);
  else
    argmax_kernel<false><<<unsigned(p.rows), kThreads, 0, stream>>>(p.logits, p.vocab, ld, p.out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace based_core
