// based_core/backends.h: creating backends.
#pragma once

#include <memory>
#include <string>

#include "based_core/ops.h"

namespace based_core {

/// The CPU reference backend: fp32 compute, activations in F32 whatever the
/// weight dtype, both cores used through OpenMP where the build has it.
std::shared_ptr<Backend> make_cpu_backend();

/// The CUDA backend on device `index`. The first call loads the CUDA backend
/// library (libbased_core_cuda.so, next to the Python extension or linked in)
/// and creates a stream. Throws Unsupported when the build has no CUDA backend
/// or it cannot be loaded (the message says why), CudaError when no usable GPU.
std::shared_ptr<Backend> make_cuda_backend(int index = 0);

/// A backend for `device` ("cpu" or "cuda[:N]"). Backends are cached per
/// device: every Model on the same device shares one.
std::shared_ptr<Backend> backend_for(const Device& device);

/// True when a CUDA backend can be created (library loadable and a GPU present).
/// Never throws.
bool cuda_available();

}  // namespace based_core
