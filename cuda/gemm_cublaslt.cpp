// gemm_cublaslt.cpp: GemmParams through cuBLASLt.
//
// Row-major Y[m, n] = X[m, k] W[n, k]^T is, in cuBLAS's column-major view,
// Y^T (n x m, ld ldy) = op_T(W as k x n, ld k) * (X^T as k x m, ld ldx): A = W transposed,
// B = X, C = D = Y, and the bias (length n) runs along D's rows, as CUBLASLT_EPILOGUE_BIAS
// expects.
#include "gemm_cublaslt.h"

#include <string>

#include "based_core/error.h"
#include "cuda_backend.h"
#include "kernels.h"

namespace based_core {
namespace cuda {
namespace {

constexpr std::size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
constexpr std::size_t kMaxPlans = 512;

[[noreturn]] void throw_cublas(cublasStatus_t st, const char* call, const char* file, int line) {
  throw CudaError(std::string(call) + " failed: " + cublasLtGetStatusName(st) + ": " +
                  cublasLtGetStatusString(st) + " (" + file + ":" + std::to_string(line) + ")");
}

#define BASED_CUBLAS_CHECK(call)                                              \
  do {                                                                        \
    const cublasStatus_t based_st_ = (call);                                  \
    if (based_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      throw_cublas(based_st_, #call, __FILE__, __LINE__);                     \
  } while (0)

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: throw TypeMismatch(std::string("gemm: unsupported dtype ") + dtype_name(t));
  }
}

/// Largest power of two (<= 256) dividing the address; cuBLASLt picks algorithms by it.
int alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  int al = 1;
  while (al < 256 && (a % (2 * al)) == 0) al *= 2;
  return p ? al : 256;
}

}  // namespace

GemmCublasLt::GemmCublasLt(cudaStream_t stream) : stream_(stream) {
  BASED_CUBLAS_CHECK(cublasLtCreate(&handle_));
  const cudaError_t e = cudaMalloc(&workspace_, kWorkspaceBytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    cublasLtDestroy(handle_);
    handle_ = nullptr;
    if (e == cudaErrorMemoryAllocation)
      throw OutOfMemory("CUDA out of memory: cudaMalloc of " + std::to_string(kWorkspaceBytes) +
                        " bytes for the cuBLASLt workspace failed");
    throw_cuda_error(e, "cudaMalloc(&workspace_, kWorkspaceBytes)", __FILE__, __LINE__);
  }
  workspace_bytes_ = kWorkspaceBytes;
}

GemmCublasLt::~GemmCublasLt() {
  for (auto& kv : plans_) destroy(kv.second);
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

void GemmCublasLt::destroy(Plan& plan) noexcept {
  if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
  if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
  if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
  if (plan.op) cublasLtMatmulDescDestroy(plan.op);
  plan = Plan{};
}

bool GemmCublasLt::try_plan(const ops::GemmParams& p, const Key& key, bool bias_epilogue,
                            Plan* out) {
  Plan plan;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    const cudaDataType_t tin = cuda_type(p.in_dtype), tout = cuda_type(p.out_dtype);
    BASED_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &opT,
                                                      sizeof(opT)));
    BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &opN,
                                                      sizeof(opN)));
    if (bias_epilogue) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                        &epi, sizeof(epi)));
      const int32_t bias_type = p.bias_f32 ? int32_t(CUDA_R_32F) : tin;  // GemmParams::bias_f32
      BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
      BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &p.bias, sizeof(p.bias)));
    }
    BASED_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, tin, uint64_t(p.k), uint64_t(p.n), p.k));
    BASED_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, tin, uint64_t(p.k), uint64_t(p.m), p.ldx));
    BASED_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, tout, uint64_t(p.n), uint64_t(p.m), p.ldy));

    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_bytes_;
    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t al_x = uint32_t(std::get<8>(key)), al_w = uint32_t(std::get<9>(key)),
                   al_y = uint32_t(std::get<10>(key));
    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, sizeof(al_w)));
    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x, sizeof(al_x)));
    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_y, sizeof(al_y)));
    BASED_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_y, sizeof(al_y)));

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, plan.op, plan.a, plan.b,
                                                             plan.c, plan.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    pref = nullptr;
    if (st != CUBLAS_STATUS_SUCCESS || found < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
      if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
        throw_cublas(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
      destroy(plan);
      return false;
    }
    plan.algo = result.algo;
    plan.bias_epilogue = bias_epilogue;
    *out = plan;
    return true;
  } catch (...) {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    destroy(plan);
    throw;
  }
}

GemmCublasLt::Plan GemmCublasLt::make_plan(const ops::GemmParams& p, const Key& key) {
  Plan plan;
  // A bias through the epilogue first; if no algorithm supports it for this dtype pair
  // (a 16-bit bias with an fp32 output), plain matmul plus a bias kernel.
  if (p.bias) {
    try {
      if (try_plan(p, key, true, &plan)) return plan;
    } catch (const CudaError&) {
      // this cuBLASLt rejects the bias type: fall through to the bias kernel
    }
  }
  if (try_plan(p, key, false, &plan)) {
    plan.bias_kernel = p.bias != nullptr;
    if (plan.bias_kernel && p.out_dtype != DType::F32) {
      destroy(plan);
      throw CudaError(std::string("gemm: cuBLASLt has no bias epilogue for ") +
                      dtype_name(p.in_dtype) + " -> " + dtype_name(p.out_dtype));
    }
    return plan;
  }
  throw CudaError("gemm: cuBLASLt found no algorithm for m=" + std::to_string(p.m) +
                  " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
                  " ldx=" + std::to_string(p.ldx) + " ldy=" + std::to_string(p.ldy) + " " +
                  dtype_name(p.in_dtype) + " -> " + dtype_name(p.out_dtype));
}

void GemmCublasLt::run(const ops::GemmParams& p) {
  if (p.m == 0 || p.n == 0) return;
  const Key key{p.m,
                p.n,
                p.k,
                p.ldx,
                p.ldy,
                int(p.in_dtype),
                int(p.out_dtype),
                p.bias == nullptr ? 0 : p.bias_f32 ? 2 : 1,
                alignment(p.x),
                alignment(p.w),
                alignment(p.y),
                alignment(p.bias)};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    if (plans_.size() >= kMaxPlans) {
      for (auto& kv : plans_) destroy(kv.second);
      plans_.clear();
    }
    it = plans_.emplace(key, make_plan(p, key)).first;
  }
  Plan& plan = it->second;
  if (plan.bias_epilogue)
    BASED_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &p.bias, sizeof(p.bias)));
  const float alpha = 1.f, beta = p.accumulate ? 1.f : 0.f;
  BASED_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.op, &alpha, p.w, plan.a, p.x, plan.b, &beta,
                                    p.y, plan.c, p.y, plan.c, &plan.algo, workspace_,
                                    workspace_bytes_, stream_));
  if (plan.bias_kernel) {
    const cudaError_t e = launch_add_bias_f32(static_cast<float*>(p.y), p.ldy, p.bias,
                                              p.bias_f32 ? DType::F32 : p.in_dtype, p.m, p.n, stream_);
    if (e != cudaSuccess) throw_cuda_error(e, "launch_add_bias_f32", __FILE__, __LINE__);
  }
}

}  // namespace cuda
}  // namespace based_core
