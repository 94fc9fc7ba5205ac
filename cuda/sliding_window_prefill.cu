// sliding_window_prefill.cu: banded causal softmax attention with RoPE over one sequence
// (SPEC 2.2), reading keys of earlier calls from the ring and refilling the ring afterwards.
//
// bf16 / fp16 at head dims 64, 112, 128 (rotary dim a multiple of 16, 16-byte aligned rows):
// the tensor-core kernel of sliding_window_prefill_tc.cuh. It also writes the ring when no
// ring row it reads is one it writes (always so for start_pos == 0); otherwise the ring
// write kernel below runs after it. Everything else (fp32, other shapes): the CUDA-core
// kernel below, then the ring write kernel.
//
// CUDA-core kernel: kernel 1 (attention) reads history rows from the ring and never writes
// it; kernel 2 then writes the post-RoPE k and v of the last min(R, n_tokens) positions.
// Stream order makes the two-kernel split the "read the history before overwriting it"
// guarantee.
//
// Its tiling: one CTA per (64-query tile, head), 256 threads as a 16x16 grid; thread
// (ty, tx) owns queries 4ty..4ty+3 and, for the scores, keys 4tx..4tx+3 of the current
// 64-key tile, for the output dims tx + 16e. Online softmax in fp32 (log2 domain).
// Keys are rotated in fp32 and rounded to the activation dtype (exactly what the ring
// stores); queries stay fp32.
#include "kernels.h"
#include "sliding_window_common.cuh"
#include "sliding_window_prefill_tc.cuh"

namespace based_core {
namespace cuda {
namespace {

constexpr int kBQ = 64, kBK = 64, kThreads = 256, kLd = 68;  // kLd: padded tile row (floats)

struct SwaPrefillArgs {
  const void* qkv;
  int64_t ld_qkv;
  void* out;
  int64_t ld_out;
  int64_t n_tokens, start_pos;
  void* ring_k;
  void* ring_v;
  int heads, hd, rd, window, ring;
  float base, scale_log2;
};

inline int prefill_smem_bytes(int hd) {
  return int(sizeof(float)) * (2 * hd * kLd + kBK * hd + kBK * kLd + 64);
}

// computes: o_t = sum_{j=max(0,p-w)}^{p} softmax_j(q_p . k_j * scale) v_j for the 64 queries
// t of this tile (p = start_pos + t), q and k rotated at their absolute positions (SPEC 2.2).
template <class T, int NPT>
__global__ void __launch_bounds__(kThreads) swa_prefill_kernel(SwaPrefillArgs a) {
  extern __shared__ __align__(16) float smem[];
  const int hd = a.hd, H = a.heads;
  float* Qt = smem;             // [hd][kLd]  rotated q * scale * log2(e), transposed
  float* Kt = Qt + hd * kLd;    // [hd][kLd]  rotated k (rounded to T), transposed
  float* Vs = Kt + hd * kLd;    // [kBK][hd]
  float* Pt = Vs + kBK * hd;    // [kBK][kLd] probabilities, transposed
  float* invf = Pt + kBK * kLd; // [rd/2]

  const T* qkv = static_cast<const T*>(a.qkv);
  const T* ring_k = static_cast<const T*>(a.ring_k);
  const T* ring_v = static_cast<const T*>(a.ring_v);
  const int h = blockIdx.y;
  const int64_t q0 = int64_t(blockIdx.x) * kBQ;
  const int nq = int(a.n_tokens - q0 < kBQ ? a.n_tokens - q0 : kBQ);
  const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int half = a.rd >> 1;

  for (int i = tid; i < half; i += kThreads) invf[i] = rope_inv_freq(i, a.rd, a.base);
  __syncthreads();

  for (int idx = tid; idx < kBQ * hd; idx += kThreads) {
    const int qq = idx / hd, d = idx - qq * hd;
    float v = 0.f;
    if (qq < nq) {
      const T* row = qkv + (q0 + qq) * a.ld_qkv + int64_t(h) * hd;
      const float f = d < a.rd ? invf[d < half ? d : d - half] : 0.f;
      v = rope_value(row, d, a.rd, f, a.start_pos + q0 + qq) * a.scale_log2;
    }
    Qt[d * kLd + qq] = v;
  }

  float o[4][NPT];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int e = 0; e < NPT; ++e) o[i][e] = 0.f;
  }

