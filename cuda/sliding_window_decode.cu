// sliding_window_decode.cu: one decode step of sliding-window attention per row (SPEC 2.2).
//
// One CTA (256 threads) per (row, head): rotate q and k at the row's absolute position, put
// k and v into ring row p % R of the row's slot, then attend q over the ring rows of
// positions max(0, p - window) .. p. Writing first and reading everything back from the ring
// (R >= window + 1, so the new row aliases no row in the band) gives the current key the
// same dtype rounding as prefill keys.
// Latency matters more than bandwidth here (a few KB per CTA): every thread scores whole keys
// with 16-byte loads, and for o the CTA splits into groups of hd/VEC threads that each take
// every G-th key for a 16-byte column chunk, so that all loads of a phase are in flight at once.
// At most 32 registers (__launch_bounds__ min 8 CTAs per SM): a 64-row based-1b step is 1024
// CTAs, one wave of 8 per SM on 132 SMs; at the 40 registers ptxas chose otherwise, 6 per SM
// fit and the step took two waves of this latency-bound kernel.
#include <cstdlib>
#include <cstring>

#include "kernels.h"
#include "sliding_window_common.cuh"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRedFloats = kThreads * 8;  // >= groups * hd for every VEC

struct SwaDecodeArgs {
  const void* qkv;
  int64_t ld_qkv;
  void* out;
  int64_t ld_out;
  const int32_t* slots;
  const int32_t* positions;
  void* ring_k;
  void* ring_v;
  int heads, hd, rd, window, ring;
  float base, scale_log2;
  int heads_inner;  // grid (heads, rows) rather than (rows, heads); see launch_swa_decode
};

// computes: ring[p % R] <- (rot_p(k_i), v_i); o_i = sum_{j=max(0,p-w)}^{p} softmax_j(rot_p(q_i) .
// k_j * scale) v_j over the ring rows of slot slots[i] (SPEC 2.2, decode). VEC elements per load.
// kCoalesced: scores by groups of hd/VEC threads that each take one 16-byte chunk of a key
// (a group reads a key row in one coalesced transaction; partial dots go to shared memory,
// one thread per key adds them) and a block-wide max. Otherwise one thread per key reads
// its whole row (each warp load touched 32 rows, half a sector each: ncu counted 32% excess
// sectors on a based-1b B64 step) and every thread scans all scores for the max.
template <class T, int VEC, bool kCoalesced>
__global__ void __launch_bounds__(kThreads, 8) swa_decode_kernel(SwaDecodeArgs a) {
  extern __shared__ __align__(16) float smem[];
  __shared__ __align__(16) float red[kRedFloats];
  __shared__ float scratch[33];
  pdl_trigger();  // the out_proj GEMM may launch early (it waits for this kernel)
  const int hd = a.hd, H = a.heads, half = a.rd >> 1;
  float* qs = smem;       // [hd] rotated q * scale * log2(e)
  float* sc = smem + hd;  // [window + 1] scores, then probabilities

  const int64_t i = a.heads_inner ? blockIdx.y : blockIdx.x;
  const int h = a.heads_inner ? blockIdx.x : blockIdx.y;
  const int64_t slot = a.slots[i];
  const int64_t p = a.positions[i];
  const T* row = static_cast<const T*>(a.qkv) + i * a.ld_qkv;
  T* ring_k = static_cast<T*>(a.ring_k) + slot * a.ring * H * int64_t(hd);
  T* ring_v = static_cast<T*>(a.ring_v) + slot * a.ring * H * int64_t(hd);
  const int tid = threadIdx.x;
  const int nk = int(p < a.window ? p : a.window) + 1;
  const int64_t j0 = p - nk + 1;

  // Launched with PDL: the ring rows of earlier positions (written by this kernel in earlier
  // steps) are final before the in_proj GEMM producing q, k, v ends; start pulling the ones
  // this step reads into L2 meanwhile. Thread t takes line t & 1 of key row t / 2 (rows of
  // hd <= 128 16-bit elements span at most 3 lines; the third comes with the loads).
  {
    const int row_bytes = hd * int(sizeof(T));
    for (int t = tid; t < 2 * (nk - 1); t += kThreads) {
      const int64_t off = (((j0 + t / 2) % a.ring) * H + h) * int64_t(hd);
      const int b = (t & 1) ? row_bytes - 1 : 0;
      prefetch_l2(reinterpret_cast<const char*>(ring_k + off) + b);
      prefetch_l2(reinterpret_cast<const char*>(ring_v + off) + b);
    }
  }
  pdl_wait();

  {
    const int64_t r = ((p % a.ring) * H + h) * int64_t(hd);
    for (int d = tid; d < hd; d += kThreads) {
      const float f = d < a.rd ? rope_inv_freq(d < half ? d : d - half, a.rd, a.base) : 0.f;
      qs[d] = rope_value(row + int64_t(h) * hd, d, a.rd, f, p) * a.scale_log2;
      ring_k[r + d] = from_f<T>(rope_value(row + int64_t(H + h) * hd, d, a.rd, f, p));
      ring_v[r + d] = row[int64_t(2 * H + h) * hd + d];
    }
  }
  __syncthreads();  // the new ring row and qs are visible to the whole CTA

  const int cpr = hd / VEC;          // column chunks per row
  const int groups = kThreads / cpr;  // key groups
  const int ch = tid % cpr, grp = tid / cpr;
  float mx = -INFINITY;
  if constexpr (kCoalesced) {
    const int cps = cpr | 1;          // odd row stride: the per-key sums read without bank conflicts
    float* part = sc + a.window + 1;  // [nk][cps] partial dot products
    if (grp < groups) {
      float qv[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) qv[e] = qs[ch * VEC + e];
#pragma unroll 4
      for (int kk = grp; kk < nk; kk += groups) {
        float kv[VEC];
        load_pack<T, VEC>(ring_k + (((j0 + kk) % a.ring) * H + h) * int64_t(hd) + ch * VEC, kv);
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc = fmaf(qv[e], kv[e], acc);
        part[kk * cps + ch] = acc;
      }
    }
    __syncthreads();
    for (int kk = tid; kk < nk; kk += kThreads) {
      float s = 0.f;
      for (int c = 0; c < cpr; ++c) s += part[kk * cps + c];
      sc[kk] = s;
      mx = fmaxf(mx, s);
    }
    mx = block_max(mx, scratch);  // its barriers also publish sc[]
  } else {
    for (int kk = tid; kk < nk; kk += kThreads) {
      const T* kr = ring_k + (((j0 + kk) % a.ring) * H + h) * int64_t(hd);
      float acc = 0.f;
#pragma unroll 8
      for (int c = 0; c < hd; c += VEC) {
        float kv[VEC];
        load_pack<T, VEC>(kr + c, kv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc = fmaf(qs[c + e], kv[e], acc);
      }
      sc[kk] = acc;
    }
    __syncthreads();
    for (int kk = 0; kk < nk; ++kk) mx = fmaxf(mx, sc[kk]);
    __syncthreads();  // everyone has read the raw scores
  }
  float ls = 0.f;
  for (int kk = tid; kk < nk; kk += kThreads) {
    const float pj = exp2f(sc[kk] - mx);
    sc[kk] = pj;
    ls += pj;
  }
  const float inv = 1.f / block_sum(ls, scratch);  // block_sum also publishes sc[]

  if (grp < groups) {
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
#pragma unroll 4
    for (int kk = grp; kk < nk; kk += groups) {
      const T* vr = ring_v + (((j0 + kk) % a.ring) * H + h) * int64_t(hd) + ch * VEC;
      float vv[VEC];
      load_pack<T, VEC>(vr, vv);
      const float pj = sc[kk];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fmaf(pj, vv[e], acc[e]);
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) red[grp * hd + ch * VEC + e] = acc[e];
  }
  __syncthreads();

  T* out = static_cast<T*>(a.out) + i * a.ld_out + int64_t(h) * hd;
  for (int d = tid; d < hd; d += kThreads) {
    float o = 0.f;
    for (int g = 0; g < groups; ++g) o += red[g * hd + d];
    out[d] = from_f<T>(o * inv);
  }
}

}  // namespace

