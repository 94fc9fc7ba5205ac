// safetensors.h: a strict, memory-mapped reader of the safetensors format.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON mapping
// tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative
// to the byte after the header), then the data. Every field is validated
// before any byte of data is touched: header length capped and within the
// file, offsets ordered and within the data, dtype x shape = byte size with
// overflow checks. Anything else throws CheckpointError naming the problem.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "based_core/tensor.h"

namespace based_core {

class SafetensorsFile {
 public:
  /// Largest header accepted (the released checkpoints' headers are ~20 KB).
  static constexpr uint64_t kMaxHeaderBytes = 64ull << 20;

  /// Maps and validates `path`. Throws CheckpointError.
  explicit SafetensorsFile(const std::string& path);
  /// Validates an in-memory image (used by tests and fuzzers). The buffer must
  /// outlive the object.
  SafetensorsFile(const void* data, std::size_t size, std::string name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// Tensors of supported dtypes (F64, F32, F16, BF16, I64, I32, U8) as host views.
  const std::map<std::string, HostTensorView>& tensors() const { return tensors_; }
  /// Names of tensors whose dtype based_core cannot convert (e.g. I8, BOOL), with the dtype.
  const std::map<std::string, std::string>& unsupported() const { return unsupported_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::size_t data_bytes() const { return data_size_; }

 private:
  void parse(const uint8_t* base, std::size_t size);

  std::string name_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  std::size_t data_size_ = 0;
  std::map<std::string, HostTensorView> tensors_;
  std::map<std::string, std::string> unsupported_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace based_core
