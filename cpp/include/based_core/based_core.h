// based_core/based_core.h: the whole public C++ API in one include. These
// headers are the manual; README.md and examples/stream_generate.cpp show it
// in use.
//
//   auto model = based_core::Model::load("based-360m", {based_core::parse_device("cuda"),
//                                                       based_core::DType::BF16});
//   based_core::Session session(model, {/*max_slots=*/4});
//   based_core::GenerateOptions opt;
//   opt.max_new_tokens = 32;
//   auto tokens = session.generate({{464, 3139, 286}}, opt);
//
// The pieces:
//   Model       (model.h)    config + weights on one device; immutable once loaded.
//   Session     (session.h)  per-sequence state slots: prefill, decode, generate,
//                            reset / copy / save / load a slot.
//   Sampler     (sampler.h)  greedy, temperature, top-k, top-p; seeded per sequence.
//   Tensor      (tensor.h)   reference-counted device memory (logits come back as one).
//   ModelConfig (config.h), DType and Device (dtype.h), exceptions (error.h),
//   backends (backends.h) and the op interface they implement (ops.h).
//
// Conventions that hold everywhere unless a declaration says otherwise:
//   Ownership  Models live in std::shared_ptr and every Session keeps its Model
//              alive. Tensors share their memory like std::shared_ptr. Raw
//              pointer arguments are borrowed for the duration of the call.
//   Threading  A Model may be read by any number of threads at once. A Session
//              (and its Backend, and a Sampler) is used by one thread at a time,
//              not necessarily always the same one. Different Sessions run
//              concurrently on different threads, also on one shared Model.
//   Errors     Every failure throws a subclass of based_core::Error (error.h);
//              the library never calls exit() or abort() and never prints.
//   Units      Sizes and shapes count elements; names ending in _bytes count
//              bytes. Token ids are int32 in [0, vocab_size). Positions count
//              tokens of a sequence from 0. Logits are fp32 with vocab_padded
//              columns. Tensor shapes are row-major, outermost first.
//   Devices    Memory the library returns lives on the model's device (host
//              memory for the CPU backend); Tensor::copy_to_host reads it.
//   CUDA       No CUDA header or library is needed to build against this API:
//              the CUDA backend is a separate shared library, loaded on first
//              use (backends.h).
#pragma once

#include "based_core/backends.h"
#include "based_core/config.h"
#include "based_core/dtype.h"
#include "based_core/error.h"
#include "based_core/model.h"
#include "based_core/ops.h"
#include "based_core/sampler.h"
#include "based_core/session.h"
#include "based_core/tensor.h"
#include "based_core/version.h"
