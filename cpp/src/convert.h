// convert.h: host dtype conversion of weight tensors.
#pragma once

#include <cstdint>
#include <vector>

#include "based_core/tensor.h"

namespace based_core {

/// Converts `n` elements at `src` (dtype `from`: F64/F32/F16/BF16) to `to`
/// (F32/F16/BF16), first rounding every value to `round_via` (the model dtype)
/// so that a CPU model stored in F32 holds exactly the bf16/fp16 weights a GPU
/// model of that dtype would. Writes n * dtype_size(to) bytes at dst.
void convert_values(const void* src, DType from, std::size_t n, DType round_via, DType to, void* dst);

}  // namespace based_core
