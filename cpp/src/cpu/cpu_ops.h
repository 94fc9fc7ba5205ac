// cpu_ops.h: the CPU reference implementations of the ops in based_core/ops.h.
//
// Free functions, one per op, called by CpuBackend. Everything is computed in
// fp32 with double accumulators for the reductions where that is cheap; all
// tensors (activations and weights) must be F32 on this backend. Each function
// validates its parameter struct and throws InvalidArgument / TypeMismatch /
// OutOfRange with a message naming the op and the field.
#pragma once

#include <string>

#include "based_core/error.h"
#include "based_core/ops.h"

namespace based_core {
namespace cpu {

void embedding(const ops::EmbeddingParams& p);
void rmsnorm(const ops::RmsNormParams& p);
void gemm(const ops::GemmParams& p);
void la_prefill(const ops::LaPrefillParams& p);
void la_decode(const ops::LaDecodeParams& p);
void swa_prefill(const ops::SwaPrefillParams& p);
void swa_decode(const ops::SwaDecodeParams& p);
void conv_prefill(const ops::ConvPrefillParams& p);
void conv_decode(const ops::ConvDecodeParams& p);
void swiglu(const ops::SwigluParams& p);
void argmax(const ops::ArgmaxParams& p);
void sample(const ops::SampleParams& p);

namespace detail {

// Throws InvalidArgument("<op>: <what>") unless cond holds.
inline void require(bool cond, const char* op, const std::string& what) {
  if (!cond) throw InvalidArgument(std::string(op) + ": " + what);
}

// The CPU backend computes and stores everything in fp32 (the model converts its
// weights at load time), so any other dtype is a caller bug, not a conversion to do.
inline void require_f32(DType t, const char* op, const char* field) {
  if (t != DType::F32)
    throw TypeMismatch(std::string(op) + ": " + field +
                       " must be float32 on the CPU backend, got " + dtype_name(t));
}

// Non-null pointer required whenever the op has work to do.
inline void require_ptr(const void* ptr, bool needed, const char* op, const char* field) {
  if (needed && ptr == nullptr)
    throw InvalidArgument(std::string(op) + ": " + field + " is null");
}

inline void require_nonneg(int64_t v, const char* op, const char* field) {
  if (v < 0)
    throw InvalidArgument(std::string(op) + ": " + field + " must be >= 0, got " +
                          std::to_string(v));
}

// A row stride must cover the row's logical width (only checked when there are rows).
inline void require_ld(int64_t ld, int64_t width, int64_t rows, const char* op, const char* field) {
  if (rows > 0 && ld < width)
    throw InvalidArgument(std::string(op) + ": " + field + " (" + std::to_string(ld) +
                          ") must be >= the row width " + std::to_string(width));
}

// Decode ops update per-slot state in parallel: slots must be >= 0 and distinct
// (two rows of one slot in a step would race and have no defined order).
void check_decode_slots(const int32_t* slots, int64_t n, const char* op);

}  // namespace detail
}  // namespace cpu
}  // namespace based_core