  const int64_t p0 = a.start_pos + q0;         // position of the tile's first query
  const int64_t kend = p0 + nq - 1;            // last key position (inclusive)
  const int64_t kbeg = p0 - a.window > 0 ? p0 - a.window : 0;
  for (int64_t kt0 = kbeg; kt0 <= kend; kt0 += kBK) {
    __syncthreads();  // previous tile's Kt/Vs/Pt are consumed (and Qt is written)
    for (int idx = tid; idx < kBK * hd; idx += kThreads) {
      const int kk = idx / hd, d = idx - kk * hd;
      const int64_t j = kt0 + kk;
      float kv = 0.f, vv = 0.f;
      if (j <= kend) {
        if (j < a.start_pos) {
          const int64_t r = ((j % a.ring) * H + h) * int64_t(hd) + d;
          kv = to_f(ring_k[r]);
          vv = to_f(ring_v[r]);
        } else {
          const T* row = qkv + (j - a.start_pos) * a.ld_qkv;
          const float f = d < a.rd ? invf[d < half ? d : d - half] : 0.f;
          kv = round_to<T>(rope_value(row + int64_t(H + h) * hd, d, a.rd, f, j));
          vv = to_f(row[int64_t(2 * H + h) * hd + d]);
        }
      }
      Kt[d * kLd + kk] = kv;
      Vs[kk * hd + d] = vv;
    }
    __syncthreads();

    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int b = 0; b < 4; ++b) s[i][b] = 0.f;
#pragma unroll 4
    for (int d = 0; d < hd; ++d) {
      const float4 q4 = *reinterpret_cast<const float4*>(Qt + d * kLd + ty * 4);
      const float4 k4 = *reinterpret_cast<const float4*>(Kt + d * kLd + tx * 4);
      const float qa[4] = {q4.x, q4.y, q4.z, q4.w}, kb[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int b = 0; b < 4; ++b) s[i][b] = fmaf(qa[i], kb[b], s[i][b]);
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t pq = p0 + ty * 4 + i;
      float mx = -INFINITY;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int64_t j = kt0 + tx * 4 + b;
        const bool ok = ty * 4 + i < nq && j <= pq && j >= pq - a.window;
        s[i][b] = ok ? s[i][b] : -INFINITY;
        mx = fmaxf(mx, s[i][b]);
      }
#pragma unroll
      for (int off = 1; off < 16; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float mnew = fmaxf(m[i], mx);
      const float corr = mnew == -INFINITY ? 1.f : exp2f(m[i] - mnew);
      float ps = 0.f;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        s[i][b] = mnew == -INFINITY ? 0.f : exp2f(s[i][b] - mnew);
        ps += s[i][b];
      }
      m[i] = mnew;
      l[i] = l[i] * corr + ps;  // per-thread partial; summed over the 16 tx lanes at the end
#pragma unroll
      for (int e = 0; e < NPT; ++e) o[i][e] *= corr;
    }
#pragma unroll
    for (int b = 0; b < 4; ++b)
      *reinterpret_cast<float4*>(Pt + (tx * 4 + b) * kLd + ty * 4) =
          make_float4(s[0][b], s[1][b], s[2][b], s[3][b]);
    __syncthreads();

