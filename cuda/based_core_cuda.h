// based_core_cuda.h: the C entry point of the CUDA backend library.
//
// The core library loads libbased_core_cuda.so lazily (dlopen) so that
// importing based_core on a machine without CUDA never touches the CUDA
// runtime. The library exports one C function that creates the backend.
#pragma once

#include <cstddef>

#include "based_core/ops.h"

#define BASED_CORE_CUDA_EXPORT __attribute__((visibility("default")))

extern "C" {
/// Creates a CUDA backend on `device`. On failure returns nullptr and writes a
/// message (naming the failing call) into err[0..err_len).
BASED_CORE_CUDA_EXPORT based_core::Backend* based_core_cuda_create_backend(int device, char* err, std::size_t err_len);

/// Number of visible CUDA devices, or -1 with a message when the runtime fails.
BASED_CORE_CUDA_EXPORT int based_core_cuda_device_count(char* err, std::size_t err_len);
}
