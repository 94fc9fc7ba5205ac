// linear_attention_prefill_wg.cu: the Hopper (sm_90a, wgmma) chunked Taylor linear-attention
// prefill for bf16 / fp16 activations, feature dim 16, head_dim 64, 80, .., 128, over a batch of
// sequences (SPEC 2.1 "Equivalent decomposed form" in the exact 160-feature symmetric form of
// linear_attention_common.cuh). Other devices and shapes take linear_attention_prefill_tc.cu
// (mma.sync) or linear_attention_prefill.cu (fp32).
//
// One CTA per (segment of a sequence, head, sequence): NWG = head_dim / 64 rounded up warpgroups
// (4 warps each). Warpgroup g owns value columns 64g..64g+63 (columns >= head_dim are zero
// padding) and keeps its state S^T [64 columns][160 features] as fp32 wgmma accumulators (80
// registers a thread). z [160] is fp32 in shared memory. Per chunk of 64 tokens:
//   1. generation (CUDA cores; units spread over the warps): phi_q [t][160] (bf16x2 products, the
//      query-side scales folded in); phi_k^T [160][t] exactly split into hi + lo 16-bit halves
//      (k_i k_j has 16 / 22 significant bits: hi = k_i k_j rounded, lo = fma(k_i, k_j, -hi)
//      exact, so the state update stays fp32-exact); the chunk's z increment as the Gram matrix
//      K^T [K | valid] on mma.sync (exact products, fp32 sums); each warp's 16-token block of
//      kappa(q_t, k_j) = 1 + s + s^2/2 (j <= t, S = Q K^T on mma.sync) kept in registers as the A
//      operand of step 2; the state S^T (previous chunks, 16-bit) and z (hi + lo) written to
//      S_ext [8 + 64 columns][160] per warpgroup with stmatrix.
//   2. per warpgroup (wgmma, async): O [t][8 + 64] = phi_q S_ext + kappa V_ext, V_ext = [valid | V]
//      (columns 0, 1 of O are then the denominator phi_q(t).z + sum_j kappa(q_t, k_j) and
//      the rest the numerators); S^T += V^T phi_k,hi + V^T phi_k,lo (A = V^T from registers).
//      The next chunk's q, k, v stream in (cp.async) meanwhile.
//   3. y = O / den, staged through shared memory (stmatrix) for 16-byte coalesced stores.
// fp16 keeps the operands that grow with the sequence (S, z, kappa) scaled by 2^-8; the ratio
// cancels it.
//
// Measured on the H100 (B16 H16 L8192 hd64, bench/profile_la_prefill.py): 0.59 ms against 0.95 ms
// for the mma.sync kernel. Tried and slower: a two-phase software pipeline (update(c - 1) and
// readout(c) in flight under the generation units, kappa in shared memory, q / k through
// registers) ran 0.71 ms, and 0.98 ms with cp.async.bulk.prefetch.L2 of the chunk after next;
// branches around wgmma issue (even warp-uniform ones) make ptxas serialize every wgmma (C7515).
//
// Short batches (few sequence-head rows) split the sequence into segments: pass A computes each
// segment's state contribution (update only), a scan turns them into prefix states (from the
// incoming state), pass B runs the full recurrence per segment from its prefix; only the last
// segment writes S and z back. The scan and pass B are launched with PDL, so each is resident
// (pass B with its shared-memory tables set up) when the kernel before it ends: B1 H16 L8192
// hd64 86 -> 82 us, hd112 134 -> 131 us on the H100.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "linear_attention_prefill_plan.h"
#include "linear_attention_prefill_wg.cuh"

