// linear_attention_decode.cu: one fused decode step of Taylor linear attention (SPEC 2.1, 5.2).
//
// One CTA of 512 threads per (row, head), for either state layout of ops.h (full 273 rows or
// symmetric 153). phi(q), phi(k) are formed in shared memory from the f-vectors; z is updated
// and phi(q).z reduced; then a single streaming pass over the fp32 state S [D][hd] of the row's
// slot: thread (rp, g) owns float4 column group g of the rows rp, rp + RP, ... and does
// S[r] += phi(k)_r v, acc += phi(q)_r S[r] (update first, then read out), kUnroll rows in flight
// per thread, the first batch loaded at kernel start. A shared-memory reduction over rp gives
// the numerator; y = num / (phi(q).z + eps).
#include "kernels.h"
#include "linear_attention_common.cuh"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxD = 1 + kMaxFeatureDim + kMaxFeatureDim * kMaxFeatureDim;  // 273
constexpr int kUnroll = 6;

struct LaDecodeArgs {
  const void* q;
  const void* k;
  const void* v;
  int64_t ld_q, ld_k, ld_v;
  void* y;
  int64_t ld_y;
  const int32_t* slots;
  float* S;
  float* z;
  int heads, f, D, hd;
  bool symmetric;
  float eps, c1, c2;
};

// computes: S += phi(k_i) v_i^T, z += phi(k_i), y_i = (phi(q_i)^T S) / (phi(q_i)^T z + eps) for
// row i and head h on the state of slot slots[i] (SPEC 2.1, decode step).
template <class T>
__global__ void __launch_bounds__(kThreads, 2) la_decode_kernel(LaDecodeArgs a) {
  __shared__ float qf[kMaxFeatureDim + 1], kf[kMaxFeatureDim + 1];  // entry f: the constant 1
  __shared__ float phq[kMaxD], phk[kMaxD];
  __shared__ float vs[kMaxHeadDim];
  pdl_trigger();  // the out_proj GEMM may launch early (it waits for this kernel)
  __shared__ __align__(16) float red[kThreads * 4];
  __shared__ float scratch[33];

  const int64_t i = blockIdx.x;
  const int h = blockIdx.y;
  const int f = a.f, D = a.D, hd = a.hd, tid = threadIdx.x;
  const int64_t sh = int64_t(a.slots[i]) * a.heads + h;
  float* S = a.S + sh * D * int64_t(hd);
  float* z = a.z + sh * D;
  const int G = hd >> 2;       // float4 groups per state row
  const int RP = kThreads / G;  // rows per pass
  const int g = tid % G, rp = tid / G;

  // The first kUnroll state rows of this thread (all of them for the 153-row symmetric state at
  // hd <= 64) and its z row are loaded before q, k, v: their DRAM latency overlaps instead of
  // following the feature-map phase, which matters at small batch where one CTA's latency is
  // the whole step.
  static_assert(kMaxD <= kThreads, "one z row per thread");
  float4 sv[kUnroll];
  auto load_rows = [&](int r0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int r = r0 + u * RP;
      if (r < D) sv[u] = *reinterpret_cast<const float4*>(S + int64_t(r) * hd + 4 * g);
    }
  };
  if (rp < RP) load_rows(rp);
  const float z_old = tid < D ? z[tid] : 0.f;
  // Launched with PDL: everything above (slot ids from the host, this layer's state, last
  // written by this kernel in an earlier step) is final before the in_proj GEMM ends; q, k, v
  // are that GEMM's output.
  pdl_wait();

  if (tid < f) {
    qf[tid] = to_f(static_cast<const T*>(a.q)[i * a.ld_q + int64_t(h) * f + tid]);
    kf[tid] = to_f(static_cast<const T*>(a.k)[i * a.ld_k + int64_t(h) * f + tid]);
  } else if (tid == f) {
    qf[f] = kf[f] = 1.f;
  }
  for (int d = tid; d < hd; d += kThreads)
    vs[d] = to_f(static_cast<const T*>(a.v)[i * a.ld_v + int64_t(h) * hd + d]);
  __syncthreads();

  float dp = 0.f;
  if (tid < D) {
    const PhiRow pr = phi_row(tid, f, a.symmetric, a.c1, a.c2);
    const float pq = pr.cq * qf[pr.i] * qf[pr.j], pk = pr.ck * kf[pr.i] * kf[pr.j];
    phq[tid] = pq;
    phk[tid] = pk;
    const float zn = z_old + pk;
    z[tid] = zn;
    dp = pq * zn;
  }
  const float den = block_sum(dp, scratch);  // also publishes phq / phk

  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (rp < RP) {
    const float4 v4 = make_float4(vs[4 * g], vs[4 * g + 1], vs[4 * g + 2], vs[4 * g + 3]);
    for (int r0 = rp; r0 < D; r0 += RP * kUnroll) {
      if (r0 != rp) load_rows(r0);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int r = r0 + u * RP;
        if (r < D) {
          const float pk = phk[r], pq = phq[r];
          sv[u].x = fmaf(pk, v4.x, sv[u].x);
          sv[u].y = fmaf(pk, v4.y, sv[u].y);
          sv[u].z = fmaf(pk, v4.z, sv[u].z);
          sv[u].w = fmaf(pk, v4.w, sv[u].w);
          acc.x = fmaf(pq, sv[u].x, acc.x);
          acc.y = fmaf(pq, sv[u].y, acc.y);
          acc.z = fmaf(pq, sv[u].z, acc.z);
          acc.w = fmaf(pq, sv[u].w, acc.w);
          *reinterpret_cast<float4*>(S + int64_t(r) * hd + 4 * g) = sv[u];
        }
      }
    }
    *reinterpret_cast<float4*>(red + rp * hd + 4 * g) = acc;
  }
  __syncthreads();

  T* y = static_cast<T*>(a.y) + i * a.ld_y + int64_t(h) * hd;
  const float inv = 1.f / (den + a.eps);
  for (int d = tid; d < hd; d += kThreads) {
    float num = 0.f;
    for (int r = 0; r < RP; ++r) num += red[r * hd + d];
    y[d] = from_f<T>(num * inv);
  }
}

}  // namespace

cudaError_t launch_la_decode(const ops::LaDecodeParams& p, cudaStream_t stream) {
  const ops::LinearAttentionShape& s = p.shape;
  if (p.n_tokens <= 0) return cudaSuccess;
  if (s.feature_dim <= 0 || s.feature_dim > kMaxFeatureDim || s.head_dim <= 0 ||
      s.head_dim > kMaxHeadDim || s.head_dim % 4 || s.heads <= 0 || s.heads > 65535 ||
      !aligned_to(p.state_s, 16))
    return cudaErrorInvalidValue;
  const float f = float(s.feature_dim);
  LaDecodeArgs a{p.q, p.k, p.v, p.ld_q, p.ld_k, p.ld_v, p.y, p.ld_y, p.slots, p.state_s,
                 p.state_z, s.heads, s.feature_dim, int(s.state_rows()), s.head_dim, s.symmetric, s.eps,
                 1.f / sqrtf(sqrtf(f)), 1.f / (sqrtf(2.f) * sqrtf(f))};
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(p.n_tokens), unsigned(s.heads));
    return launch_pdl(la_decode_kernel<T>, grid, kThreads, 0, stream, a);
  });
}

}  // namespace cuda
}  // namespace based_core
