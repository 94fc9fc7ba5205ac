// convert.cpp: see convert.h.
#include "convert.h"

#include <cstdint>
#include <cstring>

#include "based_core/error.h"
#include "half.h"

namespace based_core {

namespace {

// Element i of a source array. Read through memcpy: safetensors data_offsets
// need not be multiples of the element size, so `p` may be misaligned.
template <typename T>
T read_at(const void* p, std::size_t i) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + i * sizeof(T), sizeof(T));
  return v;
}

float load(const void* p, DType t, std::size_t i) {
  switch (t) {
    case DType::F64: return float(read_at<double>(p, i));
    case DType::F32: return read_at<float>(p, i);
    case DType::F16: return f16_to_float(read_at<uint16_t>(p, i));
    case DType::BF16: return bf16_to_float(read_at<uint16_t>(p, i));
    default: throw TypeMismatch(std::string("cannot convert weights of dtype ") + dtype_name(t));
  }
}

float round_to(float v, DType t) {
  if (t == DType::BF16) return bf16_to_float(float_to_bf16(v));
  if (t == DType::F16) return f16_to_float(float_to_f16(v));
  return v;
}

}  // namespace

void convert_values(const void* src, DType from, std::size_t n, DType round_via, DType to, void* dst) {
  if (from == to && (round_via == to || round_via == DType::F32)) {  // rounding is the identity
    std::memcpy(dst, src, n * dtype_size(to));
    return;
  }
  if (from != DType::F64 && from != DType::F32 && from != DType::F16 && from != DType::BF16)
    throw TypeMismatch(std::string("cannot convert weights of dtype ") + dtype_name(from));
  for (std::size_t i = 0; i < n; ++i) {
    float v = round_to(load(src, from, i), round_via);
    switch (to) {
      case DType::F32: static_cast<float*>(dst)[i] = v; break;
      case DType::F16: static_cast<uint16_t*>(dst)[i] = float_to_f16(v); break;
      case DType::BF16: static_cast<uint16_t*>(dst)[i] = float_to_bf16(v); break;
      default: throw TypeMismatch(std::string("cannot store weights as ") + dtype_name(to));
    }
  }
}

}  // namespace based_core