namespace based_core {
namespace cuda {
namespace {

using namespace lasym;
using namespace lawg;

// ---- phi_q: feature pair (R, R + 1) of one token, compile-time structure ----
template <int K, class T2> __device__ __forceinline__ auto elem(const T2 (&v)[8]) {
  using P = Pair<std::conditional_t<std::is_same<T2, __half2>::value, __half, __nv_bfloat16>>;
  if constexpr (K & 1) return P::hi(v[K / 2]);
  else return P::lo(v[K / 2]);
}

/// Features R, R + 1 (R even) of phi_q from q' = q / 4 (qp) and q' / 2 (qh):
/// pair (i, j): q'_i q'_j for i < j, q'_i^2 / 2 for i = j; linear: q'_i; 152: 1; above: 0.
template <class T, int R>
__device__ __forceinline__ typename Pair<T>::T2 qpair(const typename Pair<T>::T2 (&qp)[8],
                                                      const typename Pair<T>::T2 (&qh)[8]) {
  using P = Pair<T>;
  if constexpr (R < kPairs) {
    constexpr int i0 = pair_i(R), j0 = pair_j(R), i1 = pair_i(R + 1), j1 = pair_j(R + 1);
    const T a0 = elem<i0>(qp), a1 = elem<i1>(qp);
    const T b0 = i0 == j0 ? elem<j0>(qh) : elem<j0>(qp);
    const T b1 = i1 == j1 ? elem<j1>(qh) : elem<j1>(qp);
    return P::mul(P::make(a0, a1), P::make(b0, b1));
  } else if constexpr (R < kConst) {
    return qp[(R - kLin) / 2];
  } else if constexpr (R == kConst) {
    return from_bits<typename P::T2>(P::kOne);
  } else {
    return from_bits<typename P::T2>(0u);
  }
}

template <class T, int G>
__device__ __forceinline__ void qgroup(const typename Pair<T>::T2 (&qp)[8], const typename Pair<T>::T2 (&qh)[8],
                                       unsigned char* dst) {
  uint4 u;
  u.x = bits(qpair<T, 8 * G + 0>(qp, qh));
  u.y = bits(qpair<T, 8 * G + 2>(qp, qh));
  u.z = bits(qpair<T, 8 * G + 4>(qp, qh));
  u.w = bits(qpair<T, 8 * G + 6>(qp, qh));
  sts128(dst + G * 128, u);
}
template <class T, int... Gs>
__device__ __forceinline__ void qgroups(const typename Pair<T>::T2 (&qp)[8], const typename Pair<T>::T2 (&qh)[8],
                                        unsigned char* dst, std::integer_sequence<int, Gs...>) {
  (qgroup<T, Gs>(qp, qh, dst), ...);
}

/// phi_q rows of tokens 32 u .. 32 u + 31 (lane = token), all 160 features.
template <class T> __device__ __forceinline__ void unit_q(unsigned char* sm, const Layout& L, int u, int lane) {
  using P = Pair<T>;
  using T2 = typename P::T2;
  const int t = 32 * u + lane;
  const T* qr = reinterpret_cast<const T*>(sm + L.qraw);
  const int sw = (t >> 2) & 1;
  const uint4 a = lds128(qr + t * 16 + (sw << 3)), b = lds128(qr + t * 16 + ((sw ^ 1) << 3));
  const T2 quarter = P::splat(0.25f), half = P::splat(0.5f);
  T2 qp[8], qh[8];
  const uint32_t raw[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    qp[i] = P::mul(from_bits<T2>(raw[i]), quarter);  // exact (power of two)
    qh[i] = P::mul(qp[i], half);
  }
  qgroups<T>(qp, qh, sm + L.phq + (t >> 3) * kSboQ + (t & 7) * 16, std::make_integer_sequence<int, kFeat / 8>{});
}

/// phi_k^T hi / lo of token octet o (tokens 8 o .. 8 o + 7), features r = lane + 32 m.
template <class T> __device__ __forceinline__ void unit_k(unsigned char* sm, const Layout& L, int o, int lane) {
  using P = Pair<T>;
  using T2 = typename P::T2;
  const unsigned char* kt = sm + L.kt + o * 16;
  const int* tab = reinterpret_cast<const int*>(sm + L.tab);
#pragma unroll
  for (int m = 0; m < 5; ++m) {
    const int r = lane + 32 * m;
    const int off = (r >> 3) * kSboK + o * 128 + (r & 7) * 16;
    if (r < kPairs) {
      const int ij = tab[r];
      const uint4 ki = lds128(kt + (ij & 255) * (kLdKT * 2)), kj = lds128(kt + (ij >> 8) * (kLdKT * 2));
      const uint32_t xa[4] = {ki.x, ki.y, ki.z, ki.w}, xb[4] = {kj.x, kj.y, kj.z, kj.w};
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const T2 p = P::mul(from_bits<T2>(xa[e]), from_bits<T2>(xb[e]));
        hi[e] = bits(p);
        lo[e] = bits(P::fms(from_bits<T2>(xa[e]), from_bits<T2>(xb[e]), p));
      }
      sts128(sm + L.phk_hi + off, make_uint4(hi[0], hi[1], hi[2], hi[3]));
      sts128(sm + L.phk_lo + off, make_uint4(lo[0], lo[1], lo[2], lo[3]));
    } else if (r < kConst) {
      sts128(sm + L.phk_hi + off, lds128(kt + (r - kLin) * (kLdKT * 2)));
    }
  }
}

/// z(zb ^ 1) = z(zb) + this chunk's sum_t phi_k(t) (the Gram matrix of [k | valid] on mma.sync);
/// unless DELTA, also the denominator rows of S_ext from z(zb): n = 0 hi, n = 1 lo (sigma-scaled).
template <class T, bool DELTA, int NWG>
__device__ __forceinline__ void unit_gram(unsigned char* sm, const Layout& L, int zb, int nvalid, int lane) {
  const float* zo = reinterpret_cast<const float*>(sm + L.z) + zb * kFeat;
  float* zn = reinterpret_cast<float*>(sm + L.z) + (zb ^ 1) * kFeat;
  if (!DELTA && lane < kFeat / 8) {
    const float4 za = *reinterpret_cast<const float4*>(zo + 8 * lane), zc = *reinterpret_cast<const float4*>(zo + 8 * lane + 4);
    const float zz[8] = {za.x, za.y, za.z, za.w, zc.x, zc.y, zc.z, zc.w};
    uint32_t hi[4], lo[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float x0 = sigma<T>() * zz[2 * e], x1 = sigma<T>() * zz[2 * e + 1];
      hi[e] = pack2<T>(x0, x1);
      const typename Pair<T>::T2 hv = from_bits<typename Pair<T>::T2>(hi[e]);
      lo[e] = pack2<T>(x0 - to_f(Pair<T>::lo(hv)), x1 - to_f(Pair<T>::hi(hv)));
    }
#pragma unroll
    for (int g2 = 0; g2 < NWG; ++g2) {
      unsigned char* d = sm + L.sext + g2 * (kNR / 8) * kSboS + lane * 128;
      sts128(d, make_uint4(hi[0], hi[1], hi[2], hi[3]));
      sts128(d + 16, make_uint4(lo[0], lo[1], lo[2], lo[3]));
    }
  }
  const unsigned char* kt = sm + L.kt;
  float c[3][4] = {};
#pragma unroll
  for (int ks = 0; ks < kC / 16; ++ks) {
    uint32_t a[4], b[4], b2[2];
    ldsm4(kt + ((lane & 7) + 8 * ((lane >> 3) & 1)) * (kLdKT * 2) + (16 * ks + 8 * (lane >> 4)) * 2, a);
    ldsm4(kt + ((lane & 7) + 8 * (lane >> 4)) * (kLdKT * 2) + (16 * ks + 8 * ((lane >> 3) & 1)) * 2, b);
    ldsm2(kt + (16 + (lane & 7)) * (kLdKT * 2) + (16 * ks + 8 * ((lane >> 3) & 1)) * 2, b2[0], b2[1]);
    mma<T>(c[0], a, b[0], b[1]);
    mma<T>(c[1], a, b[2], b[3]);
    mma<T>(c[2], a, b2[0], b2[1]);
  }
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = g + 8 * (e >> 1), j = 8 * nt + 2 * tq + (e & 1);
      if (i <= j) {
        const int r = pair_row_start(i) + j - i;
        zn[r] = zo[r] + c[nt][e];
      }
    }
  if (tq == 0) {
    zn[kLin + g] = zo[kLin + g] + c[2][0];
    zn[kLin + g + 8] = zo[kLin + g + 8] + c[2][2];
  }
  if (lane == 0) zn[kConst] = zo[kConst] + float(nvalid);
}

/// kappa A fragments of this warp's token block tb (16 tokens) against key blocks js = 0..3:
/// ka[js] = sigma kappa(q_t, k_j) for j <= t (zero above the diagonal and for js > tb).
template <class T> __device__ __forceinline__ void kappa_frags(const unsigned char* sm, const Layout& L, int tb,
                                                               int lane, uint32_t (&ka)[4][4]) {
  const T* qr = reinterpret_cast<const T*>(sm + L.qraw);
  const T* kr = reinterpret_cast<const T*>(sm + L.kraw);
  const int g = lane >> 2, tq = lane & 3;
  constexpr float c0 = sigma<T>(), c1 = sigma<T>() * 0.25f, c2 = sigma<T>() / 32.f;  // sigma kappa(dot)
  uint32_t qa[4];
  {
    const int t = 16 * tb + (lane & 7) + 8 * ((lane >> 3) & 1), hh = lane >> 4;
    ldsm4(qr + t * 16 + ((hh ^ ((t >> 2) & 1)) << 3), qa);
  }
#pragma unroll
  for (int js = 0; js < 4; ++js) {
    ka[js][0] = ka[js][1] = ka[js][2] = ka[js][3] = 0u;
    if (js <= tb) {
      const int j = 16 * js + 8 * (lane >> 4) + (lane & 7), hh = (lane >> 3) & 1;
      uint32_t kb[4];
      ldsm4(kr + j * 16 + ((hh ^ ((j >> 2) & 1)) << 3), kb);
      float c[2][4] = {};
      mma<T>(c[0], qa, kb[0], kb[1]);
      mma<T>(c[1], qa, kb[2], kb[3]);
      const bool diag = js == tb;
      float kv[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float d = c[half][e];
          const int tl = g + 8 * (e >> 1), jl = 8 * half + 2 * tq + (e & 1);
          kv[half][e] = (diag && jl > tl) ? 0.f : fmaf(d, fmaf(d, c2, c1), c0);
        }
      ka[js][0] = pack2<T>(kv[0][0], kv[0][1]);  // row g, k 2tq..
      ka[js][1] = pack2<T>(kv[0][2], kv[0][3]);  // row g + 8
      ka[js][2] = pack2<T>(kv[1][0], kv[1][1]);  // row g, k 2tq + 8..
      ka[js][3] = pack2<T>(kv[1][2], kv[1][3]);  // row g + 8, k 2tq + 8..
    }
  }
}

// ---- chunk loads ----
/// Per-thread walk over the 16-byte chunks of a chunk's v rows (cpr chunks a row).
struct VWalk {
  int j0, c0, dj, dc, n;  // first (row, chunk); step; chunks per thread (upper bound)
};

/// cp.async of chunk rows [t0, t0 + 64): raw q (unless DELTA), raw k, v into V_ext buffer vbuf
/// (rows >= nvalid zero-filled), and V_ext's valid-mask columns.
template <class T, bool DELTA, int NWG>
__device__ __forceinline__ void issue_loads(const ChunkArgs& a, const T* qb, const T* kb, const T* vb, unsigned char* sm,
                                            const Layout& L, unsigned char* vbuf, int h, int64_t t0, int nvalid, int tid,
                                            const VWalk& vw) {
  if (tid < 2 * kC) {
    const int t = tid >> 1, hf = tid & 1, off = (t * 16 + ((hf ^ ((t >> 2) & 1)) << 3)) * 2;
    const int64_t row = t < nvalid ? t0 + t : t0;
    if (!DELTA) cp_async16(sm + L.qraw + off, qb + row * a.ld_q + h * 16 + hf * 8, t < nvalid);
    cp_async16(sm + L.kraw + off, kb + row * a.ld_k + h * 16 + hf * 8, t < nvalid);
  }
  const int cpr = a.hd >> 3;
  int j = vw.j0, cc = vw.c0;
  for (int i = 0; i < vw.n && j < kC; ++i) {
    const int col = 8 * cc, n = (kNR * (col >> 6)) + 8 + (col & 63);
    const int64_t row = j < nvalid ? t0 + j : t0;
    cp_async16(vbuf + (n >> 3) * kSboV + (j >> 3) * 128 + (j & 7) * 16, vb + row * a.ld_v + int64_t(h) * a.hd + col,
               j < nvalid);
    j += vw.dj, cc += vw.dc;
    if (cc >= cpr) cc -= cpr, ++j;
  }
  cp_async_commit();
  if (tid < kC) {
    const uint4 m = make_uint4(tid < nvalid ? Pair<T>::kOne : 0u, 0u, 0u, 0u);
#pragma unroll
    for (int g2 = 0; g2 < NWG; ++g2) sts128(vbuf + g2 * (kNR / 8) * kSboV + (tid >> 3) * 128 + (tid & 7) * 16, m);
  }
}

/// Thread tid < 128 of the k^T copy: token tid & 63, features 8 (tid >> 6) .. + 7 (latc::kt_load
/// pairs threads with tokens differently, for its fp32 copy).
template <class T>
__device__ __forceinline__ uint4 wg_kt_load(const ChunkArgs& a, const T* kb, int h, int64_t t0, int nvalid, int tid) {
  const int t = tid & 63;
  if (tid >= 2 * kC || t >= nvalid) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(kb + (t0 + t) * a.ld_k + int64_t(h) * 16 + (tid >> 6) * 8));
}
template <class T>
__device__ __forceinline__ void kt_store(unsigned char* sm, const Layout& L, uint4 x, int nvalid, int tid) {
  if (tid < 2 * kC) {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(&x);
    uint16_t* kt = reinterpret_cast<uint16_t*>(sm + L.kt) + (tid >> 6) * 8 * kLdKT + (tid & 63);
#pragma unroll
    for (int e = 0; e < 8; ++e) kt[e * kLdKT] = v[e];
    if (tid < kC) reinterpret_cast<uint16_t*>(sm + L.kt)[16 * kLdKT + tid] = tid < nvalid ? Pair<T>::kOne : 0u;
  }
}

