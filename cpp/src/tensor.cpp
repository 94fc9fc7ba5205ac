// tensor.cpp: Tensor allocation through a backend.
#include "based_core/tensor.h"

#include "based_core/error.h"
#include "based_core/ops.h"

namespace based_core {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Tensor::empty(const std::shared_ptr<Backend>& backend, DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  for (int64_t d : shape)
    if (d < 0) throw InvalidArgument("Tensor::empty: negative dimension in shape " + shape_str(shape));
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.backend_ = backend;
  t.device_ = backend->device();
  std::size_t bytes = t.nbytes();
  void* p = backend->allocate(bytes ? bytes : 1);
  std::shared_ptr<Backend> owner = backend;
  t.storage_ = std::shared_ptr<void>(p, [owner](void* q) { owner->deallocate(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  if (t.numel() != numel())
    throw InvalidArgument("Tensor::reshape: " + shape_str(t.shape_) + " does not hold the " + std::to_string(numel()) +
                          " elements of " + shape_str(shape_));
  return t;
}

void Tensor::copy_to_host(void* dst) const {
  if (!backend_ || !nbytes()) return;
  backend_->copy(dst, data_, nbytes(), CopyKind::DeviceToHost);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace based_core
