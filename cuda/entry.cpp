// entry.cpp: the C entry points of libbased_core_cuda (see based_core_cuda.h). No exception
// leaves these functions; errors are reported as text through err/err_len.
#include <cuda_runtime.h>

#include <cstring>
#include <exception>
#include <new>
#include <string>

#pragma GCC visibility push(default)
#include "based_core_cuda.h"
#pragma GCC visibility pop

#include "cuda_backend.h"

namespace {

void write_error(char* err, std::size_t err_len, const char* msg) {
  if (!err || err_len == 0) return;
  std::strncpy(err, msg, err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) based_core::Backend* based_core_cuda_create_backend(
    int device, char* err, std::size_t err_len) {
  try {
    return new based_core::cuda::CudaBackend(device);
  } catch (const std::exception& e) {
    write_error(err, err_len, e.what());
  } catch (...) {
    write_error(err, err_len, "based_core_cuda_create_backend: unknown exception");
  }
  return nullptr;
}

__attribute__((visibility("default"))) int based_core_cuda_device_count(char* err,
                                                                        std::size_t err_len) {
  try {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess) return count;
    cudaGetLastError();
    if (e == cudaErrorNoDevice) return 0;
    write_error(err, err_len,
                (std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + ": " +
                 cudaGetErrorString(e))
                    .c_str());
  } catch (const std::exception& e) {
    write_error(err, err_len, e.what());
  } catch (...) {
    write_error(err, err_len, "based_core_cuda_device_count: unknown exception");
  }
  return -1;
}

}  // extern "C"
