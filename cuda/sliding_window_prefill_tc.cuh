// sliding_window_prefill_tc.cuh: the tensor-core sliding-window prefill (bf16 / fp16, head
// dims 64, 112, 128, RoPE over the whole head), flash-attention-2 style with mma.sync
// m16n8k16. Included by sliding_window_prefill.cu, which keeps the CUDA-core kernel for fp32
// and the other shapes.
//
// One CTA of NW warps per (16*NW-query tile, head); warp w owns tile rows 16w..16w+15 (the
// launcher uses NW = 8: on the H100, 128-query tiles beat 64-query ones at every head dim
// here, as each key row is loaded and rotated for 128 queries instead of 64). Key
// rows are indexed relative to kbeg = p0 - W (p0: position of the tile's first query), so the
// band of tile row r is the relative rows [r, r + W] and warp w needs the 16-row chunks
// w .. w + (W+15)/16: always chunk-aligned, whatever W is. The chunks of all warps cover the
// relative rows [0, 16 * ((W+15)/16 + NW)), loaded into shared memory in stages of at most
// `stage_chunks` chunks (one stage for W <= 128 at every head dim here):
//   - K and V rows by cp.async (zero-filled outside the keys of the tile): rows of earlier
//     calls come from the ring (post-RoPE already), rows of this call from qkv, each thread
//     walking one 16-byte column with a fixed row step;
//   - the qkv K rows are then rotated in place (fp32, rounded to T, as the ring stores them),
//     8 consecutive rows of one chunk pair per 8 lanes (conflict-free 16-byte accesses).
// Q goes straight from global memory into the warp's mma A fragments: a lane holds the
// columns == 2t, 2t+1 (mod 8) of its two rows, so both halves of every rotate-half pair are
// in the same lane; q is rotated in fp32, multiplied by scale*log2(e), rounded to T.
// A warp walks its chunks in groups of up to 3 (sizes balanced, each size a separate
// unrolled body so the mma chains interleave): S = Q K^T (2 n8 tiles per chunk), masked only
// on band-edge chunks, online softmax in fp32 (log2 domain), P rounded to T and fed to P V
// from the S accumulators (the FA2 register layout identity), V B fragments by
// ldmatrix.trans. Shared rows are swizzled (hd 64/128: 16-byte chunk c of row r stored at
// c ^ (r & 7)) or padded (hd 112: 120-element rows), so ldmatrix is conflict-free.
//
// RoPE angles are formed exactly as SPEC 2.2 says (fp32 pos * inv_freq); inside this kernel
// their sin/cos come from a two-constant reduction mod 2 pi plus the hardware sin/cos
// (|error| < 1e-6, far below the bf16/fp16 rounding that follows). Ring rows, which the
// decode kernel must reproduce bit for bit, are written with the exact sincosf path
// (rope_pair_exact, identical to rope_value) when `fuse_ring` is set: the launcher sets it
// only when no ring row this call reads is one it writes.
#pragma once

#include <cstdint>

#include "kernels.h"
#include "mma_ptx.cuh"
#include "sliding_window_common.cuh"

