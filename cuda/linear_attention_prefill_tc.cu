// linear_attention_prefill_tc.cu: tensor-core chunked Taylor linear-attention prefill for bf16 /
// fp16 activations, feature dim 16, head_dim 64, 80, .., 128 (SPEC 2.1 "Equivalent decomposed
// form" in the exact 160-feature symmetric form of linear_attention_common.cuh). Everything else
// (fp32 activations, other shapes, unaligned pointers) takes linear_attention_prefill.cu.
//
// One CTA per (head, segment of the sequence), hd / 16 warps (head_dim 64..128); warp w owns
// value columns 16w..16w+15 and keeps its slice of the state transposed, S^T [16 cols][160
// features], as fp32 mma.sync accumulators (80 registers). The denominator state z [160] is fp32
// in shared memory. Per chunk of 64 tokens:
//   1. generation, split into units over the warps: phi_q [t][160] (bf16/fp16, query-side scales
//      folded in) and den_t = phi_q(t).z in fp32 (lane = token); phi_k^T [160][t] split exactly
//      into hi + lo halves (k_i k_j has 16 / 22 significant bits, so hi + lo loses nothing and
//      the state update stays fp32-exact) and z += sum_t phi_k(t) in fp32 (lane = feature, from
//      an fp32 k^T copy); the intra-chunk kernel A[t][j] = kappa(q_t, k_j), j <= t
//      (S = Q K^T on tensor cores) and den_t += sum_j A[t][j];
//   2. per warp, 16 tokens at a time: O^T = S^T phi_q^T (the C-fragment layout of S^T is the
//      A-fragment layout, so the state feeds the tensor cores from registers) + V^T A^T (intra
//      chunk); y = O / den; then S^T += V^T (phi_k,hi + phi_k,lo). The next chunk streams in
//      (cp.async) meanwhile.
// The code is kept compact (runtime loops, one copy of each unit): a fully unrolled version ran
// ~4x slower, bound by instruction fetch.
// fp16 keeps the tensor-core operands that grow with the sequence (the state, kappa) scaled by
// 2^-8 and divides the factor out of y.
//
// Short batches (few heads) split the sequence into segments: pass A computes each segment's
// state contribution (update only), a scan turns them into prefix states (starting from the
// incoming state) in the workspace, pass B runs the full recurrence per segment from its prefix;
// only the last segment writes S and z back.
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "linear_attention_prefill_plan.h"
#include "linear_attention_prefill_tc.cuh"

