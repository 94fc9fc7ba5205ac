// prefill_chunk.h: the default number of rows per prefill pass (SessionOptions::prefill_chunk = 0).
#pragma once

#include <cstddef>
#include <cstdint>

namespace based_core {

/// Workspace the auto default may spend on prefill rows on CUDA.
constexpr std::size_t kPrefillWorkspaceBudget = std::size_t(1) << 30;

/// Rows per prefill pass when the caller leaves it to the library. CPU: 512 (the passes are
/// cache-sized; longer ones do not run faster). CUDA: the largest power of two from 8192 to
/// 32768 rows whose workspace (row_bytes each) fits in kPrefillWorkspaceBudget, at least 8192.
/// Longer passes mean fewer weight-GEMM launches, larger cuBLASLt tiles and one pass for
/// two 16384-token prompts (based-360m B2 L16384: 665 -> 689 tok/ms from 8192 to 32768 rows
/// on an H100, bench/profile_prefill.py); the budget keeps the workspace near 1 GiB for every
/// released model (based-360m ~30 KiB a row -> 32768 rows; based-1b ~53 KiB -> 16384).
inline int64_t default_prefill_chunk(std::size_t row_bytes, bool cuda) {
  if (!cuda) return 512;
  int64_t rows = 32768;
  while (rows > 8192 && std::size_t(rows) * row_bytes > kPrefillWorkspaceBudget) rows /= 2;
  return rows;
}

}  // namespace based_core
