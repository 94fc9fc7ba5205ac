// tensors.cpp: see tensors.h.
#include "tensors.h"


#include <cstring>

#include "based_core/backends.h"
#include "based_core/error.h"
#include "half.h"

namespace based_core::py {

DType dtype_of(const AnyArray& a, const char* arg) {
  nb::dlpack::dtype d = a.dtype();
  using C = nb::dlpack::dtype_code;
  if (d.lanes == 1) {
    if (d.code == uint8_t(C::Float) && d.bits == 32) return DType::F32;
    if (d.code == uint8_t(C::Float) && d.bits == 16) return DType::F16;
    if (d.code == uint8_t(C::Float) && d.bits == 64) return DType::F64;
    if (d.code == uint8_t(C::Bfloat) && d.bits == 16) return DType::BF16;
    if (d.code == uint8_t(C::Int) && d.bits == 32) return DType::I32;
    if (d.code == uint8_t(C::Int) && d.bits == 64) return DType::I64;
    if (d.code == uint8_t(C::UInt) && d.bits == 8) return DType::U8;
  }
  throw TypeMismatch(std::string(arg) + ": unsupported dtype (code " + std::to_string(d.code) + ", " +
                     std::to_string(d.bits) + " bits); expected float32, float16, bfloat16, float64, int32 or int64");
}

Device device_of(const AnyArray& a, const char* arg) {
  int t = a.device_type();
  if (t == nb::device::cpu::value || t == nb::device::cuda_host::value) return Device{DeviceKind::CPU, 0};
  if (t == nb::device::cuda::value) return Device{DeviceKind::CUDA, a.device_id()};
  throw TypeMismatch(std::string(arg) + ": unsupported device type " + std::to_string(t) + " (expected cpu or cuda)");
}

std::vector<int64_t> shape_of(const AnyArray& a) {
  std::vector<int64_t> s(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) s[i] = int64_t(a.shape(i));
  return s;
}

void require_contiguous(const AnyArray& a, const char* arg) {
  int64_t expect = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expect)
      throw InvalidArgument(std::string(arg) + ": must be C-contiguous (call .contiguous() / np.ascontiguousarray)");
    expect *= int64_t(a.shape(i));
  }
}

nb::object as_ndarray(const Tensor& t) {
  nb::dlpack::dtype dt;
  switch (t.dtype()) {
    case DType::F32: dt = nb::dtype<float>(); break;
    case DType::F64: dt = nb::dtype<double>(); break;
    case DType::I32: dt = nb::dtype<int32_t>(); break;
    case DType::I64: dt = nb::dtype<int64_t>(); break;
    case DType::U8: dt = nb::dtype<uint8_t>(); break;
    case DType::F16: dt = {uint8_t(nb::dlpack::dtype_code::Float), 16, 1}; break;
    case DType::BF16: dt = {uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1}; break;
  }
  std::vector<size_t> shape(t.shape().begin(), t.shape().end());
  // The capsule keeps a copy of the Tensor (and so its memory) alive.
  Tensor* keep = new Tensor(t);
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  int dev_type = t.device().is_cuda() ? nb::device::cuda::value : nb::device::cpu::value;
  nb::ndarray<nb::array_api> arr(t.data(), shape.size(), shape.data(), owner, nullptr, dt, dev_type,
                                 t.device().index);
  return nb::cast(arr, nb::rv_policy::reference);
}

nb::object to_python(const Tensor& t) { return nb::cast(t); }

nb::object to_numpy(const AnyArray& a) {
  require_contiguous(a, "t");
  DType dt = dtype_of(a, "t");
  Device dev = device_of(a, "t");
  const std::size_t n = a.size(), bytes = a.nbytes();
  const bool widen = dt == DType::BF16;  // numpy has no bfloat16: widen to float32
  auto* buf = new uint8_t[std::max<std::size_t>(1, widen ? n * 4 : bytes)];
  std::vector<uint16_t> half(widen ? n : 0);  // staging only when widening
  uint8_t* dst = widen ? reinterpret_cast<uint8_t*>(half.data()) : buf;
  try {
    if (dev.is_cuda())
      shared_backend(dev)->copy(dst, a.data(), bytes, CopyKind::DeviceToHost);
    else if (bytes)
      std::memcpy(dst, a.data(), bytes);
  } catch (...) {
    delete[] buf;
    throw;
  }
  for (std::size_t i = 0; i < half.size(); ++i) reinterpret_cast<float*>(buf)[i] = bf16_to_float(half[i]);
  nb::capsule owner(buf, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
  std::vector<size_t> shape(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) shape[i] = a.shape(i);
  nb::dlpack::dtype ndt = widen ? nb::dtype<float>() : a.dtype();
  nb::ndarray<nb::numpy> arr(buf, shape.size(), shape.data(), owner, nullptr, ndt);
  return nb::cast(arr, nb::rv_policy::reference);
}

std::vector<std::vector<int32_t>> int_rows(const AnyArray& a, const char* arg) {
  if (device_of(a, arg).is_cuda()) throw TypeMismatch(std::string(arg) + ": token ids must be in host memory");
  if (a.ndim() != 1 && a.ndim() != 2)
    throw InvalidArgument(std::string(arg) + ": expected a 1-D [L] or 2-D [B, L] array, got " +
                          std::to_string(a.ndim()) + " dimensions");
  DType dt = dtype_of(a, arg);
  if (dt != DType::I32 && dt != DType::I64)
    throw TypeMismatch(std::string(arg) + ": token ids must be int32 or int64, got " + dtype_name(dt));
  const size_t B = a.ndim() == 2 ? a.shape(0) : 1, L = a.ndim() == 2 ? a.shape(1) : a.shape(0);
  const int64_t sb = a.ndim() == 2 ? a.stride(0) : 0, sl = a.stride(a.ndim() - 1);
  std::vector<std::vector<int32_t>> out(B, std::vector<int32_t>(L));
  for (size_t b = 0; b < B; ++b)
    for (size_t l = 0; l < L; ++l) {
      int64_t off = int64_t(b) * sb + int64_t(l) * sl;
      int64_t v = dt == DType::I32 ? static_cast<const int32_t*>(a.data())[off] : static_cast<const int64_t*>(a.data())[off];
      if (v < INT32_MIN || v > INT32_MAX)
        throw OutOfRange(std::string(arg) + ": token id " + std::to_string(v) + " does not fit in int32");
      out[b][l] = int32_t(v);
    }
  return out;
}

}  // namespace based_core::py
