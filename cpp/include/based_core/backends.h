// based_core/backends.h: creating backends.
//
// Most programs never call these: Model::load and Session pick the backend
// for a Device themselves. They are here for tools that run single ops
// (ops.h) and for checking for a GPU up front.
//
// Finding the CUDA backend: it is its own shared library,
// libbased_core_cuda.so, so that nothing CUDA is linked into programs that do
// not use it. The first CUDA request dlopen()s the first of: the path in
// $BASED_CORE_CUDA_LIB; the one the Python package registers; the file next
// to the binary holding based_core (libbased_core.so, or the program that
// linked the static library); the loader's search path (LD_LIBRARY_PATH,
// RUNPATH, ld.so.cache); the lib dir of the install this library was built
// for (CMAKE_INSTALL_PREFIX at configure time). The outcome is remembered
// for the life of the process. For an install moved elsewhere, set
// BASED_CORE_CUDA_LIB.
#pragma once

#include <memory>
#include <string>

#include "based_core/ops.h"

namespace based_core {

/// A new CPU reference backend: fp32 compute, activations in F32 whatever the
/// weight dtype, all cores used through OpenMP where the build has it. It
/// holds no state, so one may be shared by any number of threads.
std::shared_ptr<Backend> make_cpu_backend();

/// A new CUDA backend on device `index` with its own stream, cuBLASLt handle
/// and workspace; use it from one thread at a time. The first call loads the
/// CUDA backend library (see above). Throws Unsupported when the build has no
/// CUDA backend or it cannot be loaded (the message lists every path tried
/// and why it failed), InvalidArgument for index < 0, CudaError when there is
/// no usable GPU of that index. Thread-safe.
std::shared_ptr<Backend> make_cuda_backend(int index = 0);

/// A backend for `device`: for the CPU one process-wide instance (stateless,
/// shared); for CUDA a new backend per call (make_cuda_backend), since each
/// owns a stream and a workspace. Thread-safe; throws as make_cuda_backend.
std::shared_ptr<Backend> backend_for(const Device& device);

/// One long-lived backend per device, for standalone work that needs no
/// state of its own (single ops, copies of result tensors). Sessions use
/// backend_for() instead. Thread-safe; throws as backend_for.
std::shared_ptr<Backend> shared_backend(const Device& device);

/// True when a CUDA backend can be created (library loadable and a GPU
/// present). Never throws; thread-safe. The first call may load the library.
bool cuda_available();

}  // namespace based_core