namespace based_core {
namespace cuda {
namespace {

using namespace lasym;
using namespace latc;

// ---- the kernel ----
template <class T, bool DELTA, int MAXW>
__global__ void __launch_bounds__(32 * MAXW, MAXW <= kMinWarps ? 2 : 1) la_tc_kernel(const ChunkArgs a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int NT = a.nw, nthr = 32 * NT;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int s = blockIdx.x, h = blockIdx.y, hd = a.hd;
  const int64_t sq = blockIdx.z, row_h = sq * a.heads + h;  // sequence; (sequence, head) state row
  const T* qb = static_cast<const T*>(a.q) + sq * a.ss_q;
  const T* kb = static_cast<const T*>(a.k) + sq * a.ss_k;
  const T* vb = static_cast<const T*>(a.v) + sq * a.ss_v;
  const int rows_total = a.heads * int(gridDim.z);
  const int vcol = 16 * w;  // this warp's value columns
  const Smem sm{smem_raw, hd + 8};
  const int64_t tbeg = int64_t(s) * a.seg_len;
  const int64_t tend = min64(a.n_tokens, tbeg + a.seg_len);
  const int nchunks = int((tend - tbeg + kC - 1) / kC);
  float* S_h = a.S + row_h * a.D * hd;
  float* z_h = a.z + row_h * a.D;
  const bool from_ws = !DELTA && a.n_seg > 1;
  const int vcc = tid % (hd >> 3), vr0 = tid / (hd >> 3);  // v copy: column chunk, first row

  // tables: phi_k feature r = kT[i] * kT[j] (16: the valid mask, 17: zeros); state rows of r
  for (int r = tid; r < kFeat; r += nthr) {
    int i = 17, j = 17;
    if (r < kPairs) i = pair_i(r), j = pair_j(r);
    else if (r < kConst) i = r - kLin, j = 16;
    else if (r == kConst) i = j = 16;
    sm.tab()[r] = i | (j << 8);
    sm.rows()[r] = state_rows_of(r, a.sym);
  }
  const int nv0 = int(min64(kC, tend - tbeg));
  raw_issue<T, DELTA>(a, qb, kb, vb, sm, 0, h, tbeg, nv0, tid, vcc, vr0);
  kt_store<T>(sm, kt_load<T>(a, kb, h, tbeg, nv0, tid), nv0, tid);
  for (int c = tid; c < kLdKT; c += nthr) sm.kt()[17 * kLdKT + c] = 0.f;

  // state S^T slice: acc[ni][e] = feature 8 ni + 2 tq + (e & 1), column vcol + g + 8 (e >> 1)
  float acc[kNI][4];
  if (DELTA) {
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[ni][e] = 0.f;
    for (int r = tid; r < 2 * kFeat; r += nthr) sm.z(0)[r] = 0.f;
  } else if (from_ws) {
    const float* src = a.ws + (int64_t(s) * rows_total + row_h) * ws_row_floats(NT);
    const float4* s4 = reinterpret_cast<const float4*>(src);
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni) {
      const float4 x = s4[(w * kNI + ni) * 32 + lane];
      acc[ni][0] = x.x, acc[ni][1] = x.y, acc[ni][2] = x.z, acc[ni][3] = x.w;
    }
    for (int r = tid; r < 2 * kFeat; r += nthr) sm.z(0)[r] = r < kFeat ? src[NT * kFragFloats + r] : 0.f;
  } else {  // straight from the state: all loads independent (table after a barrier)
    __syncthreads();
    for (int r = tid; r < 2 * kFeat; r += nthr) {
      float zv = 0.f;
      if (r < kFeat) {
        const int4 rw = sm.rows()[r];
        zv = (z_h[rw.x] + z_h[rw.y]) * __int_as_float(rw.z);
      }
      sm.z(0)[r] = zv;
    }
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int4 rw = sm.rows()[8 * ni + 2 * tq + (e & 1)];
        const int col = vcol + g + 8 * (e >> 1);
        acc[ni][e] = (S_h[int64_t(rw.x) * hd + col] + S_h[int64_t(rw.y) * hd + col]) * __int_as_float(rw.z);
      }
  }
  cp_async_wait_all();
  __syncthreads();

