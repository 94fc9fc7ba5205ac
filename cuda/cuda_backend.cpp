// cuda_backend.cpp: CudaBackend: memory, copies, and parameter checks in front of the kernels.
#include "cuda_backend.h"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "gemm_cublaslt.h"
#include "graph_info.h"
#include "kernels.h"

namespace based_core {
namespace cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so that the backend stays usable
  throw CudaError(std::string(call) + " failed: " + cudaGetErrorName(err) + ": " +
                  cudaGetErrorString(err) + " (" + file + ":" + std::to_string(line) + ")");
}

namespace {

// A graph capture in one thread is invalidated by device-synchronising calls
// made meanwhile in another (cudaFree, tearing down a stream or a cuBLASLt
// handle). Captures hold this lock shared; those calls hold it exclusively.
// Nothing run inside a capture may allocate or free (it would deadlock here).
std::shared_mutex& capture_mutex() {
  static std::shared_mutex* m = new std::shared_mutex();  // never destroyed: used from destructors at exit
  return *m;
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw InvalidArgument(std::string(op) + ": " + what);
}

void require_act(DType t, const char* op) {
  if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
    throw TypeMismatch(std::string(op) + ": dtype must be float32, float16 or bfloat16, got " +
                       dtype_name(t));
}

std::string num(int64_t v) { return std::to_string(v); }

void check_swa_shape(const ops::SlidingWindowShape& s, const char* op) {
  require(s.heads > 0 && s.heads <= 65535, op, "heads must be in [1, 65535], got " + num(s.heads));
  require(s.head_dim > 0 && s.head_dim <= kMaxHeadDim, op,
          "head_dim must be in [1, " + num(kMaxHeadDim) + "], got " + num(s.head_dim));
  require(s.rotary_dim >= 0 && s.rotary_dim % 2 == 0 && s.rotary_dim <= s.head_dim, op,
          "rotary_dim must be even and <= head_dim, got " + num(s.rotary_dim));
  require(s.window >= 0 && s.window <= 4096, op, "window must be in [0, 4096], got " + num(s.window));
  require(s.ring_size >= s.window + 1, op,
          "ring_size must be >= window + 1, got " + num(s.ring_size) + " for window " +
              num(s.window));
}

void check_la_shape(const ops::LinearAttentionShape& s, const char* op) {
  require(s.heads > 0 && s.heads <= 65535, op, "heads must be in [1, 65535], got " + num(s.heads));
  require(s.feature_dim > 0 && s.feature_dim <= kMaxFeatureDim, op,
          "feature_dim must be in [1, " + num(kMaxFeatureDim) + "], got " + num(s.feature_dim));
  require(s.head_dim > 0 && s.head_dim <= kMaxHeadDim && s.head_dim % 4 == 0, op,
          "head_dim must be a multiple of 4 in [4, " + num(kMaxHeadDim) + "], got " +
              num(s.head_dim));
}

}  // namespace

CudaBackend::CudaBackend(int device) : device_(device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) throw_cuda_error(e, "cudaGetDeviceCount(&count)", __FILE__, __LINE__);
  if (device < 0 || device >= count)
    throw CudaError("cuda:" + std::to_string(device) + ": no such device (" +
                    std::to_string(count) + " visible)");
  ensure_device();
  BASED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    gemm_ = std::make_unique<GemmCublasLt>(stream_);
  } catch (...) {
    cudaStreamDestroy(stream_);
    throw;
  }
  // la_prefill splits short batches into segments through this; without it (allocation
  // failed) it runs one pass per head, which is correct but slower for few heads.
  if (cudaMalloc(&la_workspace_, kLaPrefillWorkspaceBytes) != cudaSuccess) {
    cudaGetLastError();
    la_workspace_ = nullptr;
  }
  // Likewise argmax splits few rows over several CTAs through this (zeroed here; every
  // launch leaves it zeroed), and uses one CTA per row without it.
  const std::size_t ab = argmax_workspace_bytes(kArgmaxSplitRows);
  if (cudaMalloc(&argmax_workspace_, ab) != cudaSuccess || cudaMemsetAsync(argmax_workspace_, 0, ab, stream_) != cudaSuccess) {
    cudaGetLastError();
    if (argmax_workspace_) cudaFree(argmax_workspace_);
    argmax_workspace_ = nullptr;
  }
}

