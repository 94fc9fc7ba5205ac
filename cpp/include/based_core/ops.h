// based_core/ops.h: the op interface every backend (CPU, CUDA) implements.
//
// Each op family has a plain parameter struct of pointers, sizes, leading
// dimensions (row strides, in elements) and a dtype. All pointers point to
// memory of the backend's device. Ops never allocate and never synchronise.
// The math is SPEC.md's; the "computes:" line of each struct states it.
//
// Layouts (T = tokens in the call, row-major, row stride `ld_*`):
//   residual      fp32 [T, d]
//   activations   act dtype [T, C] (F32 on the CPU backend; BF16/F16/F32 on CUDA)
//   LA state      S fp32 [slot][H][D][hd], z fp32 [slot][H][D], D = 1 + f + f^2
//                 (feature-major: row 0 = order 0, rows 1..f = x_i/f^(1/4),
//                  rows 1+f+f*i+j = x_i x_j/(sqrt2 sqrt f))
//   SWA ring      act dtype K and V [slot][R][H][hd], R = ring_size >= window+1;
//                 position p lives in row p % R, keys stored after RoPE
//   conv tail     fp32 [slot][2][C]: a_{t-2}, a_{t-1} of the last token t seen
//
// "Prefill" ops process n_tokens consecutive tokens of ONE sequence whose
// state pointers point at that sequence's slot, starting at absolute
// position start_pos and continuing from the state already there (zeros for
// a fresh sequence). "Decode" ops process one token for each of n_tokens
// sequences; row i belongs to slot slots[i] at position positions[i], and the
// state pointers are the bases of the [slot] arrays. slots/positions live in
// device memory so that a decode step can be replayed from a CUDA graph.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "based_core/dtype.h"

struct CUstream_st;