  const unsigned my_units = a.units[w];
  const int lrow = 8 * (lane >> 4) + (lane & 7), lcol = 8 * ((lane >> 3) & 1);
#pragma unroll 1
  for (int c = 0; c < nchunks; ++c) {
    const int zb = c & 1, buf = c & 1;
    const int64_t t0 = tbeg + int64_t(c) * kC;
    const int nvalid = int(min64(kC, tend - t0));

    // 1. generation (this warp's units)
#pragma unroll 1
    for (unsigned m = my_units; m; m &= m - 1) {
      const int u = __ffs(m) - 1;
      if (u >= kUnitK) unit_k<T>(sm, zb, u - kUnitK, lane);
      else if (!DELTA && u >= kUnitQ) unit_q<T>(sm, zb, u - kUnitQ, lane);
      else if (!DELTA) unit_kappa<T>(sm, u, lane);
    }
    __syncthreads();

    // the next chunk streams in while the tensor cores work
    const bool has_next = c + 1 < nchunks;
    const int nv_next = has_next ? int(min64(kC, tend - t0 - kC)) : 0;
    uint4 kpre = make_uint4(0, 0, 0, 0);
    if (has_next) {
      raw_issue<T, DELTA>(a, qb, kb, vb, sm, buf ^ 1, h, t0 + kC, nv_next, tid, vcc, vr0);
      kpre = kt_load<T>(a, kb, h, t0 + kC, nv_next, tid);
    }

    // 2. V^T fragments of this warp's 16 columns (k = the chunk's tokens)
    uint32_t vt[4][4];
    {
      const T* vr = sm.vraw<T>(buf);
#pragma unroll
      for (int js = 0; js < 4; ++js)
        ldsm4t(vr + (16 * js + (lane & 7) + 8 * ((lane >> 4) & 1)) * sm.ldv + vcol + 8 * ((lane >> 3) & 1), vt[js]);
    }
    if constexpr (!DELTA) {
      constexpr float sg = sigma<T>();
      const T* phq = sm.phq<T>();
      const T* A = sm.amat<T>();
      float o[8][4];  // O^T tiles: column vcol + g + 8 (e >> 1), token 8 nt + 2 tq + (e & 1)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kNI / 2; ++ks) {  // O^T += S^T phi_q^T (8 independent chains)
        // S^T (previous chunks) as an A fragment: its C-fragment layout is the A layout
        const uint32_t af[4] = {pack2<T>(sg * acc[2 * ks][0], sg * acc[2 * ks][1]),
                                pack2<T>(sg * acc[2 * ks][2], sg * acc[2 * ks][3]),
                                pack2<T>(sg * acc[2 * ks + 1][0], sg * acc[2 * ks + 1][1]),
                                pack2<T>(sg * acc[2 * ks + 1][2], sg * acc[2 * ks + 1][3])};
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t b[4];
          ldsm4(phq + (16 * np + lrow) * kLdPhq + 16 * ks + lcol, b);
          mma<T>(o[2 * np], af, b[0], b[1]);
          mma<T>(o[2 * np + 1], af, b[2], b[3]);
        }
      }
#pragma unroll
      for (int js = 0; js < 4; ++js)  // O^T += V^T A^T (this chunk, causal)
#pragma unroll
        for (int np = js; np < 4; ++np) {
          uint32_t b[4];
          ldsm4(A + (16 * np + lrow) * kLdA + 16 * js + lcol, b);
          mma<T>(o[2 * np], vt[js], b[0], b[1]);
          mma<T>(o[2 * np + 1], vt[js], b[2], b[3]);
        }
      // 3. y = O / den. Lanes g, g ^ 1 swap halves so that each stores column pairs (4 bytes):
      // even g: token t, columns g, g + 1 (and g + 8, g + 9); odd g: token t + 1, columns g - 1, g.
      const bool odd = g & 1;
      T* Y = static_cast<T*>(a.y) + sq * a.ss_y + t0 * a.ld_y + int64_t(h) * hd + vcol + (g & ~1);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int t = 8 * nt + 2 * tq, tt = t + (odd ? 1 : 0);
        const float x0 = __shfl_xor_sync(0xffffffffu, odd ? o[nt][0] : o[nt][1], 4);
        const float x1 = __shfl_xor_sync(0xffffffffu, odd ? o[nt][2] : o[nt][3], 4);
        // mine: (g, tt) and (g + 8, tt); partner's: (g ^ 1, tt) and (g ^ 1 + 8, tt)
        const float m0 = odd ? o[nt][1] : o[nt][0], m1 = odd ? o[nt][3] : o[nt][2];
        const float den = sm.den(0)[tt] + sm.den(1)[tt] + a.eps;
        const float inv = __fdividef(1.f / sg, den);
        if (tt < nvalid) {
          T* yr = Y + int64_t(tt) * a.ld_y;
          *reinterpret_cast<uint32_t*>(yr) = odd ? pack2<T>(x0 * inv, m0 * inv) : pack2<T>(m0 * inv, x0 * inv);
          *reinterpret_cast<uint32_t*>(yr + 8) = odd ? pack2<T>(x1 * inv, m1 * inv) : pack2<T>(m1 * inv, x1 * inv);
        }
      }
    }
    {  // S^T += V^T (phi_k,hi + phi_k,lo): all hi products, then all lo (no back-to-back chains)
      const T* hi = sm.phk_hi<T>();
      const T* lo = sm.phk_lo<T>();
#pragma unroll
      for (int js = 0; js < 4; ++js) {
#pragma unroll
        for (int np = 0; np < kNI / 2; ++np) {
          uint32_t b[4];
          ldsm4(hi + (16 * np + lrow) * kLdPhk + 16 * js + lcol, b);
          mma<T>(acc[2 * np], vt[js], b[0], b[1]);
          mma<T>(acc[2 * np + 1], vt[js], b[2], b[3]);
        }
#pragma unroll
        for (int np = 0; np < 8; ++np) {
          uint32_t d[4];
          ldsm4(lo + (16 * np + lrow) * kLdPhk + 16 * js + lcol, d);
          mma<T>(acc[2 * np], vt[js], d[0], d[1]);
          mma<T>(acc[2 * np + 1], vt[js], d[2], d[3]);
        }
        {  // features 128..135 (pairs); 136.. are exact in hi
          uint32_t d0, d1;
          ldsm2(lo + (16 * 8 + (lane & 7)) * kLdPhk + 16 * js + lcol, d0, d1);
          mma<T>(acc[16], vt[js], d0, d1);
        }
      }
    }
    if (has_next) kt_store<T>(sm, kpre, nv_next, tid);
    cp_async_wait_all();
    __syncthreads();
  }

  const float* zfin = sm.z(nchunks & 1);
  if (DELTA) {
    float* dst = a.ws + (int64_t(s) * rows_total + row_h) * ws_row_floats(NT);
    float4* d4 = reinterpret_cast<float4*>(dst);
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni)
      d4[(w * kNI + ni) * 32 + lane] = make_float4(acc[ni][0], acc[ni][1], acc[ni][2], acc[ni][3]);
    for (int r = tid; r < kFeat; r += nthr) dst[NT * kFragFloats + r] = zfin[r];
  } else if (s == a.n_seg - 1) {  // registers -> the state (full layout: both mirror rows of a pair)
    for (int r = tid; r < kUsed; r += nthr) {
      const int4 rw = sm.rows()[r];
      const float x = zfin[r] * __int_as_float(rw.w);
      z_h[rw.x] = x, z_h[rw.y] = x;
    }
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int4 rw = sm.rows()[8 * ni + 2 * tq + (e & 1)];
        const int col = vcol + g + 8 * (e >> 1);
        if (__int_as_float(rw.w) != 0.f) {
          const float x = acc[ni][e] * __int_as_float(rw.w);
          S_h[int64_t(rw.x) * hd + col] = x, S_h[int64_t(rw.y) * hd + col] = x;
        }
      }
  }
}

