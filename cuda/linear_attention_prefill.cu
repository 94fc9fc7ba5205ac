// linear_attention_prefill.cu: causal Taylor linear attention over a batch of sequences (grid z),
// each continuing from and writing back its fp32 state (SPEC 2.1, recurrent form).
//
// Kernel 1 (numerator, denominator, S): one CTA of 512 threads per (head, block of 8 value
// columns). The CTA keeps its S[D][8] slice in registers: thread (g, c) owns column c and rows
// g, g + 64, ... (5 rows for D = 273). Tokens go in batches of 16: phi(q), phi(k) of the batch
// are formed in shared memory, then every thread runs the recurrence S_r += phi(k)_r v,
// acc += phi(q)_r S_r token by token (update first, then read out); a shared-memory reduction
// over the 64 row groups gives the numerators. Each CTA also carries a private running copy of
// z (one row per thread) for the denominators phi(q_t).z_t.
// Kernel 2 then adds sum_t phi(k_t) to the global z (kernel 1 only reads z: its CTAs may run
// in any order, so none of them may write z).
//
// This CUDA-core kernel is the exact fp32 path (float32 activations) and the fallback for calls
// the tensor-core chunked kernel (linear_attention_prefill_tc.cu: bf16/fp16, f = 16, head_dim a
// multiple of 16 in [64, 128], 16-byte aligned q/k/v rows) does not take.
#include "kernels.h"
#include "linear_attention_common.cuh"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kCols = 8;                   // value columns per CTA
constexpr int kGroups = kThreads / kCols;  // 64 row groups
constexpr int kTB = 16;                    // tokens per batch
constexpr int kMaxD = 1 + kMaxFeatureDim + kMaxFeatureDim * kMaxFeatureDim;  // 273
constexpr int kLdPhi = 288;                // >= kMaxD, phi row stride in shared memory
constexpr int kRows = (kMaxD + kGroups - 1) / kGroups;                        // 5
constexpr int kWarps = kThreads / 32;

struct LaPrefillArgs {
  const void* q;
  const void* k;
  const void* v;
  int64_t ld_q, ld_k, ld_v;
  void* y;
  int64_t ld_y;
  int64_t n_tokens;
  float* S;  // [n_seqs][heads][D][hd]
  float* z;  // [n_seqs][heads][D]
  int heads, f, D, hd;
  bool symmetric;  // state layout (ops.h)
  int64_t ss_q, ss_k, ss_v, ss_y;  // sequence strides (elements); sequence = blockIdx.z
  float eps, c1, c2;
};

constexpr int kSmemFloats = 2 * kTB * (kMaxFeatureDim + 1) + kTB * kCols + 2 * kTB * kLdPhi + kTB * kGroups * kCols + kTB * kWarps;