// ---- the kernel ----
template <class T, bool DELTA, int NWG>
__global__ void __launch_bounds__(128 * NWG, NWG == 1 ? 2 : 1) la_wg_kernel(const ChunkArgs a) {
#if LAWG_HAS_WGMMA
  extern __shared__ __align__(128) unsigned char sm[];
  constexpr Layout L = make_layout(NWG);
  constexpr int NW = 4 * NWG, NTHR = 128 * NWG;
  using P = Pair<T>;
  using T2 = typename P::T2;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int wg = w >> 2, wl = w & 3;  // warpgroup; warp in it = token block (readout) / 16-column block (state)
  const int s = blockIdx.x, h = blockIdx.y, hd = a.hd;
  const int64_t sq = blockIdx.z, row_h = sq * a.heads + h;
  const int64_t rows_total = int64_t(a.heads) * gridDim.z;
  const T* qb = static_cast<const T*>(a.q) + sq * a.ss_q;
  const T* kb = static_cast<const T*>(a.k) + sq * a.ss_k;
  const T* vb = static_cast<const T*>(a.v) + sq * a.ss_v;
  const int64_t tbeg = int64_t(s) * a.seg_len;
  const int64_t tend = min64(a.n_tokens, tbeg + a.seg_len);
  const int nchunks = int((tend - tbeg + kC - 1) / kC);
  float* S_h = a.S + row_h * a.D * hd;
  float* z_h = a.z + row_h * a.D;
  const bool from_ws = !DELTA && a.n_seg > 1;
  const int col0 = 16 * w;  // this warp's first state column (S^T rows col0 + g, col0 + g + 8)
  // The delta pass lets the scan launch at once (it waits for this grid to finish); the output
  // pass, launched with PDL behind the scan, sets up its shared memory before it waits.
  if (DELTA) pdl_trigger();

  // ---- tables, constant tiles, zeroed buffers ----
  {
    int* tab = reinterpret_cast<int*>(sm + L.tab);
    int4* rows = reinterpret_cast<int4*>(sm + L.rows);
    for (int r = tid; r < kFeat; r += NTHR) {
      tab[r] = r < kPairs ? pair_i(r) | (pair_j(r) << 8) : 0;
      rows[r] = state_rows_of(r, a.sym);
    }
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int i = tid; i < NWG * (kNR / 8) * kSboS / 16; i += NTHR) sts128(sm + L.sext + 16 * i, zero);
    for (int i = tid; i < 2 * L.vext_bytes / 16; i += NTHR) sts128(sm + L.vext + 16 * i, zero);
    for (int i = tid; i < 24 * kLdKT * 2 / 16; i += NTHR) sts128(sm + L.kt + 16 * i, zero);
    for (int i = tid; i < 2 * kFeat * 4 / 16; i += NTHR) sts128(sm + L.z + 16 * i, zero);
    // phi_k rows 152 (ones) .. 159 (zeros): constant
    if (tid < 64) {
      const uint32_t one2 = P::kOne | (P::kOne << 16);
      const uint4 x = (tid & 7) == 0 ? make_uint4(one2, one2, one2, one2) : zero;
      sts128(sm + L.phk_hi + (kConst >> 3) * kSboK + (tid >> 3) * 128 + (tid & 7) * 16, x);
    }
  }
  __syncthreads();

  VWalk vw;
  {
    const int cpr = hd >> 3;
    vw.j0 = tid / cpr, vw.c0 = tid % cpr, vw.dj = NTHR / cpr, vw.dc = NTHR % cpr;
    vw.n = (kC * cpr + NTHR - 1) / NTHR;
  }
  const int nv0 = int(min64(kC, tend - tbeg));
  if (!DELTA) pdl_wait();  // no global memory was touched above
  issue_loads<T, DELTA, NWG>(a, qb, kb, vb, sm, L, sm + L.vext, h, tbeg, nv0, tid, vw);
  kt_store<T>(sm, L, wg_kt_load<T>(a, kb, h, tbeg, nv0, tid), nv0, tid);

  // state S^T slice: acc[4 ni + e] = feature 8 ni + 2 tq + (e & 1), column col0 + g + 8 (e >> 1)
  float acc[80];
  float* z0 = reinterpret_cast<float*>(sm + L.z);
  if (DELTA) {
#pragma unroll
    for (int i = 0; i < 80; ++i) acc[i] = 0.f;
  } else if (from_ws) {
    const float* src = a.ws + (int64_t(s) * rows_total + row_h) * ws_row_floats(NW);
    const float4* s4 = reinterpret_cast<const float4*>(src);
#pragma unroll
    for (int ni = 0; ni < 20; ++ni) {
      const float4 x = s4[(w * 20 + ni) * 32 + lane];
      acc[4 * ni] = x.x, acc[4 * ni + 1] = x.y, acc[4 * ni + 2] = x.z, acc[4 * ni + 3] = x.w;
    }
    for (int r = tid; r < kFeat; r += NTHR) z0[r] = src[NW * kFragFloats + r];
  } else {
    const int4* rows = reinterpret_cast<const int4*>(sm + L.rows);
    for (int r = tid; r < kFeat; r += NTHR) {
      const int4 rw = rows[r];
      z0[r] = r < kUsed ? (z_h[rw.x] + z_h[rw.y]) * __int_as_float(rw.z) : 0.f;
    }
#pragma unroll
    for (int ni = 0; ni < 20; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int4 rw = rows[8 * ni + 2 * tq + (e & 1)];
        const int col = col0 + g + 8 * (e >> 1);
        acc[4 * ni + e] =
            col < hd ? (S_h[int64_t(rw.x) * hd + col] + S_h[int64_t(rw.y) * hd + col]) * __int_as_float(rw.z) : 0.f;
      }
  }
  cp_async_wait_all();
  fence_proxy_async();
  __syncthreads();

  const unsigned my_units = a.units[w];
  unsigned char* const stage = sm + L.stage + w * (16 * kLdStage * 2);
