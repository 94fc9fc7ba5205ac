// backends_internal.h: hooks between the core and the CUDA backend library.
#pragma once

#include <cstddef>
#include <string>

#include "based_core/ops.h"

namespace based_core {

using CudaBackendFactory = Backend* (*)(int device, char* err, std::size_t err_len);
using CudaDeviceCountFn = int (*)(char* err, std::size_t err_len);

/// Used by builds that link the CUDA backend into the same binary.
void register_cuda_backend_factory(CudaBackendFactory create, CudaDeviceCountFn count);

/// Where to look for libbased_core_cuda.so first (the Python extension passes
/// its own folder). BASED_CORE_CUDA_LIB in the environment takes precedence.
void set_cuda_library_path(const std::string& path);

/// Visible CUDA devices; 0 when the library or the driver is missing.
int cuda_device_count();

}  // namespace based_core
