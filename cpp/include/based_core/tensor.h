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
/// that allocated it when the last copy goes, and that backend is kept alive
/// until then (so logits outlive the Session that made them).
///
/// Threading: thread-compatible. Copies of one Tensor may be held and
/// destroyed on any threads; copy_to_host() runs on the allocating backend
/// (for a Session's results, that Session's stream), so call it on the
/// thread using that Session or while the Session is idle.
class Tensor {
 public:
  /// An undefined tensor: no memory, empty shape (what prefill returns for
  /// LogitsMode::None).
  Tensor() = default;

  /// Allocates an uninitialised tensor on `backend`'s device. Throws
  /// InvalidArgument for a negative dimension, OutOfMemory.
  static Tensor empty(const std::shared_ptr<Backend>& backend, DType dtype, std::vector<int64_t> shape);

  /// The first element, in device memory of device() (a host pointer on the
  /// CPU backend). Valid while any copy of this Tensor lives.
  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }  ///< outermost dimension first
  Device device() const { return device_; }
  int64_t numel() const;  ///< product of the shape (1 for an empty shape)
  std::size_t nbytes() const { return std::size_t(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || !shape_.empty(); }  ///< false for Tensor()

  /// The same memory with another shape of equal element count (no copy).
  /// Throws InvalidArgument when the counts differ.
  Tensor reshape(std::vector<int64_t> shape) const;

  /// Copies the contents to host memory `dst` of nbytes() bytes, waiting for
  /// the device. Does nothing for an undefined tensor. Throws CudaError when
  /// the copy fails.
  void copy_to_host(void* dst) const;

 private:
  std::shared_ptr<void> storage_;
  std::shared_ptr<Backend> backend_;
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_;
  Device device_;
};

/// A non-owning view of host memory holding one weight tensor (contiguous,
/// row-major, native byte order), for Model::from_weights. The caller owns
/// the memory and keeps it valid during the call that reads the view.
struct HostTensorView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  ///< outermost dimension first
  const void* data = nullptr;
  std::size_t nbytes = 0;  ///< must equal the element count times dtype_size(dtype)
};

/// "[2, 3]": a shape for messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace based_core
