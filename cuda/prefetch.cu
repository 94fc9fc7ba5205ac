// prefetch.cu: pulls read-only device memory (the next GEMM's weights) into L2 from a side
// stream. Decode steps at small batch are a chain of weight GEMMs separated by short
// latency-bound kernels (norms, mixers); each GEMM alone streams its weights at ~1.7 TB/s
// and HBM idles between them. Fetching GEMM j+1's weights while GEMM j and the kernels
// after it run keeps HBM busy across those boundaries, and GEMM j+1 then reads from L2.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 32;
constexpr std::size_t kChunk = 16384;  // bytes per bulk prefetch instruction
constexpr unsigned kMaxBlocks = 64;    // spreads the requests over several SMs' copy engines

__global__ void __launch_bounds__(kThreads) prefetch_l2_kernel(const char* p, std::size_t bytes) {
  const std::size_t stride = std::size_t(gridDim.x) * kThreads * kChunk;
  for (std::size_t off = (std::size_t(blockIdx.x) * kThreads + threadIdx.x) * kChunk; off < bytes; off += stride) {
    const std::size_t n = bytes - off < kChunk ? bytes - off : kChunk;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // One instruction per chunk; the copy engine fetches it without holding registers.
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(unsigned(n)) : "memory");
#else
    for (std::size_t b = 0; b < n; b += 128) prefetch_l2(p + off + b);
#endif
  }
}

}  // namespace

cudaError_t launch_prefetch_l2(const void* p, std::size_t bytes, cudaStream_t stream) {
  // Bulk prefetches need 16-byte aligned addresses and sizes; the ragged ends do not matter.
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t begin = (a + 15) & ~uintptr_t(15), end = (a + bytes) & ~uintptr_t(15);
  if (!p || end <= begin) return cudaSuccess;
  const std::size_t n = end - begin;
  const unsigned blocks = unsigned(std::min<std::size_t>(kMaxBlocks, (n + kThreads * kChunk - 1) / (kThreads * kChunk)));
  prefetch_l2_kernel<<<blocks, kThreads, 0, stream>>>(reinterpret_cast<const char*>(begin), n);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace based_core