// computes: for this head and 16 value columns, token by token: S += phi(k_t) v_t^T,
// z_t = z + sum_{j<=t} phi(k_j), y_t = (phi(q_t)^T S) / (phi(q_t)^T z_t + eps) (SPEC 2.1).
template <class T>
__global__ void __launch_bounds__(kThreads) la_prefill_kernel(LaPrefillArgs a) {
  extern __shared__ __align__(16) float smem[];
  constexpr int F = kMaxFeatureDim + 1;  // f-vector row + a constant 1 at index kMaxFeatureDim
  float* qs = smem;                    // [kTB][F]
  float* ks = qs + kTB * F;            // [kTB][F]
  float* vs = ks + kTB * F;            // [kTB][kCols]
  float* phq = vs + kTB * kCols;       // [kTB][kLdPhi]
  float* phk = phq + kTB * kLdPhi;     // [kTB][kLdPhi]
  float* part = phk + kTB * kLdPhi;    // [kTB][kGroups][kCols]
  float* dpw = part + kTB * kGroups * kCols;  // [kTB][kWarps]

  const int64_t b = blockIdx.z;
  const T* Q = static_cast<const T*>(a.q) + b * a.ss_q;
  const T* K = static_cast<const T*>(a.k) + b * a.ss_k;
  const T* V = static_cast<const T*>(a.v) + b * a.ss_v;
  T* Y = static_cast<T*>(a.y) + b * a.ss_y;
  const int h = blockIdx.y, cb = blockIdx.x;
  const int f = a.f, D = a.D, hd = a.hd;
  const int tid = threadIdx.x, c = tid % kCols, g = tid / kCols;
  const int lane = tid & 31, warp = tid >> 5;
  const int col = cb * kCols + c;
  const bool col_ok = col < hd;
  const int nwz = (D + 31) / 32;  // warps that own z rows
  float* S = a.S + (b * a.heads + h) * D * hd;
  const float* z = a.z + (b * a.heads + h) * D;

  float s[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const int r = g + kGroups * m;
    s[m] = (r < D && col_ok) ? S[int64_t(r) * hd + col] : 0.f;
  }
  float zr = tid < D ? z[tid] : 0.f;
  // phi row tid as (x[pi] * x[pj]) * coef, index kMaxFeatureDim reading the constant 1
  int pi = kMaxFeatureDim, pj = kMaxFeatureDim;
  float pcq = 1.f, pck = 1.f;
  if (tid < D) {
    const PhiRow pr = phi_row(tid, f, a.symmetric, a.c1, a.c2);
    pi = pr.i == f ? kMaxFeatureDim : pr.i, pj = pr.j == f ? kMaxFeatureDim : pr.j;
    pcq = pr.cq, pck = pr.ck;
  }

  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kTB) {
    const int nt = int(a.n_tokens - t0 < kTB ? a.n_tokens - t0 : kTB);
    for (int idx = tid; idx < kTB * F; idx += kThreads) {
      const int tb = idx / F, e = idx % F;
      const bool tok = tb < nt && e < f;
      const int64_t t = t0 + tb;
      const float one = e == kMaxFeatureDim ? 1.f : 0.f;
      qs[idx] = tok ? to_f(Q[t * a.ld_q + int64_t(h) * f + e]) : one;
      ks[idx] = tok ? to_f(K[t * a.ld_k + int64_t(h) * f + e]) : one;
    }
    for (int idx = tid; idx < kTB * kCols; idx += kThreads) {
      const int tb = idx / kCols, vc = cb * kCols + idx % kCols;
      vs[idx] = (tb < nt && vc < hd) ? to_f(V[(t0 + tb) * a.ld_v + int64_t(h) * hd + vc]) : 0.f;
    }
    __syncthreads();
    if (tid < D) {  // thread r forms phi row r of every token: (x_i * x_j) * coef
      for (int tb = 0; tb < nt; ++tb) {
        phq[tb * kLdPhi + tid] = qs[tb * F + pi] * qs[tb * F + pj] * pcq;
        phk[tb * kLdPhi + tid] = ks[tb * F + pi] * ks[tb * F + pj] * pck;
      }
    }
    __syncthreads();
#pragma unroll 2
    for (int tb = 0; tb < nt; ++tb) {
      const float vt = vs[tb * kCols + c];
      const float* pk = phk + tb * kLdPhi;
      const float* pq = phq + tb * kLdPhi;
      float acc = 0.f;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        const int r = g + kGroups * m;
        if (r < D) {
          s[m] = fmaf(pk[r], vt, s[m]);
          acc = fmaf(pq[r], s[m], acc);
        }
      }
      part[(tb * kGroups + g) * kCols + c] = acc;
    }
    if (warp < nwz) {  // warp-uniform
      for (int tb = 0; tb < nt; ++tb) {
        float dp = 0.f;
        if (tid < D) {
          zr += phk[tb * kLdPhi + tid];
          dp = phq[tb * kLdPhi + tid] * zr;
        }
        dp = warp_sum(dp);
        if (lane == 0) dpw[tb * kWarps + warp] = dp;
      }
    }
    __syncthreads();
    {  // 4 lanes per output: 16 tokens x 8 columns x 4 = 512 threads
      static_assert(kTB * kCols * 4 == kThreads, "reduction layout");
      const int o = tid >> 2, sub = tid & 3, tb = o / kCols, cc = o % kCols;
      float num = 0.f;
      for (int gg = sub; gg < kGroups; gg += 4) num += part[(tb * kGroups + gg) * kCols + cc];
      num += __shfl_xor_sync(0xffffffffu, num, 1);
      num += __shfl_xor_sync(0xffffffffu, num, 2);
      const int oc = cb * kCols + cc;
      if (sub == 0 && tb < nt && oc < hd) {
        float den = 0.f;
        for (int w = 0; w < nwz; ++w) den += dpw[tb * kWarps + w];
        Y[(t0 + tb) * a.ld_y + int64_t(h) * hd + oc] = from_f<T>(num / (den + a.eps));
      }
    }
  }

