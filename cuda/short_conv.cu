// short_conv.cu: BaseConv's gated 3-tap depthwise convolution (SPEC 2.3), prefill and decode.
// Tail layout: fp32 [slot][2][C]; row 0 = a_{t-2}, row 1 = a_{t-1} for the next token t.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 128;  // conv_decode
constexpr int kChanVecs = 32;  // conv_prefill block: 32 channel vectors (x) ...
constexpr int kTokRows = 8;    // ... by 8 tokens (y)

// computes: c_t = w0 a_{t-2} + w1 a_{t-1} + w2 a_t, y_t = SiLU(c_t) * g_t (SPEC 2.3), one token
// and V adjacent channels per thread (V = 16 / sizeof(T): 16-byte vectors; V = 1 for unaligned
// strides). a_{t-1} and a_{t-2} are rows the neighbouring threads read too, so they come from
// L1/L2 and DRAM sees each row about once; the work per thread stays small, so the loads of many
// threads overlap (staging the rows in shared memory behind a barrier was slower on the H100:
// 33 vs 23 us for based-1b's 2048 x 3584 channels). Tokens 0 and 1 read the old tail; block row
// 0 writes the new one once all its threads have read it (only block row 0 touches the tail).
// The three-tap sum with its rounding spelled out: prefill and decode must give the same bits
// for the same token (tests compare them exactly), and leaving the contraction to the compiler
// gave them different FMA orders once the decode kernel's operands were loaded before pdl_wait.
__device__ __forceinline__ float conv3(float w0, float w1, float w2, float am2, float am1, float a) {
  return fmaf(w2, a, fmaf(w1, am1, w0 * am2));
}

template <class T, int V>
__global__ void __launch_bounds__(kChanVecs* kTokRows) conv_prefill_kernel(
    const T* __restrict__ u, int64_t ld_u, const T* __restrict__ w, T* __restrict__ y, int64_t ld_y, int64_t C,
    int64_t n_tokens, float* __restrict__ tail) {
  const int tv = threadIdx.x % kChanVecs, tt = threadIdx.x / kChanVecs;
  const int64_t c = (int64_t(blockIdx.x) * kChanVecs + tv) * V;
  const bool active = c < C;  // no early return: block row 0 synchronises before the tail write
  for (int64_t tb = blockIdx.y; tb * kTokRows < n_tokens; tb += gridDim.y) {
    const int64_t t = tb * kTokRows + tt;
    if (active && t < n_tokens) {
      float a0[V], a1[V], a2[V], g[V];  // a_t, a_{t-1}, a_{t-2}, g_t
      load_pack<T, V>(u + t * ld_u + c, a0);
      load_pack<T, V>(u + t * ld_u + C + c, g);
      if (t >= 1) load_pack<T, V>(u + (t - 1) * ld_u + c, a1);
      if (t >= 2) load_pack<T, V>(u + (t - 2) * ld_u + c, a2);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (t == 0) a1[i] = tail[C + c + i], a2[i] = tail[c + i];
        if (t == 1) a2[i] = tail[C + c + i];
      }
      float wt[3 * V];  // taps of channels c..c+V-1, [channel][tap]: three 16-byte loads when V > 1
#pragma unroll
      for (int j = 0; j < 3; ++j) load_pack<T, V>(w + c * 3 + j * V, wt + j * V);
      float out[V];
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = silu(conv3(wt[3 * i], wt[3 * i + 1], wt[3 * i + 2], a2[i], a1[i], a0[i])) * g[i];
      store_pack<T, V>(y + t * ld_y + c, out);
    }
    if (tb == 0) {
      __syncthreads();  // every read of the old tail in this block is done
      if (tt == 0 && active) {  // new tail (a_{T-2}, a_{T-1}); with one token a_{T-2} is the old a_{-1}
        const int64_t T_ = n_tokens;
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const float last2 = T_ >= 2 ? to_f(u[(T_ - 2) * ld_u + c + i]) : tail[C + c + i];
          tail[C + c + i] = to_f(u[(T_ - 1) * ld_u + c + i]);
          tail[c + i] = last2;
        }
      }
    }
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
  const int64_t i = blockIdx.x;
  float* tl = tail + int64_t(slots[i]) * 2 * C;
  // Launched with PDL: the tail (written by this kernel in earlier steps) and the weights are
  // final before the in_proj GEMM producing u ends.
  const float am2 = c < C ? tl[c] : 0.f, am1 = c < C ? tl[C + c] : 0.f;
  const float w0 = c < C ? to_f(w[c * 3 + 0]) : 0.f, w1 = c < C ? to_f(w[c * 3 + 1]) : 0.f,
              w2 = c < C ? to_f(w[c * 3 + 2]) : 0.f;
  pdl_wait();
  if (c >= C) return;
  const float a = to_f(u[i * ld_u + c]);
  const float g = to_f(u[i * ld_u + C + c]);
  const float cv = conv3(w0, w1, w2, am2, am1, a);
  y[i * ld_y + c] = from_f<T>(silu(cv) * g);
  tl[c] = am1;
  tl[C + c] = a;
}

}  // namespace

cudaError_t launch_conv_prefill(const ops::ConvPrefillParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.channels <= 0) return cudaSuccess;
  const int64_t tblocks = (p.n_tokens + kTokRows - 1) / kTokRows;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / int(sizeof(T));
    const bool vec = p.channels % kVec == 0 && p.ld_u % kVec == 0 && p.ld_y % kVec == 0 && aligned_to(p.u, 16) &&
                     aligned_to(p.y, 16) && aligned_to(p.weight, 16);
    const dim3 grid(ceil_div(p.channels, int64_t(kChanVecs) * (vec ? kVec : 1)),
                    unsigned(std::min<int64_t>(tblocks, 65535)));
    auto kernel = vec ? conv_prefill_kernel<T, kVec> : conv_prefill_kernel<T, 1>;
    kernel<<<grid, kChanVecs * kTokRows, 0, stream>>>(static_cast<const T*>(p.u), p.ld_u,
                                                       static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.ld_y,
                                                       p.channels, p.n_tokens, p.tail);
    return cudaGetLastError();
  });
}

cudaError_t launch_conv_decode(const ops::ConvDecodeParams& p, cudaStream_t stream) {
  if (p.n_tokens <= 0 || p.channels <= 0) return cudaSuccess;
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(p.n_tokens), ceil_div(p.channels, kThreads));
    return launch_pdl(conv_decode_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(p.u), p.ld_u,
                      static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.ld_y, p.channels, p.slots, p.tail);
  });
}

}  // namespace cuda
}  // namespace based_core