namespace based_core {
namespace cuda {
namespace swatc {

/// Shared-memory row layout of K and V tiles of head dim HD (elements of 2 bytes).
template <int HD> struct Layout {
  static constexpr int kChunks = HD / 8;              // 16-byte chunks per row
  static constexpr bool kSwz = (kChunks % 8) == 0;    // hd 64, 128: XOR swizzle
  static constexpr int kLd = kSwz ? HD : HD + 8;      // hd 112: padded to 120 (15 chunks)
  /// element offset of 16-byte chunk c of row r
  __device__ __forceinline__ static int off(int r, int c) {
    return r * kLd + ((kSwz ? (c ^ (r & 7)) : c) << 3);
  }
};

/// Shared-memory bytes of a stage of `chunks` 16-row chunks (K and V).
template <int HD> constexpr int stage_bytes(int chunks) { return 2 * chunks * 16 * Layout<HD>::kLd * 2; }
/// Most chunks per stage: K and V in <= 200 KB (50 chunks at hd 64, 26 at hd 112, 25 at hd 128).
template <int HD> constexpr int max_stage_chunks() { return (200 * 1024) / stage_bytes<HD>(1); }

struct Args {
  const void* qkv;
  int64_t ld_qkv;
  void* out;
  int64_t ld_out;
  int64_t n_tokens, start_pos;
  void* ring_k;
  void* ring_v;
  int heads, window, ring;
  float base, scale_log2;
  int n_tiles;        // query tiles per head
  int stage_chunks;   // 16-row K/V chunks in shared memory at once
  int fuse_ring;      // 1: this kernel writes the ring rows of tokens >= ring_first_t
  int64_t ring_first_t;
};

// ---- PTX wrappers (more in mma_ptx.cuh) ----
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/// The two T values of a 32-bit word as fp32 (low half first).
template <class T> __device__ __forceinline__ float2 unpack2(uint32_t u);
template <> __device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t u) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
template <> __device__ __forceinline__ float2 unpack2<__half>(uint32_t u) {
  return __half22float2(*reinterpret_cast<const __half2*>(&u));
}

/// sin and cos of an fp32 angle x (|x| up to ~1e6): x reduced mod 2 pi with two constants,
/// then the hardware approximations on [-pi, pi]; absolute error below 1e-6.
__device__ __forceinline__ void fast_sincos(float x, float& s, float& c) {
  const float k = rintf(x * 0.159154943091895336f);   // x / (2 pi)
  float r = fmaf(-k, 6.28318548202514648f, x);        // 2 pi rounded to fp32
  r = fmaf(-k, -1.74845553146951715e-7f, r);          // 2 pi - that
  __sincosf(r, &s, &c);
}

/// exp2 on the MUFU (ftz; inputs are <= 0 or -inf here).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Two rotate-half pairs (low halves in a, high halves in b, as packed T pairs) rotated at
/// pos by the angles pos * f0 and pos * f1, rounded back to T.
template <class T>
__device__ __forceinline__ void rope2(uint32_t a, uint32_t b, float pos, float f0, float f1, uint32_t& ra,
                                      uint32_t& rb) {
  const float2 xa = unpack2<T>(a), xb = unpack2<T>(b);
  float s0, c0, s1, c1;
  fast_sincos(__fmul_rn(pos, f0), s0, c0);
  fast_sincos(__fmul_rn(pos, f1), s1, c1);
  ra = pack2<T>(xa.x * c0 - xb.x * s0, xa.y * c1 - xb.y * s1);
  rb = pack2<T>(xb.x * c0 + xa.x * s0, xb.y * c1 + xa.y * s1);
}

/// Per-warp state of the online softmax: rows r0 (elements 0, 1) and r0 + 8 (2, 3).
template <int HD> struct WarpAcc {
  float o[HD / 8][4];
  float m[2], l[2];
};

/// One group of N 16-key chunks (shared rows rb.., relative key rows jc..) for the warp's 16
/// query rows (tile rows wr..wr+15; this lane's r0 and r0 + 8): S = Q K^T, band mask,
/// online softmax, O += P V.
template <class T, int HD, int N>
__device__ __forceinline__ void attend_group(const T* Ks, const T* Vs, int rb, int jc,
                                             const uint32_t (&qa)[HD / 16][4], WarpAcc<HD>& acc, int lane, int wr,
                                             int r0, int W, int clip) {
  using L = Layout<HD>;
  constexpr int kK = HD / 16;
  const int t4 = lane & 3;
  float s[N][2][4];
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) s[i][nt][0] = s[i][nt][1] = s[i][nt][2] = s[i][nt][3] = 0.f;
  const int krow = ((lane >> 4) << 3) + (lane & 7), kcol = (lane >> 3) & 1;
#pragma unroll
  for (int kk = 0; kk < kK; ++kk) {
    uint32_t b[N][4];
#pragma unroll
    for (int i = 0; i < N; ++i) ldsm4(Ks + L::off(rb + 16 * i + krow, 2 * kk + kcol), b[i]);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      mma<T>(s[i][0], qa[kk], b[i][0], b[i][1]);
      mma<T>(s[i][1], qa[kk], b[i][2], b[i][3]);
    }
  }
  // band edges: relative key jr allowed for tile row r iff max(r, clip) <= jr <= r + W
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int j0 = jc + 16 * i;
    if (!(j0 >= wr + 15 && j0 >= clip && j0 + 15 <= wr + W)) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = r0 + ((e >> 1) << 3), jr = j0 + nt * 8 + 2 * t4 + (e & 1);
          if (jr < r || jr < clip || jr > r + W) s[i][nt][e] = -INFINITY;
        }
    }
  }
  float mx[2] = {acc.m[0], acc.m[1]};
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[i][nt][0], s[i][nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[i][nt][2], s[i][nt][3]));
    }
  float mu[2], corr[2];
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    mx[rh] = fmaxf(mx[rh], __shfl_xor_sync(0xffffffffu, mx[rh], 1));
    mx[rh] = fmaxf(mx[rh], __shfl_xor_sync(0xffffffffu, mx[rh], 2));
    mu[rh] = mx[rh] == -INFINITY ? 0.f : mx[rh];
    corr[rh] = ex2(acc.m[rh] - mu[rh]);
    acc.m[rh] = mx[rh];
    acc.l[rh] *= corr[rh];
  }