/// ws[s] (holding segment s's state contribution for s < n_seg - 1) := the incoming state plus
/// the contributions of segments 0..s-1, in the kernels' fragment layout. One thread per float4.
__global__ void __launch_bounds__(256) la_chunk_scan_kernel(const ChunkArgs a) {
  // Launched with PDL behind the delta pass: everything below reads its output (and the state,
  // which earlier kernels wrote). The output pass may launch once every CTA got here.
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.y, nw = a.nw;
  const int64_t row_h = int64_t(blockIdx.z) * a.heads + h, rows_total = int64_t(a.heads) * gridDim.z;
  const int u = blockIdx.x * blockDim.x + threadIdx.x;
  const int nfrag = nw * kNI * 32;
  if (u >= nfrag + kFeat / 4) return;
  const float* S_h = a.S + row_h * a.D * a.hd;
  const float* z_h = a.z + row_h * a.D;
  float run[4];
  if (u < nfrag) {
    const int w = u / (kNI * 32), ni = (u / 32) % kNI, lane = u % 32, g = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = 16 * w + g + 8 * (e >> 1);  // the wgmma kernel's last warps may pass hd
      run[e] = col < a.hd ? load_state(S_h, a.hd, 8 * ni + 2 * tq + (e & 1), col, a.sym) : 0.f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) run[e] = load_state(z_h, 1, 4 * (u - nfrag) + e, 0, a.sym);
  }
  float4* p = reinterpret_cast<float4*>(a.ws + row_h * ws_row_floats(nw)) + u;
  const int64_t stride = rows_total * ws_row_floats(nw) / 4;  // float4s per segment
  for (int s0 = 0; s0 < a.n_seg; s0 += 8) {  // 8 loads in flight, then 8 stores
    float4 d[8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
      d[i] = s0 + i < a.n_seg - 1 ? p[(s0 + i) * stride] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (s0 + i < a.n_seg) {
        p[(s0 + i) * stride] = make_float4(run[0], run[1], run[2], run[3]);
        run[0] += d[i].x, run[1] += d[i].y, run[2] += d[i].z, run[3] += d[i].w;
      }
  }
}