#pragma unroll 1
  for (int c = 0; c < nchunks; ++c) {
    const int zb = c & 1;
    unsigned char* const vcur = sm + L.vext + zb * L.vext_bytes;
    const int64_t t0 = tbeg + int64_t(c) * kC;
    const int nvalid = int(min64(kC, tend - t0));

    // 1. generation
#pragma unroll 1
    for (unsigned m = my_units; m; m &= m - 1) {
      const int u = __ffs(m) - 1;
      if (u >= kUnitGram) unit_gram<T, DELTA, NWG>(sm, L, zb, nvalid, lane);
      else if (u >= kUnitK) unit_k<T>(sm, L, u - kUnitK, lane);
      else if (!DELTA) unit_q<T>(sm, L, u - kUnitQ, lane);
    }
    uint32_t ka[4][4] = {};
    if constexpr (!DELTA) {
      kappa_frags<T>(sm, L, wl, lane, ka);
      // S_ext rows 8 + 16 wl + (0..15) of warpgroup wg: this warp's state (previous chunks), 16-bit
      unsigned char* sx = sm + L.sext + wg * (kNR / 8) * kSboS;
      const int mi = lane >> 3, r8 = lane & 7;
      unsigned char* row = sx + (1 + 2 * wl + (mi & 1)) * kSboS + (mi >> 1) * 128 + r8 * 16;
      constexpr float sg = sigma<T>();
#pragma unroll
      for (int ni = 0; ni < 20; ni += 2)
        stsm4(row + ni * 128, pack2<T>(sg * acc[4 * ni], sg * acc[4 * ni + 1]),
              pack2<T>(sg * acc[4 * ni + 2], sg * acc[4 * ni + 3]), pack2<T>(sg * acc[4 * ni + 4], sg * acc[4 * ni + 5]),
              pack2<T>(sg * acc[4 * ni + 6], sg * acc[4 * ni + 7]));
    }
    fence_proxy_async();
    __syncthreads();

    // the next chunk streams in while the tensor cores work
    const bool has_next = c + 1 < nchunks;
    const int nv_next = has_next ? int(min64(kC, tend - t0 - kC)) : 0;
    uint4 kpre = make_uint4(0, 0, 0, 0);
    if (has_next) {
      issue_loads<T, DELTA, NWG>(a, qb, kb, vb, sm, L, sm + L.vext + (zb ^ 1) * L.vext_bytes, h, t0 + kC, nv_next, tid,
                                 vw);
      kpre = wg_kt_load<T>(a, kb, h, t0 + kC, nv_next, tid);
    }

    // 2. tensor cores. V^T fragments of this warp's 16 state columns (k = the chunk's tokens)
    uint32_t vt[4][4];
    {
      const int n = kNR * wg + 8 + 16 * wl + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int js = 0; js < 4; ++js) {
        const int j = 16 * js + (lane & 7) + 8 * ((lane >> 4) & 1);
        ldsm4t(vcur + (n >> 3) * kSboV + (j >> 3) * 128 + (j & 7) * 16, vt[js]);
      }
    }
    float o[36];