CudaBackend::~CudaBackend() {
  std::unique_lock<std::shared_mutex> lock(capture_mutex());
  int cur = -1;
  cudaGetDevice(&cur);
  if (cur != device_) cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  gemm_.reset();
  if (la_workspace_) cudaFree(la_workspace_);
  if (argmax_workspace_) cudaFree(argmax_workspace_);
  if (stream_) cudaStreamDestroy(stream_);
  cudaGetLastError();
  if (cur >= 0 && cur != device_) cudaSetDevice(cur);
}

void CudaBackend::ensure_device() const {
  int cur = -1;
  BASED_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device_) BASED_CUDA_CHECK(cudaSetDevice(device_));
}

void CudaBackend::check_launch(cudaError_t err, const char* op) const {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  throw CudaError(std::string(op) + ": kernel launch failed: " + cudaGetErrorName(err) + ": " +
                  cudaGetErrorString(err));
}

DType CudaBackend::activation_dtype(DType weights) const {
  require_act(weights, "activation_dtype");
  return weights;
}

void* CudaBackend::allocate(std::size_t bytes) {
  ensure_device();
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    throw OutOfMemory("CUDA out of memory: cudaMalloc of " + std::to_string(bytes) + " bytes (" +
                      std::to_string(bytes >> 20) + " MiB) failed on cuda:" +
                      std::to_string(device_) + " (" + std::to_string(free_b >> 20) + " MiB free of " +
                      std::to_string(total_b >> 20) + " MiB)");
  }
  if (e != cudaSuccess) throw_cuda_error(e, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
  return p;
}

void CudaBackend::deallocate(void* p) noexcept {
  if (!p) return;
  int cur = -1;
  cudaGetDevice(&cur);
  if (cur != device_) cudaSetDevice(device_);
  {
    std::unique_lock<std::shared_mutex> lock(capture_mutex());
    cudaFree(p);
  }
  cudaGetLastError();
}

void CudaBackend::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  if (bytes == 0) return;
  require(dst != nullptr && src != nullptr, "copy", "null pointer");
  ensure_device();
  const cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                            : cudaMemcpyDeviceToDevice;
  BASED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, stream_));
  if (kind == CopyKind::DeviceToHost) BASED_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  require(dst != nullptr, "fill_zero", "null pointer");
  ensure_device();
  BASED_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_));
}

void CudaBackend::synchronize() {
  ensure_device();
  BASED_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// Cross-stream ordering through an event: `to` waits for what `from` has queued.
static void order_streams(cudaStream_t from, cudaStream_t to) {
  cudaEvent_t ev;
  BASED_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t e1 = cudaEventRecord(ev, from);
  cudaError_t e2 = e1 == cudaSuccess ? cudaStreamWaitEvent(to, ev, 0) : e1;
  cudaEventDestroy(ev);  // safe: destruction is deferred until the event completes
  BASED_CUDA_CHECK(e2);
}

void CudaBackend::wait_for(CUstream_st* external) {
  ensure_device();
  order_streams(external ? external : cudaStreamLegacy, stream_);
}

void CudaBackend::signal_to(CUstream_st* external) {
  ensure_device();
  order_streams(stream_, external ? external : cudaStreamLegacy);
}

void CudaBackend::embedding(const ops::EmbeddingParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "embedding");
  require(p.n_tokens > 0 && p.dim > 0 && p.vocab > 0, "embedding", "bad sizes");
  require(p.ids && p.table && p.out, "embedding", "null pointer");
  ensure_device();
  check_launch(launch_embedding(p, stream_), "embedding");
}

