// cuda_backend.h: the CUDA implementation of based_core::Backend (internal to the CUDA library).
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "based_core/error.h"
#include "based_core/ops.h"

namespace based_core {
namespace cuda {

/// Throws CudaError "<call> failed: <name>: <description> (file:line)".
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

/// Checks a CUDA runtime call; throws based_core::CudaError naming the call and file:line.
#define BASED_CUDA_CHECK(call)                                                         \
  do {                                                                                 \
    const cudaError_t based_cuda_err_ = (call);                                        \
    if (based_cuda_err_ != cudaSuccess)                                                \
      ::based_core::cuda::throw_cuda_error(based_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

class GemmCublasLt;

/// One device, one non-blocking stream, one cuBLASLt handle with its workspace.
/// Ops are enqueued on the stream; only copies to the host and synchronize() block.
class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device{DeviceKind::CUDA, device_}; }
  DType activation_dtype(DType weights) const override;

  void* allocate(std::size_t bytes) override;
  void deallocate(void* p) noexcept override;
  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void fill_zero(void* dst, std::size_t bytes) override;
  void synchronize() override;
  void wait_for(CUstream_st* external) override;
  void signal_to(CUstream_st* external) override;

  void embedding(const ops::EmbeddingParams& p) override;
  void rmsnorm(const ops::RmsNormParams& p) override;
  void gemm(const ops::GemmParams& p) override;
  void la_prefill(const ops::LaPrefillParams& p) override;
  void la_decode(const ops::LaDecodeParams& p) override;
  void swa_prefill(const ops::SwaPrefillParams& p) override;
  void swa_decode(const ops::SwaDecodeParams& p) override;
  void conv_prefill(const ops::ConvPrefillParams& p) override;
  void conv_decode(const ops::ConvDecodeParams& p) override;
  void swiglu(const ops::SwigluParams& p) override;
  void argmax(const ops::ArgmaxParams& p) override;
  void sample(const ops::SampleParams& p) override;
  void rmsnorm_gemm(const ops::RmsNormParams& n, const ops::GemmParams& g) override;
  void swiglu_gemm(const ops::SwigluParams& s, const ops::GemmParams& g) override;

  /// Captures fn's work on the stream (thread-local capture mode) into an instantiated
  /// cudaGraphExec_t; fn's ops are recorded, not run. Throws CudaError when capture fails
  /// (e.g. fn copies to the host or allocates).
  void* capture_graph(const std::function<void()>& fn) override;
  void replay_graph(void* graph) override;
  void destroy_graph(void* graph) noexcept override;

  cudaStream_t stream() const { return stream_; }

 private:
  /// Makes device_ current for this thread if it is not already.
  void ensure_device() const;
  /// Throws CudaError "<op>: kernel launch failed: ..." when a launcher reported an error.
  void check_launch(cudaError_t err, const char* op) const;

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<GemmCublasLt> gemm_;
  void* la_workspace_ = nullptr;  // la_prefill segment states (kLaPrefillWorkspaceBytes), may be null
  void* argmax_workspace_ = nullptr;  // split argmax keys and counters (kArgmaxSplitRows), may be null
};

}  // namespace cuda
}  // namespace based_core