namespace based_core {
namespace ops {

/// computes: out[t, :] = float(table[ids[t], :]); ids must be < vocab (checked by the caller).
struct EmbeddingParams {
  const int32_t* ids = nullptr;
  int64_t n_tokens = 0;
  const void* table = nullptr;  // [vocab, dim], dtype
  DType dtype = DType::F32;
  int64_t vocab = 0, dim = 0;
  float* out = nullptr;  // fp32 [n_tokens, dim] (the residual stream)
};

/// computes: y[i, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight, r = rows ? rows[i] : i,
/// reduction in fp32, then cast to dtype.
struct RmsNormParams {
  const float* x = nullptr;  // fp32 [*, dim], row stride dim
  const int32_t* rows = nullptr;  // optional gather of n_rows source rows (device memory)
  const void* weight = nullptr;  // [dim], dtype
  void* y = nullptr;  // [n_rows, dim], dtype
  DType dtype = DType::F32;
  int64_t n_rows = 0, dim = 0;
  float eps = 1e-5f;
};

/// computes: Y[m, n] = (accumulate ? Y[m, n] : 0) + sum_k X[m, k] W[n, k] + (bias ? bias[n] : 0),
/// fp32 accumulation. X, W in in_dtype; bias in in_dtype, or F32 when bias_f32; Y in
/// out_dtype (act dtype or F32).
struct GemmParams {
  const void* x = nullptr;
  int64_t ldx = 0;
  const void* w = nullptr;  // [n, k] row-major (PyTorch Linear layout), ld = k
  const void* bias = nullptr;
  /// The bias is float32 (allowed with out_dtype F32 only). cuBLASLt fuses an fp32 bias into
  /// a GEMM with fp32 output; a 16-bit one there needs a separate kernel.
  bool bias_f32 = false;
  DType in_dtype = DType::F32;
  void* y = nullptr;
  int64_t ldy = 0;
  DType out_dtype = DType::F32;
  bool accumulate = false;
  int64_t m = 0, n = 0, k = 0;
};

/// Shapes shared by the linear-attention ops. q, k: [T, heads*feature_dim], v: [T, heads*head_dim].
///
/// State layout (rows of S [D][hd] and z [D] per head), f = feature_dim:
/// - full (symmetric = false, D = 1 + f + f^2): the TaylorExp feature order, as the authors'
///   kernels keep it: row 0 sums 1, rows 1 + i sum k_i / f^(1/4), rows 1 + f + f*i + j sum
///   k_i k_j / (sqrt2 sqrt f) (times v for S).
/// - symmetric (D = 1 + f + f(f+1)/2, SPEC 2.1 "Optional compression", exact): k (x) k is
///   symmetric, so only its upper triangle is kept and every scale moves to the query side.
///   Rows [0, P), P = f(f+1)/2, are the pairs i <= j in row-major order of the upper triangle
///   (i = 0: j = 0..f-1; i = 1: j = 1..f-1; ...) and sum k_i k_j; rows P + i sum k_i; row P + f
///   sums 1 (times v for S). The query side weighs them q_i q_j / f (i < j), q_i^2 / (2f)
///   (i = j), q_i / sqrt f and 1, so phi_q . phi_k = 1 + q.k/sqrt f + (q.k)^2 / (2f) exactly as
///   in the full form: same outputs, 44% less state for f = 16 (153 rows instead of 273).
struct LinearAttentionShape {
  int heads = 16;
  int feature_dim = 16;  // f
  int head_dim = 64;     // hd (value/output dim per head)
  float eps = 1e-12f;
  bool symmetric = false;  // state layout, see above
  int64_t state_rows() const {
    const int64_t f = feature_dim;
    return symmetric ? 1 + f + f * (f + 1) / 2 : 1 + f + f * f;
  }
};

/// computes (per head, causal, diagonal included):
///   S += sum_t phi(k_t) v_t^T, z += sum_t phi(k_t), and for every t
///   y_t = (phi(q_t)^T S_t) / (phi(q_t)^T z_t + eps) with S_t, z_t including token t.
/// phi is the Taylor map [1, x/f^(1/4), x_i x_j/(sqrt2 sqrt f)].
/// One call may run a batch of n_seqs independent sequences of n_tokens tokens each: sequence b
/// reads q + b*seq_stride_q, k + b*seq_stride_k, v + b*seq_stride_v (element offsets; the row
/// strides ld_* hold within a sequence), writes y + b*seq_stride_y, and continues from and
/// updates its own state state_s + b*H*D*hd, state_z + b*H*D. E.g. FLA's [B, T, H, *] layout:
/// ld_q = H*f, seq_stride_q = T*H*f. The y rows of different sequences must not overlap.
struct LaPrefillParams {
  LinearAttentionShape shape;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t ld_q = 0, ld_k = 0, ld_v = 0;
  void* y = nullptr;  // [T, heads*head_dim] per sequence
  int64_t ld_y = 0;
  DType dtype = DType::F32;
  int64_t n_tokens = 0;      // tokens per sequence
  float* state_s = nullptr;  // [n_seqs][H][D][hd]
  float* state_z = nullptr;  // [n_seqs][H][D]
  int64_t n_seqs = 1;
  int64_t seq_stride_q = 0, seq_stride_k = 0, seq_stride_v = 0, seq_stride_y = 0;  // elements
};

/// computes, for row i (slot s = slots[i]): S_s += phi(k_i) v_i^T; z_s += phi(k_i);
/// y_i = (phi(q_i)^T S_s) / (phi(q_i)^T z_s + eps). Update first, then read out.
struct LaDecodeParams {
  LinearAttentionShape shape;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t ld_q = 0, ld_k = 0, ld_v = 0;
  void* y = nullptr;
  int64_t ld_y = 0;
  DType dtype = DType::F32;
  int64_t n_tokens = 0;
  const int32_t* slots = nullptr;  // [n_tokens], device
  float* state_s = nullptr;  // base: [slot][H][D][hd]
  float* state_z = nullptr;  // base: [slot][H][D]
};

/// Shapes shared by the sliding-window attention ops. qkv rows hold q | k | v, each
/// [heads*head_dim] head-major (the layout of the checkpoint's Wqkv output).
struct SlidingWindowShape {
  int heads = 16;
  int head_dim = 64;
  int window = 128;      // past tokens attended besides the current one (config W // 2)
  int rotary_dim = 64;   // rotate-half RoPE over the first rotary_dim dims of q and k
  float rope_base = 10000.f;
  float scale = 0.125f;  // softmax scale, head_dim^-0.5
  int ring_size = 129;   // R >= window + 1
};

/// computes: for token t at position p = start_pos + t, with q, k rotated at p:
///   o_t = sum_{j = max(0, p - window)}^{p} softmax_j(q_p . k_j * scale) v_j
/// Keys of positions < start_pos come from the ring (rows (j % R)); afterwards the ring
/// holds the post-RoPE k and v of the last min(R, start_pos + n_tokens) positions.
struct SwaPrefillParams {
  SlidingWindowShape shape;
  const void* qkv = nullptr;
  int64_t ld_qkv = 0;
  void* out = nullptr;  // [T, heads*head_dim]
  int64_t ld_out = 0;
  DType dtype = DType::F32;
  int64_t n_tokens = 0;
  int64_t start_pos = 0;
  void* ring_k = nullptr;  // this slot: [R][H][hd], dtype
  void* ring_v = nullptr;
};

/// computes, for row i (slot s, position p = positions[i]): rotate q_i, k_i at p; write
/// k_i, v_i to ring row p % R of slot s; o_i = softmax attention of q_i over the ring rows
/// of positions max(0, p - window) .. p.
struct SwaDecodeParams {
  SlidingWindowShape shape;
  const void* qkv = nullptr;
  int64_t ld_qkv = 0;
  void* out = nullptr;
  int64_t ld_out = 0;
  DType dtype = DType::F32;
  int64_t n_tokens = 0;
  const int32_t* slots = nullptr;      // device
  const int32_t* positions = nullptr;  // device
  void* ring_k = nullptr;  // base: [slot][R][H][hd]
  void* ring_v = nullptr;
};

/// computes (BaseConv, after in_proj): a = u[:, 0:C], g = u[:, C:2C],
///   c_t = w[:,0] a_{t-2} + w[:,1] a_{t-1} + w[:,2] a_t   (a_{<0} = 0 or from the tail)
///   y_t = SiLU(c_t) * g_t
/// and leaves a_{T-2}, a_{T-1} (with the old tail where T < 2) in the tail.
struct ConvPrefillParams {
  const void* u = nullptr;  // [T, 2C], dtype
  int64_t ld_u = 0;
  const void* weight = nullptr;  // [C, 3], dtype
  void* y = nullptr;  // [T, C], dtype
  int64_t ld_y = 0;
  DType dtype = DType::F32;
  int64_t channels = 0;  // C = 2 * d_model
  int64_t n_tokens = 0;
  float* tail = nullptr;  // this slot: [2][C]
};

/// computes the same as ConvPrefillParams for one token per row i in slot slots[i].
struct ConvDecodeParams {
  const void* u = nullptr;
  int64_t ld_u = 0;
  const void* weight = nullptr;
  void* y = nullptr;
  int64_t ld_y = 0;
  DType dtype = DType::F32;
  int64_t channels = 0;
  int64_t n_tokens = 0;
  const int32_t* slots = nullptr;  // device
  float* tail = nullptr;  // base: [slot][2][C]
};

/// computes: y[t, i] = u[t, i] * SiLU(u[t, n + i]) for i < n (value first, gate second).
struct SwigluParams {
  const void* u = nullptr;  // [T, 2n]
  int64_t ld_u = 0;
  void* y = nullptr;  // [T, n]
  int64_t ld_y = 0;
  DType dtype = DType::F32;
  int64_t n = 0;
  int64_t n_tokens = 0;
};

/// computes: out[i] = argmax_j logits[i, j] (lowest index on ties).
struct ArgmaxParams {
  const float* logits = nullptr;  // [rows, vocab] fp32, row stride ld
  int64_t rows = 0, vocab = 0;
  int64_t ld = 0;  // row stride in floats, >= vocab; 0: vocab (e.g. vocab_padded: aligned rows)
  int64_t row_stride() const { return ld ? ld : vocab; }
  int32_t* out = nullptr;  // [rows], device
};

/// computes, for row i: a draw from softmax(logits[i] / temperature) restricted to the top_k
/// largest logits (all when 0) and, within those, to the smallest set of the most probable
/// tokens whose mass reaches top_p (ties at a threshold are all kept). The draw is
/// u = sample_uniform(seed, seqs[i], steps[i]) times the kept mass, walking the kept tokens
/// in ascending id order; the same on every backend up to float rounding of exp and sums.
/// Greedy settings (temperature <= 0 or top_k == 1) give the argmax (ArgmaxParams).
struct SampleParams {
  const float* logits = nullptr;  // [rows, vocab] fp32, row stride ld
  int64_t rows = 0, vocab = 0;
  int64_t ld = 0;  // row stride in floats, >= vocab; 0: vocab
  int64_t row_stride() const { return ld ? ld : vocab; }
  float temperature = 1.f;  // > 0
  int top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 0;
  const int32_t* seqs = nullptr;   // [rows], device: sequence index of each row
  const int32_t* steps = nullptr;  // [rows], device: tokens already drawn for that sequence
  int32_t* out = nullptr;          // [rows], device
};

}  // namespace ops

/// Direction of Backend::copy (all the same on the CPU backend).
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

/// A backend owns a device and a stream and runs the ops on it. All calls are
/// asynchronous with respect to the host except copies to the host and
/// synchronize(). A backend is used by one thread at a time (a Session owns
/// one stream's worth of work); the Model's weights are read-only and shared.
class Backend {
 public:
  /// Destroying a backend while memory it allocated is still in use is an
  /// error; Tensors and Sessions keep their backend alive for that reason.
  virtual ~Backend() = default;