#pragma unroll
  for (int nn = 0; nn < 2 * kK; ++nn) {
    acc.o[nn][0] *= corr[0], acc.o[nn][1] *= corr[0];
    acc.o[nn][2] *= corr[1], acc.o[nn][3] *= corr[1];
  }
  uint32_t pa[N][4];
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const float e0 = ex2(s[i][nt][0] - mu[0]), e1 = ex2(s[i][nt][1] - mu[0]);
      const float e2 = ex2(s[i][nt][2] - mu[1]), e3 = ex2(s[i][nt][3] - mu[1]);
      acc.l[0] += e0 + e1;
      acc.l[1] += e2 + e3;
      pa[i][2 * nt] = pack2<T>(e0, e1);
      pa[i][2 * nt + 1] = pack2<T>(e2, e3);
    }
  const int vrow = (((lane >> 3) & 1) << 3) + (lane & 7), vcol = lane >> 4;
#pragma unroll
  for (int dd = 0; dd < kK; ++dd) {
    uint32_t b[N][4];
#pragma unroll
    for (int i = 0; i < N; ++i) ldsm4t(Vs + L::off(rb + 16 * i + vrow, 2 * dd + vcol), b[i]);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      mma<T>(acc.o[2 * dd], pa[i], b[i][0], b[i][1]);
      mma<T>(acc.o[2 * dd + 1], pa[i], b[i][2], b[i][3]);
    }
  }
}

/// A warp's chunks [ca, cb) (chunk ca at shared row rb, the others following; chunk c at
/// relative key rows 16c..), in groups of <= 3 of balanced sizes.
template <class T, int HD>
__device__ __forceinline__ void attend_chunks(const T* Ks, const T* Vs, int ca, int cb, int rb,
                                              const uint32_t (&qa)[HD / 16][4], WarpAcc<HD>& acc, int lane, int wr,
                                              int r0, int W, int clip) {
  if (cb <= ca) return;
  const int len = cb - ca, ng = (len + 2) / 3, base = len / ng, extra = len - base * ng;
  int c = ca;
#pragma unroll 1
  for (int gi = 0; gi < ng; ++gi) {
    const int n = base + (gi < extra ? 1 : 0);
    switch (n) {
      case 1: attend_group<T, HD, 1>(Ks, Vs, rb, 16 * c, qa, acc, lane, wr, r0, W, clip); break;
      case 2: attend_group<T, HD, 2>(Ks, Vs, rb, 16 * c, qa, acc, lane, wr, r0, W, clip); break;
      default: attend_group<T, HD, 3>(Ks, Vs, rb, 16 * c, qa, acc, lane, wr, r0, W, clip); break;
    }
    c += n;
    rb += 16 * n;
  }
}