    const int nk = int(kend - kt0 + 1 < kBK ? kend - kt0 + 1 : kBK);
    for (int j = 0; j < nk; ++j) {
      const float4 p4 = *reinterpret_cast<const float4*>(Pt + j * kLd + ty * 4);
#pragma unroll
      for (int e = 0; e < NPT; ++e) {
        const int d = tx + 16 * e;
        const float v = d < hd ? Vs[j * hd + d] : 0.f;
        o[0][e] = fmaf(p4.x, v, o[0][e]);
        o[1][e] = fmaf(p4.y, v, o[1][e]);
        o[2][e] = fmaf(p4.z, v, o[2][e]);
        o[3][e] = fmaf(p4.w, v, o[3][e]);
      }
    }
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float lt = l[i];
#pragma unroll
    for (int off = 1; off < 16; off <<= 1) lt += __shfl_xor_sync(0xffffffffu, lt, off);
    const int qq = ty * 4 + i;
    if (qq >= nq) continue;
    const float inv = 1.f / lt;
#pragma unroll
    for (int e = 0; e < NPT; ++e) {
      const int d = tx + 16 * e;
      if (d < hd) out[(q0 + qq) * a.ld_out + int64_t(h) * hd + d] = from_f<T>(o[i][e] * inv);
    }
  }
}

// computes: ring row (p % R) <- post-RoPE k_p and v_p for the last min(R, T) positions p of
// this call (SPEC 2.2, decode KV cache as a ring).
template <class T>
__global__ void swa_ring_write_kernel(SwaPrefillArgs a, int64_t first_t) {
  const T* qkv = static_cast<const T*>(a.qkv);
  T* ring_k = static_cast<T*>(a.ring_k);
  T* ring_v = static_cast<T*>(a.ring_v);
  const int64_t t = first_t + blockIdx.x;
  const int64_t pos = a.start_pos + t;
  const T* row = qkv + t * a.ld_qkv;
  const int hd = a.hd, H = a.heads, half = a.rd >> 1;
  const int64_t base = (pos % a.ring) * H * int64_t(hd);
  for (int idx = threadIdx.x; idx < H * hd; idx += blockDim.x) {
    const int h = idx / hd, d = idx - h * hd;
    const float f = d < a.rd ? rope_inv_freq(d < half ? d : d - half, a.rd, a.base) : 0.f;
    ring_k[base + idx] = from_f<T>(rope_value(row + int64_t(H + h) * hd, d, a.rd, f, pos));
    ring_v[base + idx] = row[int64_t(2 * H) * hd + idx];
  }
}

template <class T, int NPT>
cudaError_t run_prefill(const SwaPrefillArgs& a, cudaStream_t stream) {
  static std::atomic<unsigned long long> configured{0};
  auto kernel = swa_prefill_kernel<T, NPT>;
  cudaError_t e = ensure_smem(kernel, prefill_smem_bytes(NPT * 16), configured);
  if (e != cudaSuccess) return e;
  const dim3 grid(ceil_div(a.n_tokens, kBQ), unsigned(a.heads));
  kernel<<<grid, kThreads, prefill_smem_bytes(a.hd), stream>>>(a);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const int64_t n_write = a.n_tokens < a.ring ? a.n_tokens : a.ring;
  swa_ring_write_kernel<T><<<unsigned(n_write), 256, 0, stream>>>(a, a.n_tokens - n_write);
  return cudaGetLastError();
}

