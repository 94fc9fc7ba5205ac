// gemm_cublaslt.h: GemmParams through cuBLASLt, with a per-shape plan cache.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "based_core/ops.h"

namespace based_core {
namespace cuda {

/// Row-major Y[m, n] = X[m, k] W[n, k]^T (+ bias) (+ Y when accumulate), fp32 compute
/// (CUBLAS_COMPUTE_32F: exact fp32 for F32, no TF32). Owns the cuBLASLt handle and a
/// workspace allocated once. Plans (descriptors + heuristic algorithm) are cached per
/// shape, strides, dtypes, flags and pointer alignments. Not thread-safe (one per backend).
class GemmCublasLt {
 public:
  /// Call with the backend's device current.
  explicit GemmCublasLt(cudaStream_t stream);
  ~GemmCublasLt();
  GemmCublasLt(const GemmCublasLt&) = delete;
  GemmCublasLt& operator=(const GemmCublasLt&) = delete;

  /// Enqueues the GEMM on the stream (parameters already validated). Throws CudaError.
  void run(const ops::GemmParams& p);

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                         int, int>;  // m n k ldx ldy in out bias(0 none, 1 in dtype, 2 fp32) alignX alignW alignY alignBias
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool bias_epilogue = false;  // bias added by cuBLASLt
    bool bias_kernel = false;    // bias added by a separate kernel after the matmul
  };

  Plan make_plan(const ops::GemmParams& p, const Key& key);
  /// Returns false (and frees what it made) when cuBLASLt offers no algorithm.
  bool try_plan(const ops::GemmParams& p, const Key& key, bool bias_epilogue, Plan* plan);
  static void destroy(Plan& plan) noexcept;

  cublasLtHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace cuda
}  // namespace based_core