/// Q A fragments from a lane's raw columns x[rh][m][e] (rows r0 + 8 rh at positions pos[rh],
/// column 8m + 2 t4 + e): rotate-half pairs (m, m + kC/2) rotated in fp32, times scale, to T.
template <class T, int HD>
__device__ __forceinline__ void q_fragments(float (&x)[2][HD / 8][2], const float (&pos)[2], const float* invf,
                                            int t4, float scale, uint32_t (&qa)[HD / 16][4]) {
  constexpr int kC = HD / 8, kH = kC / 2;
#pragma unroll
  for (int rh = 0; rh < 2; ++rh)
#pragma unroll
    for (int m = 0; m < kH; ++m) {
      const float2 f = *reinterpret_cast<const float2*>(invf + 8 * m + 2 * t4);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float sn, cs;
        fast_sincos(__fmul_rn(pos[rh], e ? f.y : f.x), sn, cs);
        const float lo = x[rh][m][e], hi = x[rh][m + kH][e];
        x[rh][m][e] = lo * cs - hi * sn;
        x[rh][m + kH][e] = hi * cs + lo * sn;
      }
    }
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int rh = e & 1, m = 2 * kk + (e >> 1);
      qa[kk][e] = pack2<T>(x[rh][m][0] * scale, x[rh][m][1] * scale);
    }
}

/// Rotates, in place, the shared K rows [ra, rb), row i at position pos0 + i. 8 lanes = 8
/// consecutive rows of one chunk pair (conflict-free 16-byte accesses).
template <class T, int HD, int kThreads>
__device__ __forceinline__ void rotate_rows(T* Ks, int ra, int rb, int64_t pos0, const float* invf,
                                            int tid) {
  using L = Layout<HD>;
  constexpr int kH = HD / 16;
  const int n = rb > ra ? ((rb - ra + 7) >> 3) * 8 * kH : 0;
  for (int idx = tid; idx < n; idx += kThreads) {
    const int g8 = idx >> 3, m = g8 % kH, i = ra + (g8 / kH) * 8 + (idx & 7);
    if (i >= rb) continue;
    const float pos = float(pos0 + i);
    uint4* pa = reinterpret_cast<uint4*>(Ks + L::off(i, m));
    uint4* pb = reinterpret_cast<uint4*>(Ks + L::off(i, m + kH));
    const uint4 ua = *pa, ub = *pb;
    const float4 fa = *reinterpret_cast<const float4*>(invf + 8 * m);
    const float4 fb = *reinterpret_cast<const float4*>(invf + 8 * m + 4);
    uint4 va, vb;
    rope2<T>(ua.x, ub.x, pos, fa.x, fa.y, va.x, vb.x);
    rope2<T>(ua.y, ub.y, pos, fa.z, fa.w, va.y, vb.y);
    rope2<T>(ua.z, ub.z, pos, fb.x, fb.y, va.z, vb.z);
    rope2<T>(ua.w, ub.w, pos, fb.z, fb.w, va.w, vb.w);
    *pa = va;
    *pb = vb;
  }
}

/// o / l of the warp's rows r0, r0 + 8 (tile rows; those < nq) to out rows q0 + r.
template <class T, int HD>
__device__ __forceinline__ void store_out(const WarpAcc<HD>& acc, T* out, int64_t ld_out, int64_t q0, int r0, int nq,
                                          int h, int t4) {
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    float l = acc.l[rh];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int r = r0 + rh * 8;
    if (r < nq) {
      const float inv = 1.f / l;
      T* dst = out + (q0 + r) * ld_out + int64_t(h) * HD + 2 * t4;
#pragma unroll
      for (int nn = 0; nn < HD / 8; ++nn)
        *reinterpret_cast<uint32_t*>(dst + 8 * nn) = pack2<T>(acc.o[nn][2 * rh] * inv, acc.o[nn][2 * rh + 1] * inv);
    }
  }
}

/// Ring rows (p % R) <- post-RoPE k_p and v_p of tokens [t_lo, t_hi) of head h, with the exact
/// RoPE of the decode kernel.
template <class T, int HD, int kThreads>
__device__ __forceinline__ void write_ring(const Args& a, const float* invf, int64_t t_lo, int64_t t_hi, int h,
                                           int tid) {
  const int nt = int(t_hi - t_lo);
  if (nt <= 0) return;
  const T* qkv = static_cast<const T*>(a.qkv);
  T* rk = static_cast<T*>(a.ring_k);
  T* rv = static_cast<T*>(a.ring_v);
  constexpr int kHalf = HD / 2;
  const int64_t koff = int64_t(a.heads + h) * HD, voff = int64_t(2 * a.heads + h) * HD;
  for (int idx = tid; idx < nt * kHalf; idx += kThreads) {
    const int tt = idx / kHalf, d = idx - tt * kHalf;
    const int64_t t = t_lo + tt, pos = a.start_pos + t;
    const T* row = qkv + t * a.ld_qkv;
    const int64_t base = ((pos % a.ring) * a.heads + h) * int64_t(HD);
    float lo, hi;
    rope_pair_exact(row + koff, d, kHalf, invf[d], pos, lo, hi);
    rk[base + d] = from_f<T>(lo);
    rk[base + d + kHalf] = from_f<T>(hi);
    rv[base + d] = row[voff + d];
    rv[base + d + kHalf] = row[voff + d + kHalf];
  }
}