template <class T, int HD>
cudaError_t run_prefill_tc(const SwaPrefillArgs& a, cudaStream_t stream) {
  constexpr int kWarps = 8, kBQ = 16 * kWarps;
  static std::atomic<unsigned long long> configured{0};
  auto kernel = swatc::swa_prefill_tc_kernel<T, HD, kWarps>;
  constexpr int kMaxChunks = swatc::max_stage_chunks<HD>();
  cudaError_t e = ensure_smem(kernel, swatc::stage_bytes<HD>(kMaxChunks), configured);
  if (e != cudaSuccess) return e;
  const int nch = (a.window + 15) / 16 + kWarps;
  const int chunks = nch < kMaxChunks ? nch : kMaxChunks;
  const int n_tiles = int(ceil_div(a.n_tokens, kBQ));
  const int64_t n_write = a.n_tokens < a.ring ? a.n_tokens : a.ring;
  // ring rows read: positions [start_pos - n_hist, start_pos); written: the last n_write of
  // [start_pos, start_pos + T). Disjoint modulo R when the two spans fit in R rows together.
  const int64_t n_hist = a.start_pos < a.window ? a.start_pos : a.window;
  const bool fuse = n_hist == 0 || a.n_tokens + n_hist <= a.ring;
  swatc::Args ta{a.qkv, a.ld_qkv, a.out, a.ld_out, a.n_tokens, a.start_pos, a.ring_k, a.ring_v,
                 a.heads, a.window, a.ring, a.base, a.scale_log2,
                 n_tiles, chunks, fuse ? 1 : 0, a.n_tokens - n_write};
  const int64_t blocks = int64_t(n_tiles) * a.heads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  kernel<<<unsigned(blocks), 32 * kWarps, swatc::stage_bytes<HD>(chunks), stream>>>(ta);
  e = cudaGetLastError();
  if (e != cudaSuccess || fuse) return e;
  swa_ring_write_kernel<T><<<unsigned(n_write), 256, 0, stream>>>(a, a.n_tokens - n_write);
  return cudaGetLastError();
}

/// The tensor-core kernel takes 2-byte activations at head dims 64/112/128 with RoPE over the
/// whole head and 16-byte aligned rows.
bool tc_ok(const ops::SwaPrefillParams& p) {
  const ops::SlidingWindowShape& s = p.shape;
  const int hd = s.head_dim;
  return (p.dtype == DType::BF16 || p.dtype == DType::F16) && (hd == 64 || hd == 112 || hd == 128) &&
         s.rotary_dim == hd && p.ld_qkv % 8 == 0 && p.ld_out % 2 == 0 && aligned_to(p.qkv, 16) &&
         aligned_to(p.out, 4) && aligned_to(p.ring_k, 16) && aligned_to(p.ring_v, 16);
}

}  // namespace

cudaError_t launch_swa_prefill(const ops::SwaPrefillParams& p, cudaStream_t stream) {
  const ops::SlidingWindowShape& s = p.shape;
  if (p.n_tokens <= 0) return cudaSuccess;
  if (s.head_dim <= 0 || s.head_dim > kMaxHeadDim || s.rotary_dim < 0 || s.rotary_dim % 2 ||
      s.rotary_dim > s.head_dim || s.window < 0 || s.ring_size < s.window + 1 || s.heads <= 0 ||
      s.heads > 65535 || p.start_pos < 0)
    return cudaErrorInvalidValue;
  SwaPrefillArgs a{p.qkv, p.ld_qkv, p.out, p.ld_out, p.n_tokens, p.start_pos, p.ring_k, p.ring_v,
                   s.heads, s.head_dim, s.rotary_dim, s.window, s.ring_size, s.rope_base,
                   s.scale * kLog2e};
  if (tc_ok(p)) {
    auto tc = [&](auto tag) -> cudaError_t {
      using T = decltype(tag);
      if (s.head_dim == 64) return run_prefill_tc<T, 64>(a, stream);
      if (s.head_dim == 112) return run_prefill_tc<T, 112>(a, stream);
      return run_prefill_tc<T, 128>(a, stream);
    };
    return p.dtype == DType::BF16 ? tc(__nv_bfloat16{}) : tc(__half{});
  }
  return dispatch_act_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (s.head_dim <= 64) return run_prefill<T, 4>(a, stream);
    if (s.head_dim <= 112) return run_prefill<T, 7>(a, stream);
    return run_prefill<T, 8>(a, stream);
  });
}

}  // namespace cuda
}  // namespace based_core