  virtual Device device() const = 0;  ///< the device this backend runs on
  /// The dtype activations use for a model of weight dtype `weights`.
  virtual DType activation_dtype(DType weights) const = 0;

  /// Allocates `bytes` of device memory. Throws OutOfMemory naming the size.
  virtual void* allocate(std::size_t bytes) = 0;
  /// Frees memory from allocate() of this backend (after queued work using it).
  virtual void deallocate(void* p) noexcept = 0;
  /// Copies `bytes` between host and device memory as `kind` says. Host
  /// sources are read before the call returns; copies to the host wait for
  /// the data. Throws InvalidArgument for null pointers, CudaError on failure.
  virtual void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) = 0;
  /// Sets `bytes` of device memory at `dst` to zero (queued like an op).
  virtual void fill_zero(void* dst, std::size_t bytes) = 0;
  /// Waits until all work queued on this backend has finished.
  virtual void synchronize() = 0;
  /// Orders this backend's stream after the work already queued on `external`
  /// (a cudaStream_t; nullptr means the legacy default stream). No-op on the CPU.
  virtual void wait_for(CUstream_st* /*external*/) {}
  /// Makes `external` wait for the work queued so far on this backend's stream.
  virtual void signal_to(CUstream_st* /*external*/) {}

  /// The ops: each enqueues the work its params struct's "computes:" line
  /// states. Throws InvalidArgument (bad sizes, strides or null pointers) or
  /// TypeMismatch (dtypes) before enqueuing anything, OutOfRange for token ids
  /// a backend can see on the host (the CPU's embedding), CudaError when a
  /// launch fails.
  virtual void embedding(const ops::EmbeddingParams& p) = 0;
  virtual void rmsnorm(const ops::RmsNormParams& p) = 0;
  virtual void gemm(const ops::GemmParams& p) = 0;
  virtual void la_prefill(const ops::LaPrefillParams& p) = 0;
  virtual void la_decode(const ops::LaDecodeParams& p) = 0;
  virtual void swa_prefill(const ops::SwaPrefillParams& p) = 0;
  virtual void swa_decode(const ops::SwaDecodeParams& p) = 0;
  virtual void conv_prefill(const ops::ConvPrefillParams& p) = 0;
  virtual void conv_decode(const ops::ConvDecodeParams& p) = 0;
  virtual void swiglu(const ops::SwigluParams& p) = 0;
  virtual void argmax(const ops::ArgmaxParams& p) = 0;
  virtual void sample(const ops::SampleParams& p) = 0;

