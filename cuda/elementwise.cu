// elementwise.cu: embedding gather, RMSNorm (with optional row gather), SwiGLU, bias add.
#include "common.cuh"
#include "kernels.h"

#include <initializer_list>

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// computes: out[t, :] = float(table[ids[t], :])  (SPEC 1.1: r = E[ids]); VEC elements per access.
template <class T, int VEC>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table,
                                 float* __restrict__ out, int64_t dim) {
  const int64_t t = blockIdx.x;
  const T* src = table + int64_t(ids[t]) * dim;
  float* dst = out + t * dim;
  for (int64_t d = int64_t(threadIdx.x) * VEC; d < dim; d += int64_t(blockDim.x) * VEC) {
    float v[VEC];
    load_pack<T, VEC>(src + d, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[d + i] = v[i];
  }
}

// computes: y[i, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight, r = rows ? rows[i] : i
// (SPEC 2.5, reduction in fp32).
template <class T, int VEC>
__global__ void rmsnorm_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                               const T* __restrict__ weight, T* __restrict__ y, int64_t dim,
                               float eps) {
  __shared__ float scratch[33];
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x;
  const int64_t r = rows ? int64_t(rows[i]) : i;
  const float* src = x + r * dim;
  float ss = 0.f;
  for (int64_t d = int64_t(threadIdx.x) * VEC; d < dim; d += int64_t(blockDim.x) * VEC) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) ss += src[d + k] * src[d + k];
  }
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / float(dim) + eps);
  T* dst = y + i * dim;
  for (int64_t d = int64_t(threadIdx.x) * VEC; d < dim; d += int64_t(blockDim.x) * VEC) {
    float w[VEC], o[VEC];
    load_pack<T, VEC>(weight + d, w);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = src[d + k] * inv * w[k];
    store_pack<T, VEC>(dst + d, o);
  }
}

// computes: the same as rmsnorm_kernel, bit for bit (same chunks per thread, same order), for
// dim <= NC * VEC * kThreads: the weight chunks are loaded before pdl_wait (weights are never
// written while decoding, so they may stream while the previous kernel drains) and the row is
// read once into registers; the loop kernel reads the weight only after the reduction, one
// more dependent memory round trip per launch (~2.7 us launches of 64-row decode steps).
template <class T, int VEC, int NC>
__global__ void rmsnorm_reg_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                   const T* __restrict__ weight, T* __restrict__ y, int64_t dim,
                                   float eps) {
  __shared__ float scratch[33];
  pdl_trigger();
  float w[NC][VEC], v[NC][VEC];
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t d = (int64_t(c) * kThreads + threadIdx.x) * VEC;
    if (d < dim) load_pack<T, VEC>(weight + d, w[c]);
  }
  pdl_wait();
  const int64_t i = blockIdx.x;
  const int64_t r = rows ? int64_t(rows[i]) : i;
  const float* src = x + r * dim;
  float ss = 0.f;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t d = (int64_t(c) * kThreads + threadIdx.x) * VEC;
    if (d < dim) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[c][k] = src[d + k];
#pragma unroll
      for (int k = 0; k < VEC; ++k) ss += v[c][k] * v[c][k];
    }
  }
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / float(dim) + eps);
  T* dst = y + i * dim;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t d = (int64_t(c) * kThreads + threadIdx.x) * VEC;
    if (d < dim) {
      float o[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = v[c][k] * inv * w[c][k];
      store_pack<T, VEC>(dst + d, o);
    }
  }
}

// computes: y[t, i] = u[t, i] * SiLU(u[t, n + i])  (SPEC 2.4: value first, gate second).
template <class T, int VEC>
__global__ void swiglu_kernel(const T* __restrict__ u, int64_t ld_u, T* __restrict__ y,
                              int64_t ld_y, int64_t n) {
  pdl_trigger();
  pdl_wait();  // u is the fc1 GEMM's output
  const int64_t t = blockIdx.x;
  const int64_t i = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * VEC;
  if (i >= n) return;
  float a[VEC], g[VEC], o[VEC];
  load_pack<T, VEC>(u + t * ld_u + i, a);
  load_pack<T, VEC>(u + t * ld_u + n + i, g);
#pragma unroll
  for (int k = 0; k < VEC; ++k) o[k] = a[k] * silu(g[k]);
  store_pack<T, VEC>(y + t * ld_y + i, o);
}

