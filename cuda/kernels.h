// kernels.h: the host-callable launch API of the CUDA kernels (one function per op).
//
// Every launcher takes the op's parameter struct from based_core/ops.h and a stream,
// enqueues its kernel(s) and returns the launch status. Launchers never allocate,
// synchronise or throw; CudaBackend checks the parameters before calling them (the
// launchers only re-check what would make a kernel read out of bounds and return
// cudaErrorInvalidValue then).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "based_core/ops.h"

namespace based_core {
namespace cuda {

// elementwise.cu
cudaError_t launch_embedding(const ops::EmbeddingParams& p, cudaStream_t stream);
cudaError_t launch_rmsnorm(const ops::RmsNormParams& p, cudaStream_t stream);
cudaError_t launch_swiglu(const ops::SwigluParams& p, cudaStream_t stream);
/// y[m, n] += float(bias[n]) for an fp32 y with row stride ldy (the GEMM's bias when
/// cuBLASLt has no epilogue for the dtype pair).
cudaError_t launch_add_bias_f32(float* y, int64_t ldy, const void* bias, DType bias_dtype,
                                int64_t m, int64_t n, cudaStream_t stream);

// argmax.cu
/// With a workspace (argmax_workspace_bytes(rows), zeroed once; every launch leaves it zeroed),
/// rows few enough to leave SMs idle are split over several CTAs each.
cudaError_t launch_argmax(const ops::ArgmaxParams& p, cudaStream_t stream, void* workspace = nullptr,
                          std::size_t workspace_bytes = 0);
constexpr std::size_t argmax_workspace_bytes(int64_t rows) { return std::size_t(rows) * 12; }
/// Rows of the split argmax workspace the CUDA backend keeps (more rows use one CTA each).
constexpr int64_t kArgmaxSplitRows = 1024;
// gemv.cu: one-row weight GEMMs (batch-1 decode steps, 16-bit inputs)
bool gemv_applies(const ops::GemmParams& p);
cudaError_t launch_gemv(const ops::GemmParams& p, cudaStream_t stream);
/// rmsnorm(n) then gemv(g) in one kernel, for one row whose gemm reads the norm's output
/// (Backend::rmsnorm_gemm); n.y is written as the norm would.
bool gemv_rmsnorm_applies(const ops::RmsNormParams& n, const ops::GemmParams& g);
cudaError_t launch_gemv_rmsnorm(const ops::RmsNormParams& n, const ops::GemmParams& g, cudaStream_t stream);
/// swiglu(s) then gemv(g) in one kernel, likewise (Backend::swiglu_gemm).
bool gemv_swiglu_applies(const ops::SwigluParams& s, const ops::GemmParams& g);
cudaError_t launch_gemv_swiglu(const ops::SwigluParams& s, const ops::GemmParams& g, cudaStream_t stream);
// sampling.cu
cudaError_t launch_sample(const ops::SampleParams& p, cudaStream_t stream);

// short_conv.cu
cudaError_t launch_conv_prefill(const ops::ConvPrefillParams& p, cudaStream_t stream);
cudaError_t launch_conv_decode(const ops::ConvDecodeParams& p, cudaStream_t stream);

// sliding_window_prefill.cu / sliding_window_decode.cu
cudaError_t launch_swa_prefill(const ops::SwaPrefillParams& p, cudaStream_t stream);
cudaError_t launch_swa_decode(const ops::SwaDecodeParams& p, cudaStream_t stream);

// linear_attention_prefill.cu / linear_attention_decode.cu
/// `workspace` (device memory, optional) lets a call with few heads split the sequence into
/// segments that run in parallel; without it the sequence runs in one pass per head.
cudaError_t launch_la_prefill(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace = nullptr,
                              std::size_t workspace_bytes = 0);
/// Workspace the CUDA backend keeps for la_prefill (bounds the number of segments; 16 heads at
/// head_dim 64..128 use ~11 MB).
constexpr std::size_t kLaPrefillWorkspaceBytes = std::size_t(16) << 20;
// linear_attention_prefill_tc.cu: the tensor-core path (bf16/fp16, feature_dim 16, head_dim a
// multiple of 16 in [64, 128], aligned rows); *handled = false (nothing launched) otherwise.
cudaError_t launch_la_prefill_tc(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace,
                                 std::size_t workspace_bytes, bool* handled);
// linear_attention_prefill_wg.cu: the Hopper path (wgmma; compute capability 9.0 with sm_90a
// code), same calls as the tensor-core path; *handled = false (nothing launched) otherwise.
cudaError_t launch_la_prefill_wg(const ops::LaPrefillParams& p, cudaStream_t stream, void* workspace,
                                 std::size_t workspace_bytes, bool* handled);
cudaError_t launch_la_decode(const ops::LaDecodeParams& p, cudaStream_t stream);

/// Largest head_dim the attention kernels support (SWA and LA), and largest feature_dim.
constexpr int kMaxHeadDim = 128;
constexpr int kMaxFeatureDim = 16;

}  // namespace cuda
}  // namespace based_core