cudaError_t launch_swa_decode(const ops::SwaDecodeParams& p, cudaStream_t stream) {
  const ops::SlidingWindowShape& s = p.shape;
  if (p.n_tokens <= 0) return cudaSuccess;
  if (s.head_dim <= 0 || s.head_dim > kMaxHeadDim || s.rotary_dim < 0 || s.rotary_dim % 2 ||
      s.rotary_dim > s.head_dim || s.window < 0 || s.ring_size < s.window + 1 || s.heads <= 0 ||
      s.heads > 65535)
    return cudaErrorInvalidValue;
  const int smem = int(sizeof(float)) * (s.head_dim + s.window + 1);
  if (smem > 32 * 1024) return cudaErrorInvalidValue;
  // the coalesced score phase adds [window + 1][chunks per row, odd] partial sums
  const int vec16 = 16 / dtype_size(p.dtype);
  const int smem_c = smem + int(sizeof(float)) * (s.window + 1) * ((s.head_dim / vec16) | 1);
  const char* env = std::getenv("BASED_CORE_SWA_DECODE");
  const bool coalesced = smem_c <= 40 * 1024 && !(env && std::strcmp(env, "rows") == 0);
  // The heads of one row run next to each other: their ring rows ([slot][position][head][hd])
  // share DRAM pages, where rows-first order had concurrent CTAs read one head's 2-3 sectors
  // per position from the pages of many slots. (grid.y holds at most 65535 rows.)
  const char* genv = std::getenv("BASED_CORE_SWA_GRID");
  const int heads_inner = p.n_tokens <= 65535 && !(genv && std::strcmp(genv, "rows-inner") == 0);
  SwaDecodeArgs a{p.qkv, p.ld_qkv, p.out, p.ld_out, p.slots, p.positions, p.ring_k, p.ring_v,
                  s.heads, s.head_dim, s.rotary_dim, s.window, s.ring_size, s.rope_base,
                  s.scale * kLog2e, heads_inner};
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid = heads_inner ? dim3(unsigned(s.heads), unsigned(p.n_tokens)) : dim3(unsigned(p.n_tokens), unsigned(s.heads));
    constexpr int vec = int(16 / sizeof(T));
    if (s.head_dim % vec == 0 && aligned_to(p.ring_k, 16) && aligned_to(p.ring_v, 16))
      return coalesced ? launch_pdl(swa_decode_kernel<T, vec, true>, grid, kThreads, smem_c, stream, a)
                       : launch_pdl(swa_decode_kernel<T, vec, false>, grid, kThreads, smem, stream, a);
    return launch_pdl(swa_decode_kernel<T, 1, false>, grid, kThreads, smem, stream, a);
  });
}

}  // namespace cuda
}  // namespace based_core