// computes: y[m, n] += float(bias[n])  (GEMM bias when no cuBLASLt epilogue fits).
template <class T>
__global__ void add_bias_kernel(float* __restrict__ y, int64_t ldy, const T* __restrict__ bias,
                                int64_t n) {
  const int64_t row = blockIdx.x;
  for (int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; j < n;
       j += int64_t(gridDim.y) * blockDim.x)
    y[row * ldy + j] += to_f(bias[j]);
}

/// Largest of 8/4/2/1 elements (at most 16 bytes) that divides every extent and keeps
/// every pointer aligned.
template <class T>
int pick_vec(std::initializer_list<int64_t> extents, std::initializer_list<const void*> ptrs) {
  for (int v : {8, 4, 2}) {
    if (sizeof(T) * v > 16) continue;
    bool ok = true;
    for (int64_t e : extents) ok = ok && e % v == 0;
    for (const void* p : ptrs) ok = ok && aligned_to(p, sizeof(T) * v);
    if (ok) return v;
  }
  return 1;
}

}  // namespace

cudaError_t launch_embedding(const ops::EmbeddingParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.dim <= 0) return cudaSuccess;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* table = static_cast<const T*>(p.table);
    // fp32 output: keep VEC <= 4 so that the float stores stay 16-byte friendly.
    int vec = pick_vec<T>({p.dim}, {p.table, p.out});
    if (vec > 4) vec = 4;
    const dim3 grid(unsigned(p.n_tokens));
    if (vec == 4)
      embedding_kernel<T, 4><<<grid, kThreads, 0, stream>>>(p.ids, table, p.out, p.dim);
    else if (vec == 2)
      embedding_kernel<T, 2><<<grid, kThreads, 0, stream>>>(p.ids, table, p.out, p.dim);
    else
      embedding_kernel<T, 1><<<grid, kThreads, 0, stream>>>(p.ids, table, p.out, p.dim);
    return cudaGetLastError();
  });
}

cudaError_t launch_rmsnorm(const ops::RmsNormParams& p, cudaStream_t stream) {
  if (p.n_rows <= 0 || p.dim <= 0) return cudaSuccess;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* w = static_cast<const T*>(p.weight);
    T* y = static_cast<T*>(p.y);
    int vec = pick_vec<T>({p.dim}, {p.weight, p.y});
    if (vec > 4) vec = 4;
    const dim3 grid(unsigned(p.n_rows));
    if (vec == 4 && p.dim <= 2 * 4 * kThreads)  // d_model <= 2048: the row in registers
      return launch_pdl(rmsnorm_reg_kernel<T, 4, 2>, grid, kThreads, 0, stream, p.x, p.rows, w, y, p.dim, p.eps);
    if (vec == 4) return launch_pdl(rmsnorm_kernel<T, 4>, grid, kThreads, 0, stream, p.x, p.rows, w, y, p.dim, p.eps);
    if (vec == 2) return launch_pdl(rmsnorm_kernel<T, 2>, grid, kThreads, 0, stream, p.x, p.rows, w, y, p.dim, p.eps);
    return launch_pdl(rmsnorm_kernel<T, 1>, grid, kThreads, 0, stream, p.x, p.rows, w, y, p.dim, p.eps);
  });
}

cudaError_t launch_swiglu(const ops::SwigluParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.n <= 0) return cudaSuccess;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* u = static_cast<const T*>(p.u);
    T* y = static_cast<T*>(p.y);
    const int vec = pick_vec<T>({p.n, p.ld_u, p.ld_y}, {p.u, p.y});
    const dim3 grid(unsigned(p.n_tokens), ceil_div(p.n, int64_t(kThreads) * vec));
    switch (vec) {
      case 8: return launch_pdl(swiglu_kernel<T, 8>, grid, kThreads, 0, stream, u, p.ld_u, y, p.ld_y, p.n);
      case 4: return launch_pdl(swiglu_kernel<T, 4>, grid, kThreads, 0, stream, u, p.ld_u, y, p.ld_y, p.n);
      case 2: return launch_pdl(swiglu_kernel<T, 2>, grid, kThreads, 0, stream, u, p.ld_u, y, p.ld_y, p.n);
      default: return launch_pdl(swiglu_kernel<T, 1>, grid, kThreads, 0, stream, u, p.ld_u, y, p.ld_y, p.n);
    }
  });
}

cudaError_t launch_add_bias_f32(float* y, int64_t ldy, const void* bias, DType bias_dtype,
                                int64_t m, int64_t n, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  return dispatch_act_dtype(bias_dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(m), ceil_div(n, kThreads) > 64 ? 64 : ceil_div(n, kThreads));
    add_bias_kernel<T><<<grid, kThreads, 0, stream>>>(y, ldy, static_cast<const T*>(bias), n);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace based_core
