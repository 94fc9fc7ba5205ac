// common.cuh: device helpers shared by the kernels: dtype conversion, the one
// runtime-dtype -> template dispatch, warp/block reductions, SiLU, alignment checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "based_core/dtype.h"

namespace based_core {
namespace cuda {

// ---- element conversion (all arithmetic is fp32) ----
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

/// Rounds an fp32 value to T and back (what storing it in a T buffer does).
template <class T> __device__ __forceinline__ float round_to(float x) { return to_f(from_f<T>(x)); }

/// N consecutive elements of T moved as one aligned access.
template <class T, int N> struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T, int N> __device__ __forceinline__ void load_pack(const T* p, float* out) {
  Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_f(pk.v[i]);
}

template <class T, int N> __device__ __forceinline__ void store_pack(T* p, const float* in) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; ++i) pk.v[i] = from_f<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum (MAX = false) or max over the block (blockDim.x a multiple of 32, <= 1024); every thread
/// gets the result. `scratch` holds >= 33 floats; the call contains two __syncthreads.
template <bool MAX>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = MAX ? warp_max(v) : warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float r = lane < nwarps ? scratch[lane] : MAX ? -INFINITY : 0.f;
    r = MAX ? warp_max(r) : warp_sum(r);
    if (lane == 0) scratch[32] = r;
  }
  __syncthreads();
  return scratch[32];
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// ---- programmatic dependent launch (PDL, sm_90+) ----
// A decode step is a chain of short weight-streaming kernels; with PDL the next kernel's CTAs
// start while the previous one drains and prefetch their weights, hiding the ramp-up and
// tail of every kernel boundary. A kernel launched with launch_pdl() must call pdl_wait()
// before it reads or writes anything an earlier kernel touches; pdl_trigger() lets the next
// PDL kernel launch early (it still waits for this one to finish in its own pdl_wait()).
// Both are no-ops without PDL and on older GPUs.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Pulls the cache lines of [p, p + bytes) into L2 (read-only data such as weights, which may
/// be fetched before pdl_wait()).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/// True when the current device supports PDL (compute capability >= 9.0); cached per device.
bool pdl_supported();

/// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization when
/// the device supports it (see pdl_wait), a plain launch otherwise.
template <class... KArgs, class... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  if (pdl_supported()) {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// ---- host helpers ----
inline bool aligned_to(const void* p, std::size_t bytes) {
  return (reinterpret_cast<std::uintptr_t>(p) % bytes) == 0;
}

inline unsigned ceil_div(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }

/// Runs f(T{}) with T = float, __half or __nv_bfloat16 for the activation dtype `t`:
/// the one place where a runtime DType becomes a template argument.
template <class F> cudaError_t dispatch_act_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    default: return cudaErrorInvalidValue;
  }
}

/// Raises a kernel's dynamic shared memory limit to `bytes` (the most that kernel is
/// ever launched with) once per device; `done` is that kernel's bitmask of devices.
template <class K> cudaError_t ensure_smem(K kernel, int bytes, std::atomic<unsigned long long>& done) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const unsigned long long bit = 1ull << (dev & 63);
  if (done.load(std::memory_order_relaxed) & bit) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done.fetch_or(bit);
  return e;
}

}  // namespace cuda
}  // namespace based_core
