// short_conv.cu: BaseConv's gated 3-tap depthwise convolution (SPEC 2.3), prefill and decode.
// Tail layout: fp32 [slot][2][C]; row 0 = a_{t-2}, row 1 = a_{t-1} for the next token t.
#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTokensPerThread = 32;  // >= 2: only the first token block touches the tail

// computes: c_t = w0 a_{t-2} + w1 a_{t-1} + w2 a_t, y_t = SiLU(c_t) * g_t for one channel and a
// block of tokens; the first token block reads the old tail and writes the new one (SPEC 2.3).
template <class T>
__global__ void conv_prefill_kernel(const T* __restrict__ u, int64_t ld_u, const T* __restrict__ w,
                                    T* __restrict__ y, int64_t ld_y, int64_t C, int64_t n_tokens,
                                    float* __restrict__ tail) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t t0 = int64_t(blockIdx.y) * kTokensPerThread;
  const int64_t t1 = t0 + kTokensPerThread < n_tokens ? t0 + kTokensPerThread : n_tokens;
  const float w0 = to_f(w[c * 3 + 0]), w1 = to_f(w[c * 3 + 1]), w2 = to_f(w[c * 3 + 2]);
  float am2, am1;  // a_{t-2}, a_{t-1}
  float old1 = 0.f;
  if (t0 == 0) {
    am2 = tail[c];
    am1 = old1 = tail[C + c];
  } else {
    am2 = t0 >= 2 ? to_f(u[(t0 - 2) * ld_u + c]) : 0.f;
    am1 = to_f(u[(t0 - 1) * ld_u + c]);
  }
  for (int64_t t = t0; t < t1; ++t) {
    const float a = to_f(u[t * ld_u + c]);
    const float g = to_f(u[t * ld_u + C + c]);
    const float cv = w0 * am2 + w1 * am1 + w2 * a;
    y[t * ld_y + c] = from_f<T>(silu(cv) * g);
    am2 = am1;
    am1 = a;
  }
  if (t0 == 0) {
    const int64_t T_ = n_tokens;
    tail[c] = T_ >= 2 ? to_f(u[(T_ - 2) * ld_u + c]) : old1;
    tail[C + c] = to_f(u[(T_ - 1) * ld_u + c]);
  }
}

// computes: one decode step of the gated conv for row i in slot slots[i]: c = w0 tail0 + w1 tail1
// + w2 a, y = SiLU(c) * g, then tail <- (tail1, a) (SPEC 2.3, decode state).
template <class T>
__global__ void conv_decode_kernel(const T* __restrict__ u, int64_t ld_u, const T* __restrict__ w,
                                   T* __restrict__ y, int64_t ld_y, int64_t C,
                                   const int32_t* __restrict__ slots, float* __restrict__ tail) {
  pdl_trigger();  // the out_proj GEMM may launch early (it waits for this kernel)
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t i = blockIdx.x;
  float* tl = tail + int64_t(slots[i]) * 2 * C;
  const float am2 = tl[c], am1 = tl[C + c];
  const float a = to_f(u[i * ld_u + c]);
  const float g = to_f(u[i * ld_u + C + c]);
  const float cv = to_f(w[c * 3 + 0]) * am2 + to_f(w[c * 3 + 1]) * am1 + to_f(w[c * 3 + 2]) * a;
  y[i * ld_y + c] = from_f<T>(silu(cv) * g);
  tl[c] = am1;
  tl[C + c] = a;
}

}  // namespace

cudaError_t launch_conv_prefill(const ops::ConvPrefillParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.channels <= 0) return cudaSuccess;
  const int64_t tblocks = (p.n_tokens + kTokensPerThread - 1) / kTokensPerThread;
  if (tblocks > 65535) return cudaErrorInvalidValue;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(ceil_div(p.channels, kThreads), unsigned(tblocks));
    conv_prefill_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(p.u), p.ld_u, static_cast<const T*>(p.weight), static_cast<T*>(p.y),
        p.ld_y, p.channels, p.n_tokens, p.tail);
    return cudaGetLastError();
  });
}

cudaError_t launch_conv_decode(const ops::ConvDecodeParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.channels <= 0) return cudaSuccess;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(p.n_tokens), ceil_div(p.channels, kThreads));
    conv_decode_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(p.u), p.ld_u, static_cast<const T*>(p.weight), static_cast<T*>(p.y),
        p.ld_y, p.channels, p.slots, p.tail);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace based_core
