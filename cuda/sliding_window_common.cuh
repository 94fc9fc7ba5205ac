// sliding_window_common.cuh: rotate-half RoPE shared by the SWA prefill and decode kernels.
//
// Both kernels must produce bit-identical rotated keys (the ring stores them and a prefill
// split in two must match one prefill), so the arithmetic is spelled out with _rn
// intrinsics that the compiler may not contract or reorder.
#pragma once

#include "common.cuh"

namespace based_core {
namespace cuda {

/// theta_i = 1 / base^(2i / rotary_dim) in fp32 (flash-attn's RotaryEmbedding inv_freq).
__device__ __forceinline__ float rope_inv_freq(int i, int rotary_dim, float base) {
  return 1.f / powf(base, float(2 * i) / float(rotary_dim));
}

/// Element d of x rotated at absolute position pos (SPEC 2.2): for d < rotary_dim the pair
/// (x_i, x_{i+rd/2}) turns by pos * theta_i; dims >= rotary_dim pass through.
/// `inv_freq` is rope_inv_freq(d mod rd/2).
template <class T>
__device__ __forceinline__ float rope_value(const T* x, int d, int rotary_dim, float inv_freq,
                                            int64_t pos) {
  const float xd = to_f(x[d]);
  if (d >= rotary_dim) return xd;
  const int half = rotary_dim >> 1;
  const bool lo = d < half;
  const float xp = to_f(x[lo ? d + half : d - half]);
  float s, c;
  sincosf(__fmul_rn(float(pos), inv_freq), &s, &c);
  const float a = __fmul_rn(xd, c), b = __fmul_rn(xp, s);
  return lo ? __fsub_rn(a, b) : __fadd_rn(a, b);
}

/// rope_value at dims i and i + rotary_dim/2 (i < half = rotary_dim/2), bit for bit the same
/// values, with one sincosf for the pair.
template <class T>
__device__ __forceinline__ void rope_pair_exact(const T* x, int i, int half, float inv_freq, int64_t pos,
                                                float& lo, float& hi) {
  const float a = to_f(x[i]), b = to_f(x[i + half]);
  float s, c;
  sincosf(__fmul_rn(float(pos), inv_freq), &s, &c);
  lo = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  hi = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

/// log2(e): scores are kept in the log2 domain so that softmax uses exp2f.
constexpr float kLog2e = 1.4426950408889634f;

}  // namespace cuda
}  // namespace based_core
