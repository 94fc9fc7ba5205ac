// linear_attention_prefill_tc.cuh: building blocks of the tensor-core chunked LA prefill
// (linear_attention_prefill_tc.cu, which explains the algorithm): constants and the shared-
// memory layout, the kernel arguments, mma.sync / ldmatrix / cp.async wrappers, the exact hi/lo
// split, and the per-chunk generation units (phi_q, phi_k^T hi/lo, the intra-chunk kappa block)
// plus the chunk loads. Included by that one file.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels.h"
#include "linear_attention_common.cuh"
#include "linear_attention_prefill_plan.h"
#include "mma_ptx.cuh"

namespace based_core {
namespace cuda {
namespace latc {

using namespace lasym;

constexpr int kC = 64;                       // tokens per chunk
constexpr int kNI = kFeat / 8;               // 20 feature n8 tiles
constexpr int kLdPhq = 168, kLdPhk = 72, kLdA = 72, kLdKT = 68;  // smem row strides (elements)
constexpr int kFragFloats = kNI * 32 * 4;    // one warp's state fragment (2560 floats)
constexpr int kMinWarps = 4, kMaxWarps = 8;  // head_dim 64 .. 128
// generation units: 0..3 kappa row blocks, 4..5 phi_q token halves, 6..25 phi_k feature blocks
constexpr int kUnitQ = 4, kUnitK = 6, kUnits = 26;

/// Workspace floats per (segment, sequence-head row): the warps' fragments, then z (160, padded
/// to 256). The wgmma kernel keeps the same fragment layout, so both share the scan kernel.
__host__ __device__ constexpr int64_t ws_row_floats(int nw) { return int64_t(nw) * kFragFloats + 256; }

// shared-memory layout (bytes)
constexpr int kOffPhkHi = 0;                       // phi_k^T hi [160][72]
constexpr int kOffPhkLo = kOffPhkHi + kFeat * kLdPhk * 2;
constexpr int kOffPhq = kOffPhkLo + kFeat * kLdPhk * 2;  // phi_q [64][168]
constexpr int kOffA = kOffPhq + kC * kLdPhq * 2;   // kappa [64][72]
constexpr int kOffQ = kOffA + kC * kLdA * 2;       // raw q [64][16] (16-byte halves swizzled)
constexpr int kOffK = kOffQ + kC * 16 * 2;         // raw k [64][16]
constexpr int kOffKT = kOffK + kC * 16 * 2;        // fp32 k^T [18][68]: rows 0..15 k, 16 valid, 17 zero
constexpr int kOffZ = kOffKT + 18 * kLdKT * 4;     // [2][160] fp32 (z before / after the chunk)
constexpr int kOffDen = kOffZ + 2 * kFeat * 4;     // [2][64] fp32 (phi_q.z, intra-chunk row sums)
constexpr int kOffTab = kOffDen + 2 * kC * 4;      // [160] int: phi_k feature r = kT[i] * kT[j]
constexpr int kOffRows = kOffTab + kFeat * 4;      // [160] int4: state rows of feature r (load/store)
constexpr int kOffV = kOffRows + kFeat * 16;       // [2][64][hd + 8]
inline int smem_bytes(int nt) { return kOffV + 2 * kC * (16 * nt + 8) * 2; }
static_assert(kOffV % 16 == 0 && kOffKT % 16 == 0 && kOffZ % 16 == 0, "alignment");

/// Arguments of the chunked prefill kernels: this mma.sync one and the wgmma one
/// (linear_attention_prefill_wg.cu), filled by chunk_args() plus the launcher's plan.
struct ChunkArgs {
  const void* q;
  const void* k;
  const void* v;
  int64_t ld_q, ld_k, ld_v;
  void* y;
  int64_t ld_y;
  int64_t n_tokens, seg_len;
  int64_t ss_q, ss_k, ss_v, ss_y;  // sequence strides (elements); sequence = blockIdx.z
  int n_seg;
  float* S;   // [n_seqs][H][D][hd]
  float* z;   // [n_seqs][H][D]
  int D;      // state rows: 273 (full layout) or 153 (symmetric, ops.h)
  bool sym;   // symmetric layout: rows 0..152 are exactly the kernel's features 0..152
  float* ws;  // [n_seg][n_seqs * H][ws_row_floats(nw)] (segmented runs only)
  int heads, hd;
  int nw;     // warps per CTA: head_dim / 16 here, 4 or 8 for the wgmma kernel
  float eps;
  unsigned units[kMaxWarps];  // generation units of each warp (bit u)
};

/// The arguments every launcher sets the same way (the plan's n_seg, seg_len, ws, the warp
/// count and the units are the launcher's).
inline ChunkArgs chunk_args(const ops::LaPrefillParams& p) {
  const ops::LinearAttentionShape& sh = p.shape;
  ChunkArgs a{};
  a.q = p.q, a.k = p.k, a.v = p.v, a.ld_q = p.ld_q, a.ld_k = p.ld_k, a.ld_v = p.ld_v;
  a.y = p.y, a.ld_y = p.ld_y, a.n_tokens = p.n_tokens;
  a.ss_q = p.seq_stride_q, a.ss_k = p.seq_stride_k, a.ss_v = p.seq_stride_v, a.ss_y = p.seq_stride_y;
  a.S = p.state_s, a.z = p.state_z, a.D = int(sh.state_rows()), a.sym = sh.symmetric;
  a.heads = sh.heads, a.hd = sh.head_dim, a.eps = sh.eps;
  return a;
}

/// Turns ws[s] (segment s's state contribution, s < n_seg - 1) into segment s's prefix state
/// (the incoming state plus segments 0..s-1) for n_seqs sequences (linear_attention_prefill_tc.cu).
cudaError_t launch_la_chunk_scan(const ChunkArgs& a, int64_t n_seqs, cudaStream_t stream);

/// The launch sequence both tensor-core prefills share. Plans the segments (plan_segments:
/// `per_sm` resident CTAs, `seg_row_bytes` of workspace per segment); with one segment runs the
/// output pass alone; with more, first a delta pass over segments 0..n_seg-2 (each one's state
/// contribution into the workspace) and the scan that makes those each segment's start state.
/// `assign(delta, units)` picks the warps' generation units for a pass; `pass(args, grid,
/// std::bool_constant<DELTA>{}, after_scan)` launches it (after_scan: the scan kernel precedes
/// it, so it may be launched with PDL; the scan itself always is, behind the delta pass).
template <class Assign, class Pass>
cudaError_t launch_segmented(ChunkArgs a, const ops::LaPrefillParams& p, int per_sm, std::size_t seg_row_bytes,
                             void* workspace, std::size_t workspace_bytes, Assign&& assign, Pass&& pass,
                             cudaStream_t stream) {
  const int64_t rows = int64_t(p.shape.heads) * p.n_seqs;
  const SegmentPlan plan = plan_segments(p.n_tokens, kC, rows, per_sm, workspace, workspace_bytes, seg_row_bytes);
  a.seg_len = plan.seg_len;
  a.n_seg = plan.n_seg;
  a.ws = static_cast<float*>(workspace);
  const unsigned heads = unsigned(p.shape.heads), seqs = unsigned(p.n_seqs);
  if (a.n_seg > 1) {
    ChunkArgs d = a;
    assign(true, d.units);
    cudaError_t e = pass(d, dim3(unsigned(a.n_seg - 1), heads, seqs), std::true_type{}, false);
    if (e != cudaSuccess) return e;
    e = launch_la_chunk_scan(a, p.n_seqs, stream);
    if (e != cudaSuccess) return e;
  }
  assign(false, a.units);
  return pass(a, dim3(unsigned(a.n_seg), heads, seqs), std::false_type{}, a.n_seg > 1);
}

// ---- PTX wrappers (more in mma_ptx.cuh) ----
__device__ __forceinline__ void ldsm2(const void* p, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(saddr(p))
               : "memory");
}

__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/// Exact split of two products of T values (p = hi + lo, both representable in T).
template <class T> __device__ __forceinline__ void split2(float p0, float p1, uint32_t& hi, uint32_t& lo);
template <> __device__ __forceinline__ void split2<__nv_bfloat16>(float p0, float p1, uint32_t& hi, uint32_t& lo) {
  // p has <= 16 significant bits: hi = its top 8 (truncated), lo = the rest (<= 8 bits, exact)
  const uint32_t h0 = __float_as_uint(p0) & 0xffff0000u, h1 = __float_as_uint(p1) & 0xffff0000u;
  const float l0 = p0 - __uint_as_float(h0), l1 = p1 - __uint_as_float(h1);
  hi = __byte_perm(h0, h1, 0x7632);
  lo = __byte_perm(__float_as_uint(l0), __float_as_uint(l1), 0x7632);
}
template <> __device__ __forceinline__ void split2<__half>(float p0, float p1, uint32_t& hi, uint32_t& lo) {
  // p has <= 22 significant bits: hi = p rounded to 11, lo = the remainder (<= 11 bits)
  const __half2 hh = __floats2half2_rn(p0, p1);
  const float2 hf = __half22float2(hh);
  const __half2 ll = __floats2half2_rn(p0 - hf.x, p1 - hf.y);
  hi = *reinterpret_cast<const uint32_t*>(&hh);
  lo = *reinterpret_cast<const uint32_t*>(&ll);
}

template <class T> __host__ __device__ constexpr float sigma() { return 1.f; }
template <> __host__ __device__ constexpr float sigma<__half>() { return 1.f / 256.f; }
__device__ __forceinline__ int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

/// 16 T values of a raw q/k row (two 16-byte halves, swizzled by (t >> 2) & 1) as fp32.
template <class T> __device__ __forceinline__ void load_row16(const T* base, int t, float (&x)[16]) {
  const int sw = (t >> 2) & 1;
  const uint4 a = *reinterpret_cast<const uint4*>(base + t * 16 + (sw << 3));
  const uint4 b = *reinterpret_cast<const uint4*>(base + t * 16 + ((sw ^ 1) << 3));
  const T* pa = reinterpret_cast<const T*>(&a);
  const T* pb = reinterpret_cast<const T*>(&b);
#pragma unroll
  for (int i = 0; i < 8; ++i) x[i] = to_f(pa[i]), x[8 + i] = to_f(pb[i]);
}

// ---- generation units ----
struct Smem {
  unsigned char* base;
  int ldv;
  template <class T> __device__ T* phk_hi() const { return reinterpret_cast<T*>(base + kOffPhkHi); }
  template <class T> __device__ T* phk_lo() const { return reinterpret_cast<T*>(base + kOffPhkLo); }
  template <class T> __device__ T* phq() const { return reinterpret_cast<T*>(base + kOffPhq); }
  template <class T> __device__ T* amat() const { return reinterpret_cast<T*>(base + kOffA); }
  template <class T> __device__ T* qraw() const { return reinterpret_cast<T*>(base + kOffQ); }
  template <class T> __device__ T* kraw() const { return reinterpret_cast<T*>(base + kOffK); }
  template <class T> __device__ T* vraw(int b) const { return reinterpret_cast<T*>(base + kOffV) + b * kC * ldv; }
  __device__ float* kt() const { return reinterpret_cast<float*>(base + kOffKT); }
  __device__ float* z(int b) const { return reinterpret_cast<float*>(base + kOffZ) + b * kFeat; }
  /// [0]: phi_q(t).z (previous chunks), [1]: sum_j kappa(q_t, k_j) (this chunk)
  __device__ float* den(int part) const { return reinterpret_cast<float*>(base + kOffDen) + part * kC; }
  __device__ int* tab() const { return reinterpret_cast<int*>(base + kOffTab); }
  /// {ra, rb, load scale, store scale}: feature r = (S[ra] + S[rb]) load scale; stores write
  /// S[ra] = S[rb] = x store scale (store scale 0: padding, not stored)
  __device__ int4* rows() const { return reinterpret_cast<int4*>(base + kOffRows); }
};

template <int R> __device__ __forceinline__ float qfeat(const float (&qs)[16]) {
  if constexpr (R < kPairs) {
    constexpr int i = pair_i(R), j = pair_j(R);
    if constexpr (i == j) return 0.5f * qs[i] * qs[i];
    else return qs[i] * qs[j];
  } else if constexpr (R < kConst) {
    return qs[R - kLin];
  } else if constexpr (R == kConst) {
    return 1.f;
  } else {
    return 0.f;
  }
}

/// Features 8G..8G+7 of one token: stored to its phi_q row; den += phi_q . z (fp32).
template <class T, int G>
__device__ __forceinline__ void qgroup(const float (&qs)[16], T* row, const float* z, float (&dens)[4]) {
  float& den = dens[G & 3];  // four independent chains
  float f[8];
  f[0] = qfeat<8 * G + 0>(qs), f[1] = qfeat<8 * G + 1>(qs), f[2] = qfeat<8 * G + 2>(qs), f[3] = qfeat<8 * G + 3>(qs);
  f[4] = qfeat<8 * G + 4>(qs), f[5] = qfeat<8 * G + 5>(qs), f[6] = qfeat<8 * G + 6>(qs), f[7] = qfeat<8 * G + 7>(qs);
  uint4 u;
  u.x = pack2<T>(f[0], f[1]), u.y = pack2<T>(f[2], f[3]), u.z = pack2<T>(f[4], f[5]), u.w = pack2<T>(f[6], f[7]);
  *reinterpret_cast<uint4*>(row + 8 * G) = u;
  const float4 za = *reinterpret_cast<const float4*>(z + 8 * G);
  const float4 zb = *reinterpret_cast<const float4*>(z + 8 * G + 4);
  den = fmaf(f[0], za.x, den), den = fmaf(f[1], za.y, den), den = fmaf(f[2], za.z, den), den = fmaf(f[3], za.w, den);
  den = fmaf(f[4], zb.x, den), den = fmaf(f[5], zb.y, den), den = fmaf(f[6], zb.z, den), den = fmaf(f[7], zb.w, den);
}

template <class T, int... Gs>
__device__ __forceinline__ void qgroups(const float (&qs)[16], T* row, const float* z, float (&den)[4],
                                        std::integer_sequence<int, Gs...>) {
  (qgroup<T, Gs>(qs, row, z, den), ...);
}

/// phi_q row of token 32 th + lane (all 160 features) and den[0] = phi_q . z.
template <class T> __device__ __forceinline__ void unit_q(const Smem& sm, int zb, int th, int lane) {
  const int t = 32 * th + lane;
  float qs[16];
  load_row16(sm.qraw<T>(), t, qs);
#pragma unroll
  for (int i = 0; i < 16; ++i) qs[i] *= 0.25f;
  float den[4] = {0.f, 0.f, 0.f, 0.f};
  qgroups<T>(qs, sm.phq<T>() + t * kLdPhq, sm.z(zb), den, std::make_integer_sequence<int, kFeat / 8>{});
  sm.den(0)[t] = (den[0] + den[1]) + (den[2] + den[3]);
}

/// phi_k^T rows 8 fb .. 8 fb + 7 (hi and lo, all 64 tokens) and z_after = z_before +
/// sum_t phi_k(t). Lane = (feature 8 fb + (lane & 7), tokens 16 (lane >> 3) .. + 15).
template <class T> __device__ __forceinline__ void unit_k(const Smem& sm, int zb, int fb, int lane) {
  const int r = 8 * fb + (lane & 7), tb = 16 * (lane >> 3);
  const int ij = sm.tab()[r];
  const float* ki = sm.kt() + (ij & 255) * kLdKT + tb;
  const float* kj = sm.kt() + (ij >> 8) * kLdKT + tb;
  T* hi = sm.phk_hi<T>() + r * kLdPhk + tb;
  T* lo = sm.phk_lo<T>() + r * kLdPhk + tb;
  float zs = 0.f;
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int t = 8 * q;
    const float4 a0 = *reinterpret_cast<const float4*>(ki + t), a1 = *reinterpret_cast<const float4*>(ki + t + 4);
    const float4 b0 = *reinterpret_cast<const float4*>(kj + t), b1 = *reinterpret_cast<const float4*>(kj + t + 4);
    const float p[8] = {a0.x * b0.x, a0.y * b0.y, a0.z * b0.z, a0.w * b0.w,
                        a1.x * b1.x, a1.y * b1.y, a1.z * b1.z, a1.w * b1.w};
    uint4 h, l;
    split2<T>(p[0], p[1], h.x, l.x);
    split2<T>(p[2], p[3], h.y, l.y);
    split2<T>(p[4], p[5], h.z, l.z);
    split2<T>(p[6], p[7], h.w, l.w);
    *reinterpret_cast<uint4*>(hi + t) = h;
    *reinterpret_cast<uint4*>(lo + t) = l;
    zs += ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  }
  zs += __shfl_xor_sync(0xffffffffu, zs, 8);
  zs += __shfl_xor_sync(0xffffffffu, zs, 16);
  if (lane < 8 && r < kUsed) sm.z(zb ^ 1)[r] = sm.z(zb)[r] + zs;
}

/// A[t][j] = sigma kappa(q_t, k_j) (j <= t; else 0) for t in [16 mb, 16 mb + 16), j < 16 mb + 16,
/// and den[1][t] = sum_j kappa(q_t, k_j). Columns j >= nvalid need no mask: their v rows are
/// zero and t >= j > nvalid rows are never stored.
template <class T> __device__ __forceinline__ void unit_kappa(const Smem& sm, int mb, int lane) {
  const T* qr = sm.qraw<T>();
  const T* kr = sm.kraw<T>();
  T* A = sm.amat<T>();
  const int g = lane >> 2, tq = lane & 3;
  constexpr float c0 = sigma<T>(), c1 = sigma<T>() * 0.25f, c2 = sigma<T>() / 32.f;  // sigma kappa(dot)
  uint32_t qa[4];
  {
    const int t = 16 * mb + (lane & 7) + 8 * ((lane >> 3) & 1), hh = lane >> 4;
    ldsm4(qr + t * 16 + ((hh ^ ((t >> 2) & 1)) << 3), qa);
  }
  float rs[2] = {0.f, 0.f};  // row sums of rows g, g + 8
#pragma unroll 1
  for (int np = 0; np <= mb; ++np) {
    const int j = 16 * np + 8 * (lane >> 4) + (lane & 7), hh = (lane >> 3) & 1;
    uint32_t kb[4];
    ldsm4(kr + j * 16 + ((hh ^ ((j >> 2) & 1)) << 3), kb);
    float c[2][4] = {};
    mma<T>(c[0], qa, kb[0], kb[1]);
    mma<T>(c[1], qa, kb[2], kb[3]);
    const bool diag = np == mb;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {
        const int tl = g + 8 * e2, jl = 8 * half + 2 * tq;  // within the 16 x 16 block
        float kv[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float d = c[half][2 * e2 + e];
          kv[e] = fmaf(d, fmaf(d, c2, c1), c0);
          if (diag && jl + e > tl) kv[e] = 0.f;
        }
        rs[e2] += kv[0] + kv[1];
        *reinterpret_cast<uint32_t*>(A + (16 * mb + tl) * kLdA + 16 * np + jl) = pack2<T>(kv[0], kv[1]);
      }
  }
#pragma unroll
  for (int e2 = 0; e2 < 2; ++e2) {
    rs[e2] += __shfl_xor_sync(0xffffffffu, rs[e2], 1);
    rs[e2] += __shfl_xor_sync(0xffffffffu, rs[e2], 2);
  }
  if (tq == 0) sm.den(1)[16 * mb + g] = rs[0] * (1.f / c0), sm.den(1)[16 * mb + g + 8] = rs[1] * (1.f / c0);
}

// ---- chunk loads ----
/// cp.async of chunk rows [t0, t0 + 64) of q (unless DELTA), k (raw) and v (buffer b); rows
/// >= nvalid are zero-filled. Thread tid < 128 copies half a q and a k row; every thread copies
/// the 16-byte column chunk vcc of v rows vr0 + 16 i (nthr = 4 hd = 16 x the chunks per row).
/// qb, kb, vb: this sequence's q, k, v.
template <class T, bool DELTA>
__device__ __forceinline__ void raw_issue(const ChunkArgs& a, const T* qb, const T* kb, const T* vb, const Smem& sm,
                                          int b, int h, int64_t t0, int nvalid, int tid, int vcc, int vr0) {
  if (tid < 2 * kC) {
    const int t = tid >> 1, hf = tid & 1, off = t * 16 + ((hf ^ ((t >> 2) & 1)) << 3);
    const int64_t row = t < nvalid ? t0 + t : t0;
    if (!DELTA) cp_async16(sm.qraw<T>() + off, qb + row * a.ld_q + h * 16 + hf * 8, t < nvalid);
    cp_async16(sm.kraw<T>() + off, kb + row * a.ld_k + h * 16 + hf * 8, t < nvalid);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = vr0 + 16 * i;
    const int64_t row = t < nvalid ? t0 + t : t0;
    cp_async16(sm.vraw<T>(b) + t * sm.ldv + vcc * 8, vb + row * a.ld_v + int64_t(h) * a.hd + vcc * 8, t < nvalid);
  }
  cp_async_commit();
}

/// Thread tid < 128 of the fp32 k^T copy: token tid / 2, features 8 (tid & 1) .. + 7.
template <class T>
__device__ __forceinline__ uint4 kt_load(const ChunkArgs& a, const T* kb, int h, int64_t t0, int nvalid, int tid) {
  const int t = tid >> 1;
  if (tid >= 2 * kC || t >= nvalid) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(kb + (t0 + t) * a.ld_k + int64_t(h) * 16 + (tid & 1) * 8));
}
template <class T> __device__ __forceinline__ void kt_store(const Smem& sm, uint4 x, int nvalid, int tid) {
  if (tid < 2 * kC) {
    const T* v = reinterpret_cast<const T*>(&x);
    float* kt = sm.kt() + (tid & 1) * 8 * kLdKT + (tid >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) kt[e * kLdKT] = to_f(v[e]);
  }
  if (tid < kC) sm.kt()[16 * kLdKT + tid] = tid < nvalid ? 1.f : 0.f;
}

}  // namespace latc
}  // namespace cuda
}  // namespace based_core
