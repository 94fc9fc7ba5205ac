// cpu_backend.h: the CPU reference backend (fp32 compute on host memory).
//
// "Device" memory is 64-byte aligned host memory, copies of every kind are
// memory copies, and every op runs synchronously on the calling thread (using
// OpenMP threads inside), so synchronize() has nothing to wait for.
// Activations are F32 whatever the weight dtype; the ops accept F32 only.
#pragma once

#include <cstddef>

#include "based_core/ops.h"

namespace based_core {

class CpuBackend : public Backend {
 public:
  /// Alignment of allocate(): a cache line, also enough for any SIMD load.
  static constexpr std::size_t kAlignment = 64;

  Device device() const override { return Device{DeviceKind::CPU, 0}; }
  DType activation_dtype(DType weights) const override;

  void* allocate(std::size_t bytes) override;
  void deallocate(void* p) noexcept override;
  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void fill_zero(void* dst, std::size_t bytes) override;
  void synchronize() override {}

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
};

}  // namespace based_core