/// Which warp generates which units (bit masks), longest first onto the least loaded warp.
void assign_units(int nt, bool delta, unsigned* units) {
  int cost[kUnits], load[kMaxWarps] = {};
  for (int u = 0; u < kUnits; ++u) {  // rough instructions per lane
    if (u < kUnitQ) cost[u] = delta ? 0 : 60 + 60 * (u + 1);
    else if (u < kUnitK) cost[u] = delta ? 0 : 450;
    else cost[u] = 110;
  }
  assign_units_greedy(cost, kUnits, load, nt, kMaxWarps, units);
}

template <class T, bool DELTA, int MAXW>
cudaError_t launch_tc(const ChunkArgs& a, dim3 grid, cudaStream_t stream) {
  static std::atomic<unsigned long long> configured{0};
  const int smem = smem_bytes(MAXW);
  cudaError_t e = ensure_smem(la_tc_kernel<T, DELTA, MAXW>, smem, configured);
  if (e != cudaSuccess) return e;
  la_tc_kernel<T, DELTA, MAXW><<<grid, 32 * a.nw, smem_bytes(a.nw), stream>>>(a);
  return cudaGetLastError();
}

template <class T, bool DELTA>
cudaError_t launch_tc_any(const ChunkArgs& a, dim3 grid, cudaStream_t stream) {
  return a.nw <= kMinWarps ? launch_tc<T, DELTA, kMinWarps>(a, grid, stream)
                           : launch_tc<T, DELTA, kMaxWarps>(a, grid, stream);
}

std::size_t la_prefill_tc_segment_bytes(int64_t rows, int head_dim) {
  return std::size_t(rows) * ws_row_floats(head_dim / 16) * sizeof(float);
}

}  // namespace

cudaError_t latc::launch_la_chunk_scan(const ChunkArgs& a, int64_t n_seqs, cudaStream_t stream) {
  const int slots = a.nw * kNI * 32 + kFeat / 4;  // float4s per (sequence, head) row
  return launch_pdl(la_chunk_scan_kernel, dim3(unsigned((slots + 255) / 256), unsigned(a.heads), unsigned(n_seqs)),
                    dim3(256), 0, stream, a);
}

cudaError_t launch_la_prefill_tc(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace,
                                 std::size_t workspace_bytes, bool* handled) {
  *handled = false;
  const ops::LinearAttentionShape& sh = p.shape;
  const bool ok = (p.dtype == DType::BF16 || p.dtype == DType::F16) && sh.feature_dim == kF && sh.head_dim % 16 == 0 &&
                  sh.head_dim >= 16 * kMinWarps && sh.head_dim <= 16 * kMaxWarps && sh.heads > 0 && sh.heads <= 65535 &&
                  p.n_seqs > 0 && p.n_seqs <= 65535 &&
                  aligned_to(p.q, 16) && aligned_to(p.k, 16) && aligned_to(p.v, 16) && aligned_to(p.y, 4) &&
                  p.ld_q % 8 == 0 && p.ld_k % 8 == 0 && p.ld_v % 8 == 0 && p.ld_y % 2 == 0 && p.n_tokens > 0;
  if (!ok) return cudaSuccess;
  *handled = true;
  ChunkArgs a = chunk_args(p);
  a.nw = sh.head_dim / 16;
  const int per_sm = a.nw <= kMinWarps ? 2 : 1;  // resident CTAs per SM (registers, smem)
  const std::size_t seg_bytes = la_prefill_tc_segment_bytes(int64_t(sh.heads) * p.n_seqs, sh.head_dim);
  return dispatch_act_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (std::is_same<T, float>::value) {
      return cudaErrorInvalidValue;
    } else {
      return launch_segmented(
          a, p, per_sm, seg_bytes, workspace, workspace_bytes,
          [&](bool delta, unsigned* units) { assign_units(a.nw, delta, units); },
          [&](const ChunkArgs& c, dim3 grid, auto delta, bool) { return launch_tc_any<T, decltype(delta)::value>(c, grid, stream); },
          stream);
    }
  });
}

}  // namespace cuda
}  // namespace based_core