#pragma unroll
    for (int i = 0; i < 36; ++i) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < 80; ++i) reg_fence(acc[i]);
    wgmma_fence();
    if constexpr (!DELTA) {
      const uint64_t dq = make_desc(sm + L.phq, 128, kSboQ);
      const uint64_t ds = make_desc(sm + L.sext + wg * (kNR / 8) * kSboS, 128, kSboS);
      const uint64_t dv = make_desc(vcur + wg * (kNR / 8) * kSboV, 128, kSboV);
#pragma unroll
      for (int ks = 0; ks < kFeat / 16; ++ks) Wg<T>::ss72(o, dq + 16 * ks, ds + 16 * ks, 1);
#pragma unroll
      for (int js = 0; js < 4; ++js) Wg<T>::rs72t(o, ka[js], dv + 16 * js, 1);
    }
    {
      const uint64_t dh = make_desc(sm + L.phk_hi, 128, kSboK), dl = make_desc(sm + L.phk_lo, 128, kSboK);
#pragma unroll
      for (int js = 0; js < 4; ++js) Wg<T>::rs160(acc, vt[js], dh + 16 * js, 1);
#pragma unroll
      for (int js = 0; js < 4; ++js) Wg<T>::rs136(acc, vt[js], dl + 16 * js, 1);
    }
    wgmma_commit();
    wgmma_wait_all();
