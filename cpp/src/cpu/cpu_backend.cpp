// cpu_backend.cpp: CpuBackend (memory management + dispatch to cpu_ops) and
// make_cpu_backend().
#include "cpu/cpu_backend.h"

#include <cstring>
#include <cstdint>
#include <unistd.h>
#include <memory>
#include <new>
#include <string>

#include "based_core/backends.h"
#include "based_core/error.h"
#include "cpu/cpu_ops.h"

namespace based_core {

DType CpuBackend::activation_dtype(DType) const {
  // The CPU reference computes and stores activations in fp32 for every model dtype.
  return DType::F32;
}

// Physical memory of the machine. Linux may overcommit, so an allocation far
// larger than RAM can "succeed" and the process is killed when it is touched:
// refuse those up front with a clean OutOfMemory instead.
static std::size_t physical_memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? std::size_t(pages) * std::size_t(page) : SIZE_MAX;
}

void* CpuBackend::allocate(std::size_t bytes) {
  static const std::size_t ram = physical_memory_bytes();
  if (bytes > ram)
    throw OutOfMemory("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes: more than the " +
                      std::to_string(ram) + " bytes of physical memory");
  // Round up to whole cache lines (at least one, so a 0-byte request still
  // yields a distinct pointer that deallocate() accepts).
  const std::size_t rounded =
      bytes == 0 ? kAlignment : (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = nullptr;
  if (rounded >= bytes)  // else the rounding overflowed: treat as unsatisfiable
    p = ::operator new(rounded, std::align_val_t(kAlignment), std::nothrow);
  if (!p)
    throw OutOfMemory("cpu backend: cannot allocate " + std::to_string(bytes) +
                      " bytes of host memory");
  return p;
}

void CpuBackend::deallocate(void* p) noexcept {
  if (p) ::operator delete(p, std::align_val_t(kAlignment));
}

void CpuBackend::copy(void* dst, const void* src, std::size_t bytes, CopyKind) {
  if (bytes == 0) return;
  if (!dst || !src) throw InvalidArgument("cpu backend: copy of " + std::to_string(bytes) +
                                          " bytes with a null " + (dst ? "src" : "dst"));
  // Host and "device" are the same memory, so every kind is a plain copy.
  // memmove rather than memcpy: identical for disjoint ranges, defined for overlap.
  std::memmove(dst, src, bytes);
}

void CpuBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  if (!dst) throw InvalidArgument("cpu backend: fill_zero of " + std::to_string(bytes) +
                                  " bytes with a null dst");
  std::memset(dst, 0, bytes);
}

void CpuBackend::embedding(const ops::EmbeddingParams& p) { cpu::embedding(p); }
void CpuBackend::rmsnorm(const ops::RmsNormParams& p) { cpu::rmsnorm(p); }
void CpuBackend::gemm(const ops::GemmParams& p) { cpu::gemm(p); }
void CpuBackend::la_prefill(const ops::LaPrefillParams& p) { cpu::la_prefill(p); }
void CpuBackend::la_decode(const ops::LaDecodeParams& p) { cpu::la_decode(p); }
void CpuBackend::swa_prefill(const ops::SwaPrefillParams& p) { cpu::swa_prefill(p); }
void CpuBackend::swa_decode(const ops::SwaDecodeParams& p) { cpu::swa_decode(p); }
void CpuBackend::conv_prefill(const ops::ConvPrefillParams& p) { cpu::conv_prefill(p); }
void CpuBackend::conv_decode(const ops::ConvDecodeParams& p) { cpu::conv_decode(p); }
void CpuBackend::swiglu(const ops::SwigluParams& p) { cpu::swiglu(p); }
void CpuBackend::argmax(const ops::ArgmaxParams& p) { cpu::argmax(p); }
void CpuBackend::sample(const ops::SampleParams& p) { cpu::sample(p); }

std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<CpuBackend>(); }

}  // namespace based_core