/// cp.async of one K or V 16-byte column per lane over relative key rows [j0, j1) (position
/// kpos0 + jr) into shared rows jr - j0; positions outside
/// [0, last_pos] zero-filled; rows before start_pos from the ring, the others from qkv.
template <class T, int HD, int kThreads>
__device__ __forceinline__ void load_kv_rows(const Args& a, T* dst, const T* ring, int64_t col_off, int h,
                                             int64_t kpos0, int j0, int j1, int tid) {
  using L = Layout<HD>;
  constexpr int kC = HD / 8, kCP = kC <= 8 ? 8 : 16, kRP = kThreads / kCP;
  static_assert(kRP % 8 == 0, "the swizzle of a load lane's rows must not change");
  const int lc = tid % kCP, lr = tid / kCP;
  if (lc >= kC) return;
  const T* qkv = static_cast<const T*>(a.qkv);
  const int64_t last_pos = a.start_pos + a.n_tokens - 1;
  int jr = j0 + lr;
  T* d = dst + L::off(lr, lc);  // + kRP rows per step (the swizzle stays)
  int64_t pos = kpos0 + jr;
  int64_t qi = (pos - a.start_pos) * a.ld_qkv + col_off + lc * 8;
  for (; jr < j1; jr += kRP, pos += kRP, qi += kRP * a.ld_qkv, d += kRP * L::kLd) {
    const T* src = qkv;
    bool valid = false;
    if (pos >= a.start_pos && pos <= last_pos) {
      src = qkv + qi, valid = true;
    } else if (pos >= 0 && pos < a.start_pos) {
      src = ring + (pos % a.ring * a.heads + h) * int64_t(HD) + lc * 8, valid = true;
    }
    cp_async16(d, src, valid);
  }
}

