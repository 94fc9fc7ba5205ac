// launch.cpp: host side of programmatic dependent launch (common.cuh: launch_pdl).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common.cuh"

namespace based_core {
namespace cuda {

bool pdl_supported() {
  // Per device: 0 unknown, 1 no, 2 yes. BASED_CORE_PDL=0 turns PDL off (for comparisons).
  static std::atomic<int> state[64];
  static const bool disabled = [] {
    const char* e = std::getenv("BASED_CORE_PDL");
    return e && std::strcmp(e, "0") == 0;
  }();
  if (disabled) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
    cudaGetLastError();
    return false;
  }
  int s = state[dev].load(std::memory_order_relaxed);
  if (s == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      major = 0;
    }
    s = major >= 9 ? 2 : 1;
    state[dev].store(s, std::memory_order_relaxed);
  }
  return s == 2;
}

}  // namespace cuda
}  // namespace based_core
