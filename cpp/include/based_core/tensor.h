// based_core/tensor.h: an owning, reference-counted, contiguous tensor on a
// backend's device, and a non-owning host view used to hand weights over.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "based_core/dtype.h"

namespace based_core {

class Backend;

/// A contiguous row-major tensor owning device (or host) memory. Copies share
/// the memory (like std::shared_ptr); the memory is freed through the backend
/// that allocated it when the last copy goes. Thread-compatible.
class Tensor {
 public:
  Tensor() = default;

  /// Allocates an uninitialised tensor on `backend`'s device. Throws OutOfMemory.
  static Tensor empty(const std::shared_ptr<Backend>& backend, DType dtype, std::vector<int64_t> shape);

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  Device device() const { return device_; }
  int64_t numel() const;
  std::size_t nbytes() const { return std::size_t(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || !shape_.empty(); }

  /// The same memory with another shape of equal element count.
  Tensor reshape(std::vector<int64_t> shape) const;

  /// Copies the contents to host memory `dst` of nbytes() bytes (waits for the
  /// device).
  void copy_to_host(void* dst) const;

 private:
  std::shared_ptr<void> storage_;
  std::shared_ptr<Backend> backend_;
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_;
  Device device_;
};

/// A non-owning view of host memory holding one weight tensor.
struct HostTensorView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace based_core