static void check_rmsnorm(const ops::RmsNormParams& p) {
  require_act(p.dtype, "rmsnorm");
  require(p.n_rows > 0 && p.dim > 0, "rmsnorm", "bad sizes");
  require(p.x && p.weight && p.y, "rmsnorm", "null pointer");
}

static void check_gemm(const ops::GemmParams& p) {
  require_act(p.in_dtype, "gemm");
  require_act(p.out_dtype, "gemm");
  require(p.out_dtype == p.in_dtype || p.out_dtype == DType::F32, "gemm",
          std::string("out_dtype must be in_dtype or float32, got ") + dtype_name(p.out_dtype));
  require(p.m > 0 && p.n > 0 && p.k > 0, "gemm",
          "m, n, k must be positive, got " + num(p.m) + ", " + num(p.n) + ", " + num(p.k));
  require(p.ldx >= p.k && p.ldy >= p.n, "gemm",
          "ldx must be >= k and ldy >= n, got ldx " + num(p.ldx) + ", ldy " + num(p.ldy));
  require(p.x && p.w && p.y, "gemm", "null pointer");
  require(!p.bias_f32 || p.out_dtype == DType::F32, "gemm", "a float32 bias needs out_dtype float32");
}

static void check_swiglu(const ops::SwigluParams& p) {
  require_act(p.dtype, "swiglu");
  require(p.n_tokens > 0 && p.n_tokens <= 0x7fffffff && p.n > 0, "swiglu", "bad sizes");
  require(p.ld_u >= 2 * p.n && p.ld_y >= p.n, "swiglu", "row strides too small for n");
  require(p.u && p.y, "swiglu", "null pointer");
}

// A batch-1 decode step is weight-bandwidth bound: the GEMV streams W once and beats
// cuBLASLt there; from two rows on cuBLASLt is as fast or faster (bench/gemm_decode.py).
// BASED_CORE_GEMM=cublaslt|gemv forces a path (for those comparisons).
static bool use_gemv(const ops::GemmParams& p) {
  const char* force = std::getenv("BASED_CORE_GEMM");
  const std::string path = force ? force : "";
  return (path == "gemv" || (path != "cublaslt" && p.m == 1)) && gemv_applies(p);
}

// The GEMV computes the norm or SwiGLU before it itself (gemv.cu) unless BASED_CORE_FUSE=0
// (for A/B timings).
static bool fuse_into_gemv(const ops::GemmParams& p) {
  const char* f = std::getenv("BASED_CORE_FUSE");
  return !(f && std::string(f) == "0") && use_gemv(p);
}

void CudaBackend::rmsnorm(const ops::RmsNormParams& p) {
  if (p.n_rows == 0) return;
  check_rmsnorm(p);
  ensure_device();
  check_launch(launch_rmsnorm(p, stream_), "rmsnorm");
}

void CudaBackend::gemm(const ops::GemmParams& p) {
  if (p.m == 0 || p.n == 0) return;
  check_gemm(p);
  ensure_device();
  if (use_gemv(p)) return check_launch(launch_gemv(p, stream_), "gemm (gemv)");
  gemm_->run(p);
}

void CudaBackend::rmsnorm_gemm(const ops::RmsNormParams& n, const ops::GemmParams& g) {
  if (g.n > 0 && fuse_into_gemv(g) && gemv_rmsnorm_applies(n, g)) {  // one row (see gemv.cu)
    check_rmsnorm(n);
    check_gemm(g);
    ensure_device();
    return check_launch(launch_gemv_rmsnorm(n, g, stream_), "rmsnorm_gemm (gemv)");
  }
  rmsnorm(n);
  gemm(g);
}

void CudaBackend::swiglu_gemm(const ops::SwigluParams& s, const ops::GemmParams& g) {
  if (g.n > 0 && fuse_into_gemv(g) && gemv_swiglu_applies(s, g)) {  // one row (see gemv.cu)
    check_swiglu(s);
    check_gemm(g);
    ensure_device();
    return check_launch(launch_gemv_swiglu(s, g, stream_), "swiglu_gemm (gemv)");
  }
  swiglu(s);
  gemm(g);
}