  /// rmsnorm(n) then gemm(g), for a gemm that reads the norm's output (g.x == n.y,
  /// g.m == n.n_rows): the same results, both outputs written. A backend may run the
  /// pair as one kernel (the CUDA one does for one-row decode steps, where the norm
  /// alone is a launch as long as its work); the default runs the two ops.
  virtual void rmsnorm_gemm(const ops::RmsNormParams& n, const ops::GemmParams& g) {
    rmsnorm(n);
    gemm(g);
  }
  /// swiglu(s) then gemm(g), for a gemm that reads the SwiGLU output (g.x == s.y,
  /// g.m == s.n_tokens); as rmsnorm_gemm.
  virtual void swiglu_gemm(const ops::SwigluParams& s, const ops::GemmParams& g) {
    swiglu(s);
    gemm(g);
  }

  /// Records the work `fn` enqueues into a replayable graph (CUDA graphs) and
  /// returns its handle, without running it. Backends without graphs return
  /// nullptr and do not call fn; callers then simply run fn each time. Work in
  /// fn must not read host memory that changes between replays.
  virtual void* capture_graph(const std::function<void()>& /*fn*/) { return nullptr; }
  /// Enqueues one run of a graph from capture_graph() of this backend.
  virtual void replay_graph(void* /*graph*/) {}
  /// Frees a graph from capture_graph() of this backend.
  virtual void destroy_graph(void* /*graph*/) noexcept {}
};

}  // namespace based_core