// computes: o_t = sum_{j=max(0,p-W)}^{p} softmax_j(q_p . k_j * scale) v_j for the (up to)
// 16*NW queries t of this CTA's tile and head (p = start_pos + t), q and k rotated at their
// absolute positions (SPEC 2.2); with fuse_ring, also ring row (p % R) <- post-RoPE k_p, v_p
// for this tile's tokens t >= ring_first_t. Keys in stages of a.stage_chunks chunks.
template <class T, int HD, int NW>
__global__ void __launch_bounds__(NW * 32, (HD <= 64 ? 16 : 8) / NW) swa_prefill_tc_kernel(Args a) {
  using L = Layout<HD>;
  constexpr int kThreads = NW * 32, kBQ = NW * 16;
  constexpr int kC = L::kChunks;  // 16-byte chunks per row (8, 14, 16)
  constexpr int kK = HD / 16;     // k16 steps over the head dim, n16 blocks of P V
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(16) float invf[HD / 2];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + a.stage_chunks * 16 * L::kLd;

  const T* qkv = static_cast<const T*>(a.qkv);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int H = a.heads;
  // the last tiles (the ring writers) are scheduled first
  const int tile = a.n_tiles - 1 - int(blockIdx.x / unsigned(H));
  const int h = int(blockIdx.x % unsigned(H));
  const int64_t q0 = int64_t(tile) * kBQ;
  const int nq = int(a.n_tokens - q0 < kBQ ? a.n_tokens - q0 : kBQ);
  const int W = a.window;
  const int64_t p0 = a.start_pos + q0;
  const int64_t kbeg = p0 - W;                       // position of relative key row 0
  const int clip = kbeg < 0 ? int(-kbeg) : 0;        // relative rows < clip: positions < 0
  const int nch = (W + 15) / 16 + NW;                // chunks of all warps
  const int wc = (W + 15) / 16 + 1;                  // chunks of one warp
  const int64_t koff = int64_t(H + h) * HD, voff = int64_t(2 * H + h) * HD;

  for (int i = tid; i < HD / 2; i += kThreads) invf[i] = rope_inv_freq(i, HD, a.base);

  // relative rows [16 c0, 16 c1) into the stage buffers: K (one cp.async group), V (one)
  auto issue_loads = [&](int c0, int c1) {
    load_kv_rows<T, HD, kThreads>(a, Ks, static_cast<const T*>(a.ring_k), koff, h, kbeg, 16 * c0, 16 * c1, tid);
    cp_async_commit();
    load_kv_rows<T, HD, kThreads>(a, Vs, static_cast<const T*>(a.ring_v), voff, h, kbeg, 16 * c0, 16 * c1, tid);
    cp_async_commit();
  };
  issue_loads(0, a.stage_chunks < nch ? a.stage_chunks : nch);
  __syncthreads();  // invf

  // ---- Q fragments: rows r0 = 16 warp + g and r0 + 8; lane holds columns 8m + 2 t4 + {0, 1}
  uint32_t qa[kK][4];
  {
    float x[2][kC][2];
    float pos[2];
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int r = warp * 16 + g + rh * 8;
      const bool ok = r < nq;
      const T* row = qkv + (q0 + (ok ? r : 0)) * a.ld_qkv + int64_t(h) * HD + 2 * t4;
#pragma unroll
      for (int m = 0; m < kC; ++m) {
        const uint32_t u = ok ? __ldg(reinterpret_cast<const unsigned int*>(row + 8 * m)) : 0u;
        const float2 f = unpack2<T>(u);
        x[rh][m][0] = f.x, x[rh][m][1] = f.y;
      }
      pos[rh] = float(p0 + r);
    }
    q_fragments<T, HD>(x, pos, invf, t4, a.scale_log2, qa);
  }

  WarpAcc<HD> acc;
#pragma unroll
  for (int n = 0; n < 2 * kK; ++n) acc.o[n][0] = acc.o[n][1] = acc.o[n][2] = acc.o[n][3] = 0.f;
  acc.m[0] = acc.m[1] = -INFINITY;
  acc.l[0] = acc.l[1] = 0.f;
  const int wr = warp * 16, r0 = wr + g;  // this warp's first tile row, this lane's first row
  const bool active = wr < nq;
  const int wc0 = warp > clip / 16 ? warp : clip / 16, wc1 = warp + wc;  // this warp's chunks

#pragma unroll 1
  for (int s0 = 0; s0 < nch; s0 += a.stage_chunks) {
    const int s1 = s0 + a.stage_chunks < nch ? s0 + a.stage_chunks : nch;
    if (s0 > 0) {
      __syncthreads();  // every warp is done with the previous stage
      issue_loads(s0, s1);
    }
    cp_async_wait<1>();  // this thread's K copies have landed
    __syncthreads();
    {  // rotate this stage's rows of positions in [start_pos, last position]
      const int64_t ps = kbeg + 16 * s0;  // position of the stage's first row
      const int64_t lo = a.start_pos > ps ? a.start_pos - ps : 0;
      const int64_t hi = W + nq - 16 * s0;  // rows of positions <= p0 + nq - 1
      const int rb = int(hi < 16 * (s1 - s0) ? hi : 16 * (s1 - s0));
      rotate_rows<T, HD, kThreads>(Ks, int(lo < rb ? lo : rb), rb, ps, invf, tid);
    }
    cp_async_wait<0>();
    __syncthreads();

    const int ca = wc0 > s0 ? wc0 : s0, cb = wc1 < s1 ? wc1 : s1;
    if (active) attend_chunks<T, HD>(Ks, Vs, ca, cb, (ca - s0) * 16, qa, acc, lane, wr, r0, W, clip);
  }

  if (active) store_out<T, HD>(acc, static_cast<T*>(a.out), a.ld_out, q0, r0, nq, h, t4);
  if (a.fuse_ring) write_ring<T, HD, kThreads>(a, invf, a.ring_first_t > q0 ? a.ring_first_t : q0, q0 + nq, h, tid);
}

}  // namespace swatc
}  // namespace cuda
}  // namespace based_core