#pragma unroll
    for (int i = 0; i < 80; ++i) reg_fence(acc[i]);
#pragma unroll
    for (int i = 0; i < 36; ++i) reg_fence(o[i]);

    // 3. y = numerators / denominator (columns 0, 1 of O), staged for 16-byte stores
    if constexpr (!DELTA) {
      if (NWG == 1) wg_barrier(0);  // the stage overlays phi_q, which every warp's wgmma reads
      const int src = lane & ~3;
      const float d0 = __shfl_sync(0xffffffffu, o[0] + o[1], src), d1 = __shfl_sync(0xffffffffu, o[2] + o[3], src);
      const float seps = sigma<T>() * a.eps;
      const float i0 = 1.f / (d0 + seps), i1 = 1.f / (d1 + seps);
      const int mi = lane >> 3, r8 = lane & 7;
      unsigned char* srow = stage + (8 * (mi & 1) + r8) * (kLdStage * 2) + (mi >> 1) * 16;
#pragma unroll
      for (int cb = 0; cb < 8; cb += 2) {
        const float* x = o + 4 * (cb + 1);
        stsm4(srow + cb * 16, pack2<T>(x[0] * i0, x[1] * i0), pack2<T>(x[2] * i1, x[3] * i1),
              pack2<T>(x[4] * i0, x[5] * i0), pack2<T>(x[6] * i1, x[7] * i1));
      }
      __syncwarp();
      T* Y = static_cast<T*>(a.y) + sq * a.ss_y + t0 * a.ld_y + int64_t(h) * hd;
      const int ch = lane & 7, col = 64 * wg + 8 * ch;
#pragma unroll
      for (int it = 0; it < 4; ++it) {
        const int rr = 4 * it + (lane >> 3), t = 16 * wl + rr;
        if (t < nvalid && col < hd)
          *reinterpret_cast<uint4*>(Y + int64_t(t) * a.ld_y + col) = lds128(stage + rr * (kLdStage * 2) + ch * 16);
      }
    }
    if (has_next) kt_store<T>(sm, L, kpre, nv_next, tid);
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
  }

  const float* zfin = reinterpret_cast<const float*>(sm + L.z) + (nchunks & 1) * kFeat;
  if (DELTA) {
    float* dst = a.ws + (int64_t(s) * rows_total + row_h) * ws_row_floats(NW);
    float4* d4 = reinterpret_cast<float4*>(dst);
#pragma unroll
    for (int ni = 0; ni < 20; ++ni)
      d4[(w * 20 + ni) * 32 + lane] = make_float4(acc[4 * ni], acc[4 * ni + 1], acc[4 * ni + 2], acc[4 * ni + 3]);
    for (int r = tid; r < kFeat; r += NTHR) dst[NW * kFragFloats + r] = zfin[r];
  } else if (s == a.n_seg - 1) {  // registers -> the state (full layout: both mirror rows of a pair)
    const int4* rows = reinterpret_cast<const int4*>(sm + L.rows);
    for (int r = tid; r < kUsed; r += NTHR) {
      const int4 rw = rows[r];
      const float x = zfin[r] * __int_as_float(rw.w);
      z_h[rw.x] = x, z_h[rw.y] = x;
    }
#pragma unroll
    for (int ni = 0; ni < 20; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int4 rw = rows[8 * ni + 2 * tq + (e & 1)];
        const int col = col0 + g + 8 * (e >> 1);
        if (col < hd && __int_as_float(rw.w) != 0.f) {
          const float x = acc[4 * ni + e] * __int_as_float(rw.w);
          S_h[int64_t(rw.x) * hd + col] = x, S_h[int64_t(rw.y) * hd + col] = x;
        }
      }
  }
