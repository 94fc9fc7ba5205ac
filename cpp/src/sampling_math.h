// sampling_math.h: the pieces of sampling shared bit-for-bit by the host
// sampler, the CPU backend and the CUDA kernel (compiled by nvcc too).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define BC_HOST_DEVICE __host__ __device__
#else
#define BC_HOST_DEVICE
#endif

namespace based_core {

BC_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// The uniform draw in [0, 1) for token `step` of sequence `seq`: a counter-based
/// hash, so a sequence draws the same numbers alone or in any batch, on any backend.
BC_HOST_DEVICE inline double sample_uniform(uint64_t seed, uint32_t seq, uint32_t step) {
  uint64_t h = splitmix64(seed ^ splitmix64((uint64_t(seq) << 32) | step));
  return double(h >> 11) * (1.0 / 9007199254740992.0);  // 53 random bits
}

/// Maps a float to an unsigned key with the same order (NaN -> 0, i.e. never kept),
/// so thresholds can be found by a bitwise search over keys.
BC_HOST_DEVICE inline uint32_t float_order_key(float f) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(f);
#else
  std::memcpy(&u, &f, 4);
#endif
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return 0;  // NaN
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#ifndef __CUDACC__
/// Host version of ops::SampleParams for one row with the draw u in [0, 1)
/// (sampler.cpp). Greedy settings are the caller's business.
int32_t sample_row(const float* logits, int64_t n, float temperature, int top_k, float top_p, double u);
#endif

}  // namespace based_core