#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const int r = g + kGroups * m;
    if (r < D && col_ok) S[int64_t(r) * hd + col] = s[m];
  }
}

constexpr int kZGroups = 3, kZRows = kLdPhi;  // 3 token groups x 288 rows = 864 threads

// computes: z += sum_t phi(k_t) for one head (SPEC 2.1, k-state after prefill).
template <class T>
__global__ void __launch_bounds__(kZGroups * kZRows) la_prefill_z_kernel(LaPrefillArgs a) {
  __shared__ float red[kZGroups][kZRows];
  const int h = blockIdx.x, tid = threadIdx.x;
  const int64_t b = blockIdx.y;
  const int gi = tid / kZRows, r = tid % kZRows;
  const int f = a.f, D = a.D;
  const T* K = static_cast<const T*>(a.k) + b * a.ss_k;
  float acc = 0.f, coef = 1.f;
  if (r < D) {
    const PhiRow pr = phi_row(r, f, a.symmetric, a.c1, a.c2);  // key side: ck * k_i * k_j
    const int i = pr.i, j = pr.j;
    const bool use_i = i < f, use_j = j < f;  // index f is the constant 1
    coef = pr.ck;
#pragma unroll 8
    for (int64_t t = gi; t < a.n_tokens; t += kZGroups) {
      const T* kr = K + t * a.ld_k + int64_t(h) * f;
      const float x = use_i ? to_f(kr[i]) : 1.f, y = use_j ? to_f(kr[j]) : 1.f;
      acc = fmaf(x, y, acc);
    }
  }
  red[gi][r] = acc * coef;
  __syncthreads();
  if (tid < D) a.z[(b * a.heads + h) * D + tid] += red[0][tid] + red[1][tid] + red[2][tid];
}

}  // namespace

cudaError_t launch_la_prefill(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace,
                              std::size_t workspace_bytes) {
  const ops::LinearAttentionShape& s = p.shape;
  if (p.n_tokens <= 0 || p.n_seqs <= 0) return cudaSuccess;
  if (s.feature_dim <= 0 || s.feature_dim > kMaxFeatureDim || s.head_dim <= 0 ||
      s.head_dim > kMaxHeadDim || s.heads <= 0 || s.heads > 65535 || p.n_seqs > 65535)
    return cudaErrorInvalidValue;
  bool handled = false;  // bf16/fp16, f = 16, hd 64..128: the tensor-core chunked kernels
  cudaError_t et = launch_la_prefill_wg(p, stream, workspace, workspace_bytes, &handled);  // Hopper
  if (handled) return et;
  et = launch_la_prefill_tc(p, stream, workspace, workspace_bytes, &handled);
  if (handled) return et;
  const float f = float(s.feature_dim);
  LaPrefillArgs a{p.q, p.k, p.v, p.ld_q, p.ld_k, p.ld_v, p.y, p.ld_y, p.n_tokens, p.state_s,
                  p.state_z, s.heads, s.feature_dim, int(s.state_rows()), s.head_dim, s.symmetric,
                  p.seq_stride_q, p.seq_stride_k, p.seq_stride_v, p.seq_stride_y, s.eps,
                  1.f / sqrtf(sqrtf(f)), 1.f / (sqrtf(2.f) * sqrtf(f))};
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    static std::atomic<unsigned long long> configured{0};
    const int smem = int(sizeof(float)) * kSmemFloats;
    cudaError_t e = ensure_smem(la_prefill_kernel<T>, smem, configured);
    if (e != cudaSuccess) return e;
    const dim3 grid(ceil_div(s.head_dim, kCols), unsigned(s.heads), unsigned(p.n_seqs));
    la_prefill_kernel<T><<<grid, kThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    la_prefill_z_kernel<T><<<dim3(unsigned(s.heads), unsigned(p.n_seqs)), kZGroups * kZRows, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace based_core
