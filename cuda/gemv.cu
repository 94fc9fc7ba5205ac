// gemv.cu: the weight GEMMs of batch-1 decode steps (the backend routes m == 1 here;
// the kernel takes up to 8 rows), where cuBLASLt's split-K kernels plus reduce are
// slower (bench/gemm_decode.py). One warp per output column streams that row of W
// once with 16-byte loads and keeps all m dot products in registers. Launched with
// PDL: a CTA prefetches its weight row into L2 before waiting for the kernel that
// produces X.
//
// Fused input ops (one row): in a batch-1 step the RMSNorm before a projection and the
// SwiGLU before fc2 are launches as long as their work (~2.5 us each, 3 per layer), so
// every CTA computes that op's output row itself into shared memory (a few KB, read from
// L2) and CTA 0 also writes it where the op would have, so results and buffers are those
// of the two separate ops.
#include <cstdint>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kWarps = 8;       // output columns per CTA
constexpr int kThreads = kWarps * 32;
constexpr int kVec = 8;         // 16-byte loads of 16-bit elements
constexpr int kMaxRows = 8;
constexpr int64_t kMaxFusedK = 16384;  // X staged in shared memory: <= 32 KB of 16-bit

enum class XFrom { Global, RmsNorm, Swiglu };

/// What the fused variants compute X from (unused for XFrom::Global).
struct XStage {
  const float* norm_x = nullptr;     // RmsNorm: fp32 residual rows
  const int32_t* norm_rows = nullptr;  // optional row gather (row norm_rows[0])
  const void* norm_w = nullptr;      // [k]
  float eps = 0.f;
  const void* u = nullptr;           // Swiglu: [2k] (value, then gate)
  void* x_out = nullptr;             // the op's own output row, written by CTA 0
};

// X = rmsnorm(row) into xs: the arithmetic and reduction order of rmsnorm_kernel<T, 4> with
// the same 256 threads (elementwise.cu), so the fused and separate ops agree.
template <class T>
__device__ void stage_rmsnorm(const XStage& st, int64_t dim, T* xs) {
  __shared__ float scratch[33];
  const float* src = st.norm_x + (st.norm_rows ? int64_t(st.norm_rows[0]) : 0) * dim;
  float ss = 0.f;
  for (int64_t d = int64_t(threadIdx.x) * 4; d < dim; d += int64_t(kThreads) * 4) {
#pragma unroll
    for (int k = 0; k < 4; ++k) ss += src[d + k] * src[d + k];
  }
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / float(dim) + st.eps);
  const T* w = static_cast<const T*>(st.norm_w);
  for (int64_t d = int64_t(threadIdx.x) * 4; d < dim; d += int64_t(kThreads) * 4) {
    float wv[4], o[4];
    load_pack<T, 4>(w + d, wv);
#pragma unroll
    for (int k = 0; k < 4; ++k) o[k] = src[d + k] * inv * wv[k];
    store_pack<T, 4>(xs + d, o);
    if (blockIdx.x == 0) store_pack<T, 4>(static_cast<T*>(st.x_out) + d, o);
  }
}

// X = u[:k] * SiLU(u[k:]) into xs (swiglu_kernel's arithmetic).
template <class T>
__device__ void stage_swiglu(const XStage& st, int64_t k, T* xs) {
  const T* u = static_cast<const T*>(st.u);
  for (int64_t i = int64_t(threadIdx.x) * kVec; i < k; i += int64_t(kThreads) * kVec) {
    float a[kVec], g[kVec], o[kVec];
    load_pack<T, kVec>(u + i, a);
    load_pack<T, kVec>(u + k + i, g);
#pragma unroll
    for (int j = 0; j < kVec; ++j) o[j] = a[j] * silu(g[j]);
    store_pack<T, kVec>(xs + i, o);
    if (blockIdx.x == 0) store_pack<T, kVec>(static_cast<T*>(st.x_out) + i, o);
  }
}

