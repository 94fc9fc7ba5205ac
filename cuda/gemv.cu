// gemv.cu: the weight GEMMs of batch-1 decode steps (the backend routes m == 1 here;
// the kernel takes up to 8 rows), where cuBLASLt's split-K kernels plus reduce are
// slower (bench/gemm_decode.py). One warp per output column streams that row of W
// once with 16-byte loads and keeps all m dot products in registers. Launched with
// PDL: a CTA prefetches its weight row into L2 before waiting for the kernel that
// produces X.
#include <cstdint>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kWarps = 8;       // output columns per CTA
constexpr int kVec = 8;         // 16-byte loads of 16-bit elements
constexpr int kMaxRows = 8;

// computes: Y[m, n] = (accumulate ? Y[m, n] : 0) + sum_k X[m, k] W[n, k] + bias[n] (GemmParams),
// fp32 accumulation, for M <= kMaxRows rows; 16-bit X, W, bias; Y 16-bit (same) or fp32.
template <class T, class TO, int M>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(ops::GemmParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  pdl_trigger();
  const T* w = static_cast<const T*>(p.w) + (n < p.n ? n : 0) * p.k;
  // The weights are constant: start fetching this warp's row before the previous kernel ends.
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (int64_t(lane + 32 * j) * kVec < p.k) prefetch_l2(w + int64_t(lane + 32 * j) * kVec);
  pdl_wait();
  if (n >= p.n) return;
  const T* x = static_cast<const T*>(p.x);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.f;
#pragma unroll 4
  for (int64_t k = int64_t(lane) * kVec; k < p.k; k += 32 * kVec) {
    float wv[kVec];
    load_pack<T, kVec>(w + k, wv);
#pragma unroll
    for (int r = 0; r < M; ++r) {
      float xv[kVec];
      load_pack<T, kVec>(x + r * p.ldx + k, xv);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[r] = fmaf(wv[i], xv[i], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
    const float b = !p.bias ? 0.f : p.bias_f32 ? static_cast<const float*>(p.bias)[n]
                                               : to_f(static_cast<const T*>(p.bias)[n]);
    TO* y = static_cast<TO*>(p.y);
#pragma unroll
    for (int r = 0; r < M; ++r) {
      TO* dst = y + r * p.ldy + n;
      const float prev = p.accumulate ? to_f(*dst) : 0.f;
      *dst = from_f<TO>(prev + acc[r] + b);
    }
  }
}

template <class T, class TO>
cudaError_t launch_rows(const ops::GemmParams& p, cudaStream_t stream) {
  const unsigned grid = ceil_div(p.n, kWarps);
  switch (p.m) {
#define BC_GEMV_CASE(M) \
  case M: return launch_pdl(gemv_kernel<T, TO, M>, grid, kWarps * 32, 0, stream, p);
    BC_GEMV_CASE(1) BC_GEMV_CASE(2) BC_GEMV_CASE(3) BC_GEMV_CASE(4)
    BC_GEMV_CASE(5) BC_GEMV_CASE(6) BC_GEMV_CASE(7) BC_GEMV_CASE(8)
#undef BC_GEMV_CASE
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

bool gemv_applies(const ops::GemmParams& p) {
  const bool half = p.in_dtype == DType::BF16 || p.in_dtype == DType::F16;
  return half && p.m >= 1 && p.m <= kMaxRows && p.k % kVec == 0 && p.ldx % kVec == 0 &&
         aligned_to(p.x, 16) && aligned_to(p.w, 16) && p.n < (int64_t(1) << 31);
}

cudaError_t launch_gemv(const ops::GemmParams& p, cudaStream_t stream) {
  if (!gemv_applies(p)) return cudaErrorInvalidValue;
  return dispatch_act_dtype(p.in_dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    if (p.out_dtype == DType::F32) return launch_rows<T, float>(p, stream);
    return launch_rows<T, T>(p, stream);
  });
}

}  // namespace cuda
}  // namespace based_core