void CudaBackend::la_prefill(const ops::LaPrefillParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "la_prefill");
  check_la_shape(p.shape, "la_prefill");
  require(p.n_tokens > 0, "la_prefill", "n_tokens must be positive");
  const int64_t hf = int64_t(p.shape.heads) * p.shape.feature_dim,
                hv = int64_t(p.shape.heads) * p.shape.head_dim;
  require(p.ld_q >= hf && p.ld_k >= hf && p.ld_v >= hv && p.ld_y >= hv, "la_prefill",
          "row strides too small for the shape");
  require(p.q && p.k && p.v && p.y && p.state_s && p.state_z, "la_prefill", "null pointer");
  require(p.n_seqs >= 0 && p.n_seqs <= 65535, "la_prefill", "n_seqs must be in [0, 65535], got " + num(p.n_seqs));
  require(p.n_seqs <= 1 || (p.seq_stride_q >= 0 && p.seq_stride_k >= 0 && p.seq_stride_v >= 0 && p.seq_stride_y >= 0),
          "la_prefill", "sequence strides must be >= 0");
  if (p.n_seqs == 0) return;
  ensure_device();
  check_launch(launch_la_prefill(p, stream_, la_workspace_, la_workspace_ ? kLaPrefillWorkspaceBytes : 0),
               "la_prefill");
}

void CudaBackend::la_decode(const ops::LaDecodeParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "la_decode");
  check_la_shape(p.shape, "la_decode");
  require(p.n_tokens > 0 && p.n_tokens <= 0x7fffffff, "la_decode", "bad n_tokens");
  const int64_t hf = int64_t(p.shape.heads) * p.shape.feature_dim,
                hv = int64_t(p.shape.heads) * p.shape.head_dim;
  require(p.ld_q >= hf && p.ld_k >= hf && p.ld_v >= hv && p.ld_y >= hv, "la_decode",
          "row strides too small for the shape");
  require(p.q && p.k && p.v && p.y && p.slots && p.state_s && p.state_z, "la_decode",
          "null pointer");
  require(reinterpret_cast<std::uintptr_t>(p.state_s) % 16 == 0, "la_decode", "state_s must be 16-byte aligned");
  ensure_device();
  check_launch(launch_la_decode(p, stream_), "la_decode");
}

void CudaBackend::swa_prefill(const ops::SwaPrefillParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "swa_prefill");
  check_swa_shape(p.shape, "swa_prefill");
  require(p.n_tokens > 0 && p.start_pos >= 0, "swa_prefill", "bad n_tokens or start_pos");
  const int64_t hd = int64_t(p.shape.heads) * p.shape.head_dim;
  require(p.ld_qkv >= 3 * hd && p.ld_out >= hd, "swa_prefill", "row strides too small for the shape");
  require(p.qkv && p.out && p.ring_k && p.ring_v, "swa_prefill", "null pointer");
  ensure_device();
  check_launch(launch_swa_prefill(p, stream_), "swa_prefill");
}

void CudaBackend::swa_decode(const ops::SwaDecodeParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "swa_decode");
  check_swa_shape(p.shape, "swa_decode");
  require(p.n_tokens > 0 && p.n_tokens <= 0x7fffffff, "swa_decode", "bad n_tokens");
  const int64_t hd = int64_t(p.shape.heads) * p.shape.head_dim;
  require(p.ld_qkv >= 3 * hd && p.ld_out >= hd, "swa_decode", "row strides too small for the shape");
  require(p.qkv && p.out && p.slots && p.positions && p.ring_k && p.ring_v, "swa_decode",
          "null pointer");
  ensure_device();
  check_launch(launch_swa_decode(p, stream_), "swa_decode");
}