#endif
}

/// Compiled with wgmma (sm_90a) when its static shared memory is there (see la_wg_available).
__global__ void la_wg_probe(int* out) {
#if LAWG_HAS_WGMMA
  __shared__ int flag[8];
  flag[threadIdx.x & 7] = 1;
  __syncthreads();
  if (out) *out = flag[0];
#else
  if (out) *out = 0;
#endif
}

/// Which warp generates which units (bit masks), longest first onto the least loaded warp, on
/// top of each warp's fixed work (its kappa block and S_ext rows).
void assign_units(int nw, bool delta, unsigned* units) {
  int cost[kUnits], load[kMaxWarps] = {};
  for (int u = 0; u < kUnits; ++u) {  // rough instructions per lane
    if (u < kUnitK) cost[u] = delta ? 0 : 170;
    else if (u < kUnitGram) cost[u] = 90;
    else cost[u] = delta ? 60 : 90;
  }
  for (int w = 0; w < nw && !delta; ++w) load[w] = 55 + 10 + 30 * ((w & 3) + 1);
  assign_units_greedy(cost, kUnits, load, nw, kMaxWarps, units);
}

template <class T, bool DELTA, int NWG>
cudaError_t launch_wg(const ChunkArgs& a, dim3 grid, bool pdl, cudaStream_t stream) {
  static std::atomic<unsigned long long> configured{0};
  constexpr int smem = make_layout(NWG).total;
  cudaError_t e = ensure_smem(la_wg_kernel<T, DELTA, NWG>, smem, configured);
  if (e != cudaSuccess) return e;
  if (pdl) return launch_pdl(la_wg_kernel<T, DELTA, NWG>, grid, dim3(128 * NWG), smem, stream, a);
  la_wg_kernel<T, DELTA, NWG><<<grid, 128 * NWG, smem, stream>>>(a);
  return cudaGetLastError();
}

