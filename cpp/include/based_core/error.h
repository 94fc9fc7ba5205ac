// based_core/error.h: the exceptions the library throws.
//
// Every error derives from based_core::Error. The library never calls exit()
// or abort(); a failed call leaves the Model usable and the Session slot it
// touched in an unspecified (but memory-safe) state that reset() clears.
// Header-only on purpose: the CUDA backend, built as a separate shared
// library, throws these too without linking the core.
#pragma once

#include <stdexcept>
#include <string>

// Exceptions cross shared-library boundaries (the CUDA backend is its own
// library built with hidden visibility): keep their type_info visible so that
// catch clauses match by name.
#define BASED_CORE_EXCEPTION_API __attribute__((visibility("default")))

namespace based_core {

/// Base class of every based_core exception. what() is a complete message
/// naming the argument, file, tensor or call at fault, and the expected and
/// actual values where there are some. Catch this to handle every library
/// error in one place.
class BASED_CORE_EXCEPTION_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument has a bad value: a shape, a size, a slot id, an option.
/// Python: ValueError.
class BASED_CORE_EXCEPTION_API InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// An argument has the wrong type or dtype. Python: TypeError.
class BASED_CORE_EXCEPTION_API TypeMismatch : public Error {
 public:
  using Error::Error;
};

/// An index is out of range (token id >= vocabulary, slot id >= slots).
/// Python: IndexError.
class BASED_CORE_EXCEPTION_API OutOfRange : public Error {
 public:
  using Error::Error;
};

/// A checkpoint or config file is missing, truncated, corrupt or does not
/// match the model it describes. Python: based_core.CheckpointError
/// (a ValueError).
class BASED_CORE_EXCEPTION_API CheckpointError : public Error {
 public:
  using Error::Error;
};

/// An allocation failed. The message states the size asked for.
/// Python: MemoryError.
class BASED_CORE_EXCEPTION_API OutOfMemory : public Error {
 public:
  using Error::Error;
};

/// A CUDA runtime or cuBLAS call failed; the message names the call and
/// file:line. Python: based_core.CudaError (a RuntimeError).
class BASED_CORE_EXCEPTION_API CudaError : public Error {
 public:
  using Error::Error;
};

/// Something the build does not include (e.g. the CUDA backend on a
/// CPU-only build). Python: RuntimeError.
class BASED_CORE_EXCEPTION_API Unsupported : public Error {
 public:
  using Error::Error;
};

}  // namespace based_core