void CudaBackend::conv_prefill(const ops::ConvPrefillParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "conv_prefill");
  require(p.n_tokens > 0 && p.channels > 0, "conv_prefill", "bad sizes");
  require(p.ld_u >= 2 * p.channels && p.ld_y >= p.channels, "conv_prefill",
          "row strides too small for the channels");
  require(p.u && p.weight && p.y && p.tail, "conv_prefill", "null pointer");
  ensure_device();
  check_launch(launch_conv_prefill(p, stream_), "conv_prefill");
}

void CudaBackend::conv_decode(const ops::ConvDecodeParams& p) {
  if (p.n_tokens == 0) return;
  require_act(p.dtype, "conv_decode");
  require(p.n_tokens > 0 && p.n_tokens <= 0x7fffffff && p.channels > 0, "conv_decode", "bad sizes");
  require(p.ld_u >= 2 * p.channels && p.ld_y >= p.channels, "conv_decode",
          "row strides too small for the channels");
  require(p.u && p.weight && p.y && p.slots && p.tail, "conv_decode", "null pointer");
  ensure_device();
  check_launch(launch_conv_decode(p, stream_), "conv_decode");
}

void CudaBackend::swiglu(const ops::SwigluParams& p) {
  if (p.n_tokens == 0 || p.n == 0) return;
  check_swiglu(p);
  ensure_device();
  check_launch(launch_swiglu(p, stream_), "swiglu");
}

void CudaBackend::argmax(const ops::ArgmaxParams& p) {
  if (p.rows == 0) return;
  require(p.rows > 0 && p.rows <= 0x7fffffff && p.vocab > 0 && p.vocab < 0x7ffffff0, "argmax",
          "bad sizes");
  require(p.logits && p.out, "argmax", "null pointer");
  require(p.ld == 0 || p.ld >= p.vocab, "argmax", "ld must be 0 or >= vocab");
  ensure_device();
  check_launch(launch_argmax(p, stream_, argmax_workspace_,
                             argmax_workspace_ ? argmax_workspace_bytes(kArgmaxSplitRows) : 0),
               "argmax");
}

void CudaBackend::sample(const ops::SampleParams& p) {
  if (p.rows == 0) return;
  require(p.rows > 0 && p.rows <= 0x7fffffff && p.vocab > 0 && p.vocab < 0x7ffffff0, "sample", "bad sizes");
  require(p.logits && p.out && p.seqs && p.steps, "sample", "null pointer");
  require(p.ld == 0 || p.ld >= p.vocab, "sample", "ld must be 0 or >= vocab");
  if (p.temperature <= 0.f || p.top_k == 1) {  // greedy settings
    ops::ArgmaxParams a;
    a.logits = p.logits;
    a.rows = p.rows;
    a.vocab = p.vocab;
    a.ld = p.ld;
    a.out = p.out;
    return argmax(a);
  }
  require(p.temperature > 0.f && p.top_p > 0.f && p.top_p <= 1.f && p.top_k >= 0, "sample",
          "temperature must be > 0, top_p in (0, 1], top_k >= 0");
  ensure_device();
  check_launch(launch_sample(p, stream_), "sample");
}

void* CudaBackend::capture_graph(const std::function<void()>& fn) {
  std::shared_lock<std::shared_mutex> lock(capture_mutex());
  ensure_device();
  BASED_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    fn();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream_, &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  BASED_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  if (graph_info_enabled()) describe_graph(graph, stderr);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) throw_cuda_error(e, "cudaGraphInstantiate(&exec, graph, 0)", __FILE__, __LINE__);
  return exec;
}

void CudaBackend::replay_graph(void* graph) {
  require(graph != nullptr, "replay_graph", "null graph");
  ensure_device();
  BASED_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_));
}

void CudaBackend::destroy_graph(void* graph) noexcept {
  if (!graph) return;
  int cur = -1;
  cudaGetDevice(&cur);
  if (cur != device_) cudaSetDevice(device_);
  cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
  cudaGetLastError();
}

}  // namespace cuda
}  // namespace based_core