// computes: Y[m, n] = (accumulate ? Y[m, n] : 0) + sum_k X[m, k] W[n, k] + bias[n] (GemmParams),
// fp32 accumulation, for M <= kMaxRows rows; 16-bit X, W, bias; Y 16-bit (same) or fp32.
// With FROM != Global (M == 1), X is first made in shared memory from `st` (see above).
template <class T, class TO, int M, XFrom FROM>
__global__ void __launch_bounds__(kThreads) gemv_kernel(ops::GemmParams p, XStage st) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  pdl_trigger();
  const T* w = static_cast<const T*>(p.w) + (n < p.n ? n : 0) * p.k;
  // The weights are constant: start fetching this warp's row before the previous kernel ends.
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (int64_t(lane + 32 * j) * kVec < p.k) prefetch_l2(w + int64_t(lane + 32 * j) * kVec);
  pdl_wait();
  const T* x = static_cast<const T*>(p.x);
  if constexpr (FROM != XFrom::Global) {
    T* xs = reinterpret_cast<T*>(gemv_smem);
    if constexpr (FROM == XFrom::RmsNorm) stage_rmsnorm<T>(st, p.k, xs);
    else stage_swiglu<T>(st, p.k, xs);
    __syncthreads();  // every thread of the CTA stages, including those past n
    x = xs;
  }
  if (n >= p.n) return;
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
  case M: return launch_pdl(gemv_kernel<T, TO, M, XFrom::Global>, grid, kThreads, 0, stream, p, XStage{});
    BC_GEMV_CASE(1) BC_GEMV_CASE(2) BC_GEMV_CASE(3) BC_GEMV_CASE(4)
    BC_GEMV_CASE(5) BC_GEMV_CASE(6) BC_GEMV_CASE(7) BC_GEMV_CASE(8)
#undef BC_GEMV_CASE
    default: return cudaErrorInvalidValue;
  }
}

template <XFrom FROM>
cudaError_t launch_fused(const ops::GemmParams& p, const XStage& st, cudaStream_t stream) {
  return dispatch_act_dtype(p.in_dtype, [&](auto t) -> cudaError_t {
    using T = decltype(t);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;
    } else {
      const unsigned grid = ceil_div(p.n, kWarps);
      const std::size_t smem = std::size_t(p.k) * sizeof(T);
      if (p.out_dtype == DType::F32)
        return launch_pdl(gemv_kernel<T, float, 1, FROM>, grid, kThreads, smem, stream, p, st);
      return launch_pdl(gemv_kernel<T, T, 1, FROM>, grid, kThreads, smem, stream, p, st);
    }
  });
}

bool fused_gemv_applies(const ops::GemmParams& g, DType op_dtype, const void* op_out) {
  return g.m == 1 && g.x == op_out && op_dtype == g.in_dtype && g.k <= kMaxFusedK && g.k % kVec == 0 &&
         gemv_applies(g);
}

}  // namespace

bool gemv_rmsnorm_applies(const ops::RmsNormParams& n, const ops::GemmParams& g) {
  return n.n_rows == 1 && n.dim == g.k && aligned_to(n.weight, 16) && fused_gemv_applies(g, n.dtype, n.y);
}

cudaError_t launch_gemv_rmsnorm(const ops::RmsNormParams& n, const ops::GemmParams& g, cudaStream_t stream) {
  if (!gemv_rmsnorm_applies(n, g)) return cudaErrorInvalidValue;
  XStage st;
  st.norm_x = n.x, st.norm_rows = n.rows, st.norm_w = n.weight, st.eps = n.eps, st.x_out = n.y;
  return launch_fused<XFrom::RmsNorm>(g, st, stream);
}

bool gemv_swiglu_applies(const ops::SwigluParams& s, const ops::GemmParams& g) {
  return s.n_tokens == 1 && s.n == g.k && aligned_to(s.u, 16) && fused_gemv_applies(g, s.dtype, s.y);
}

cudaError_t launch_gemv_swiglu(const ops::SwigluParams& s, const ops::GemmParams& g, cudaStream_t stream) {
  if (!gemv_swiglu_applies(s, g)) return cudaErrorInvalidValue;
  XStage st;
  st.u = s.u, st.x_out = s.y;
  return launch_fused<XFrom::Swiglu>(g, st, stream);
}

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