/// This device runs la_wg_kernel: compute capability 9.0 and the kernels compiled for sm_90a.
bool la_wg_available() {
  static std::atomic<int> state{-1};  // per process; the project runs one device kind at a time
  int st = state.load();
  if (st >= 0) return st == 1;
  bool ok = false;
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 && minor == 0) {
    cudaFuncAttributes fa{};
    ok = cudaFuncGetAttributes(&fa, la_wg_probe) == cudaSuccess && fa.sharedSizeBytes >= 8 * sizeof(int);
  }
  cudaGetLastError();
  state.store(ok ? 1 : 0);
  return ok;
}

}  // namespace

std::size_t la_prefill_wg_segment_bytes(int64_t rows, int head_dim) {
  return std::size_t(rows) * ws_row_floats(head_dim <= 64 ? 4 : 8) * sizeof(float);
}

cudaError_t launch_la_prefill_wg(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace,
                                 std::size_t workspace_bytes, bool* handled) {
  *handled = false;
  const ops::LinearAttentionShape& sh = p.shape;
  const bool multi = p.n_seqs > 1;
  const bool ok = (p.dtype == DType::BF16 || p.dtype == DType::F16) && sh.feature_dim == kF && sh.head_dim % 16 == 0 &&
                  sh.head_dim >= 64 && sh.head_dim <= 128 && sh.heads > 0 && sh.heads <= 65535 && p.n_seqs > 0 &&
                  p.n_seqs <= 65535 && aligned_to(p.q, 16) && aligned_to(p.k, 16) && aligned_to(p.v, 16) &&
                  aligned_to(p.y, 16) && p.ld_q % 8 == 0 && p.ld_k % 8 == 0 && p.ld_v % 8 == 0 && p.ld_y % 8 == 0 &&
                  (!multi || (p.seq_stride_q % 8 == 0 && p.seq_stride_k % 8 == 0 && p.seq_stride_v % 8 == 0 &&
                              p.seq_stride_y % 8 == 0)) &&
                  p.n_tokens > 0;
  // BASED_CORE_LA_PREFILL=mma runs the mma.sync kernel (linear_attention_prefill_tc.cu) instead: comparisons
  const char* env = std::getenv("BASED_CORE_LA_PREFILL");
  if (!ok || (env && std::strcmp(env, "mma") == 0) || !la_wg_available()) return cudaSuccess;
  *handled = true;
  const int nwg = sh.head_dim <= 64 ? 1 : 2, nw = 4 * nwg;
  ChunkArgs a = latc::chunk_args(p);
  a.nw = nw;
  const int per_sm = nwg == 1 ? 2 : 1;  // resident CTAs per SM (registers, shared memory)
  const std::size_t seg_bytes = la_prefill_wg_segment_bytes(int64_t(sh.heads) * p.n_seqs, sh.head_dim);
  return dispatch_act_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (std::is_same<T, float>::value) {
      return cudaErrorInvalidValue;
    } else {
      return latc::launch_segmented(
          a, p, per_sm, seg_bytes, workspace, workspace_bytes,
          [&](bool delta, unsigned* units) { assign_units(nw, delta, units); },
          [&](const ChunkArgs& c, dim3 grid, auto delta, bool after_scan) {
            constexpr bool kDelta = decltype(delta)::value;
            return nwg == 1 ? launch_wg<T, kDelta, 1>(c, grid, after_scan, stream)
                            : launch_wg<T, kDelta, 2>(c, grid, after_scan, stream);
          },
          stream);
    }
  });
}

}  // namespace cuda
}  // namespace based_core
