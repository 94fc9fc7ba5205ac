// tensors.h: conversion between nanobind ndarrays (DLPack) and based_core
// tensors, with checks whose messages name the argument.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <vector>

#include "based_core/dtype.h"
#include "based_core/tensor.h"

namespace based_core::py {

namespace nb = nanobind;
using AnyArray = nb::ndarray<>;

/// The based_core dtype of an ndarray, or TypeMismatch naming `arg`.
DType dtype_of(const AnyArray& a, const char* arg);
/// The device of an ndarray (cpu or cuda:N), or TypeMismatch naming `arg`.
Device device_of(const AnyArray& a, const char* arg);
/// Throws InvalidArgument unless `a` is C-contiguous.
void require_contiguous(const AnyArray& a, const char* arg);
std::vector<int64_t> shape_of(const AnyArray& a);

/// A Tensor as a based_core.Tensor object (shares the memory).
nb::object to_python(const Tensor& t);
/// A Tensor as nanobind's DLPack-capable ndarray object sharing its memory.
nb::object as_ndarray(const Tensor& t);

/// Copies any contiguous DLPack array (host or CUDA) to a new numpy array;
/// bfloat16 is widened to float32 (numpy has no bfloat16).
nb::object to_numpy(const AnyArray& a);

/// Reads a 1-D or 2-D integer array (any int dtype, host memory) into int32 rows.
std::vector<std::vector<int32_t>> int_rows(const AnyArray& a, const char* arg);

}  // namespace based_core::py
