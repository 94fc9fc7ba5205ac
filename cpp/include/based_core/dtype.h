// based_core/dtype.h: element types and devices. Header-only; everything
// here is a plain value or a pure function, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "based_core/error.h"

namespace based_core {

/// Element type of a tensor or of the model's weights and activations.
/// Models use BF16, F16 or F32; the others appear in checkpoints and indices.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, F64 = 3, I32 = 4, I64 = 5, U8 = 6 };

/// Bytes per element (0 for a value outside the enum).
inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

/// The PyTorch-style name: "float32", "bfloat16", ... (a static string).
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U8: return "uint8";
  }
  return "?";
}

/// Parses the names users pass for a model dtype ("bfloat16", "bf16",
/// "float16", "fp16", "half", "float32", "fp32", "float"). Throws
/// InvalidArgument for anything else.
inline DType parse_model_dtype(const std::string& s) {
  if (s == "bfloat16" || s == "bf16") return DType::BF16;
  if (s == "float16" || s == "fp16" || s == "half") return DType::F16;
  if (s == "float32" || s == "fp32" || s == "float") return DType::F32;
  throw InvalidArgument("dtype: expected one of 'bfloat16', 'float16', 'float32', got '" + s + "'");
}

/// Where memory lives.
enum class DeviceKind : int { CPU = 0, CUDA = 1 };

/// A device: the host (CPU, index 0) or one CUDA GPU by its index as the CUDA
/// runtime numbers them (after CUDA_VISIBLE_DEVICES). The default is the CPU.
struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;  ///< GPU ordinal; 0 for the CPU

  bool is_cuda() const { return kind == DeviceKind::CUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  /// "cpu" or "cuda:N" (parse_device reads it back).
  std::string str() const {
    return kind == DeviceKind::CPU ? std::string("cpu") : "cuda:" + std::to_string(index);
  }
};

/// Parses "cpu", "cuda" (= "cuda:0") or "cuda:N" with N in 0..1024. Throws
/// InvalidArgument for anything else. Does not check that the GPU exists.
inline Device parse_device(const std::string& s) {
  if (s == "cpu") return Device{DeviceKind::CPU, 0};
  if (s == "cuda") return Device{DeviceKind::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    int idx = 0;
    for (std::size_t i = 5; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') idx = -1;
      if (idx < 0) break;
      idx = idx * 10 + (s[i] - '0');
      if (idx > 1024) break;
    }
    if (idx >= 0 && idx <= 1024) return Device{DeviceKind::CUDA, idx};
  }
  throw InvalidArgument("device: expected 'cpu', 'cuda' or 'cuda:N', got '" + s + "'");
}

}  // namespace based_core
