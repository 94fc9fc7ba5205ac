// gemv.cu: the weight GEMMs of batch-1 decode steps (the backend routes m == 1 here;
// the kernel takes up to 8 rows), where cuBLASLt's split-K kernels plus reduce are
// slower (bench/gemm_decode.py). One warp per output column streams that row of W
// once with 16-byte loads and keeps all m dot products in registers. Launched with
// PDL: for one row and k <= 4096 every lane loads all its chunks of the weight row into
// registers before waiting for the kernel that produces X, so the row is in flight while
// that kernel drains and arrives in one round trip (the loop below takes one per four
// chunks: four for fc2's 3584-wide rows, in a grid of under two CTAs per SM); otherwise
// a CTA prefetches the start of its weight rows into L2 before the wait.
//
// Fused input ops (one row): in a batch-1 step the RMSNorm before a projection and the
// SwiGLU before fc2 are launches as long as their work (~2.5 us each, 3 per layer), so
// every CTA computes that op's output row itself into shared memory (a few KB, read from
// L2) and CTA 0 also writes it where the op would have, so results and buffers are those
// of the two separate ops.
#include <cstdint>
#include <cstdlib>
#include <cstring>

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
// NCH > 0: the weight row is held in NCH 16-byte chunks per lane (k <= 256 NCH); NCH == 0: the
// loop. Both sum a lane's chunks in the same order, so their results are identical.
template <class T, class TO, int M, XFrom FROM, int NCH>
__global__ void __launch_bounds__(kThreads) gemv_kernel(ops::GemmParams p, XStage st) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  const int lane = threadIdx.x & 31;
  int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  // NCH > 0: the grid may be smaller than the rows (one wave, see launch_chunks); each warp
  // takes rows n, n + stride, ... and loads the next row right after using the current one.
  const int64_t stride = int64_t(gridDim.x) * kWarps;
  pdl_trigger();
  const T* w = static_cast<const T*>(p.w) + (n < p.n ? n : 0) * p.k;
  // The weights are constant: start fetching this warp's row before the previous kernel ends.
  uint4 wr[NCH > 0 ? NCH : 1];
  auto load_row = [&](const T* row) {
#pragma unroll
    for (int c = 0; c < NCH; ++c) {
      const int64_t kk = int64_t(lane + 32 * c) * kVec;
      wr[c] = kk < p.k ? __ldg(reinterpret_cast<const uint4*>(row + kk)) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  if constexpr (NCH > 0) {
    load_row(w);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (int64_t(lane + 32 * j) * kVec < p.k) prefetch_l2(w + int64_t(lane + 32 * j) * kVec);
  }
  pdl_wait();
  const T* x = static_cast<const T*>(p.x);
  if constexpr (FROM != XFrom::Global) {
    T* xs = reinterpret_cast<T*>(gemv_smem);
    if constexpr (FROM == XFrom::RmsNorm) stage_rmsnorm<T>(st, p.k, xs);
    else stage_swiglu<T>(st, p.k, xs);
    __syncthreads();  // every thread of the CTA stages, including those past n
    x = xs;
  }
  for (; n < p.n; n += stride) {
    float acc[M];
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = 0.f;
    // acc[r] += this chunk of W (wv) . the same columns of X's row r
    auto chunk = [&](const float (&wv)[kVec], int64_t k) {
#pragma unroll
      for (int r = 0; r < M; ++r) {
        float xv[kVec];
        load_pack<T, kVec>(x + r * p.ldx + k, xv);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[r] = fmaf(wv[i], xv[i], acc[r]);
      }
    };
    if constexpr (NCH > 0) {
#pragma unroll
      for (int c = 0; c < NCH; ++c) {
        const int64_t k = int64_t(lane + 32 * c) * kVec;
        if (k < p.k) {
          Pack<T, kVec> pk;
          static_assert(sizeof(pk) == sizeof(uint4), "a chunk is 16 bytes");
          memcpy(&pk, &wr[c], sizeof(pk));
          float wv[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) wv[i] = to_f(pk.v[i]);
          chunk(wv, k);
        }
      }
      // the next row streams in while this one is reduced and stored
      if (n + stride < p.n) load_row(w + stride * p.k);
    } else {
#pragma unroll 4
      for (int64_t k = int64_t(lane) * kVec; k < p.k; k += 32 * kVec) {
        float wv[kVec];
        load_pack<T, kVec>(w + k, wv);
        chunk(wv, k);
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
    if constexpr (NCH == 0) break;  // the loop kernels' grid covers every row
    w += stride * p.k;
  }
}

// Chunks per lane to hold a row of k elements in registers: 8 (k <= 2048) or 16 (k <= 4096; 64
// registers); 0 = the loop, for longer rows, several rows, and with BASED_CORE_GEMV=loop (A/B).
int row_chunks(const ops::GemmParams& p) {
  const char* e = std::getenv("BASED_CORE_GEMV");
  if (p.m != 1 || (e && std::strcmp(e, "loop") == 0)) return 0;
  return p.k <= 8 * 32 * kVec ? 8 : p.k <= 16 * 32 * kVec ? 16 : 0;
}

/// Register-resident kernels: at most one wave of CTAs (as many as fit on the GPU at once).
/// With one CTA per 8 rows, fc1's 7168 rows (896 CTAs, 4 per SM at 64 registers) ran in two
/// waves: the second wave's CTAs started their weight loads, and redid the fused RMSNorm, only
/// as first-wave CTAs retired; with the row loop every warp has its next row in flight at once
/// and the fused op runs once per CTA. BASED_CORE_GEMV=grid keeps one CTA per 8 rows (A/B).
template <class K>
unsigned one_wave(K kernel, const ops::GemmParams& p, std::size_t smem) {
  const unsigned rows_grid = unsigned(ceil_div(p.n, kWarps));
  const char* e = std::getenv("BASED_CORE_GEMV");
  if (e && std::strcmp(e, "grid") == 0) return rows_grid;
  int dev = 0, sms = 0, per_sm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem) != cudaSuccess || per_sm <= 0) {
    cudaGetLastError();  // no occupancy figure: one CTA per 8 rows, as before
    return rows_grid;
  }
  const unsigned wave = unsigned(sms) * unsigned(per_sm);
  return rows_grid < wave ? rows_grid : wave;
}

/// gemv_kernel<T, TO, M, FROM, NCH> for the NCH that row_chunks picks.
template <class T, class TO, int M, XFrom FROM>
cudaError_t launch_chunks(const ops::GemmParams& p, const XStage& st, std::size_t smem, cudaStream_t stream) {
  const unsigned grid = ceil_div(p.n, kWarps);
  // fp32 T: instantiated by the dtype dispatch, never launched (gemv_applies); M > 1: the loop
  if constexpr (sizeof(T) != 2 || M != 1) {
    return launch_pdl(gemv_kernel<T, TO, M, FROM, 0>, grid, kThreads, smem, stream, p, st);
  } else {
    switch (row_chunks(p)) {
      case 8: {
        const auto k = gemv_kernel<T, TO, M, FROM, 8>;
        return launch_pdl(k, one_wave(k, p, smem), kThreads, smem, stream, p, st);
      }
      case 16: {
        const auto k = gemv_kernel<T, TO, M, FROM, 16>;
        return launch_pdl(k, one_wave(k, p, smem), kThreads, smem, stream, p, st);
      }
      default: return launch_pdl(gemv_kernel<T, TO, M, FROM, 0>, grid, kThreads, smem, stream, p, st);
    }
  }
}

template <class T, class TO>
cudaError_t launch_rows(const ops::GemmParams& p, cudaStream_t stream) {
  switch (p.m) {
#define BC_GEMV_CASE(M) \
  case M: return launch_chunks<T, TO, M, XFrom::Global>(p, XStage{}, 0, stream);
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
      const std::size_t smem = std::size_t(p.k) * sizeof(T);
      if (p.out_dtype == DType::F32) return launch_chunks<T, float, 1, FROM>(p, st, smem, stream);
      return launch_chunks<T, T, 1, FROM>(p, st, smem, stream);
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
