// based_core/based_core.h: the whole public C++ API.
//
//   auto model = based_core::Model::load("based-360m", {based_core::parse_device("cuda"),
//                                                       based_core::DType::BF16});
//   based_core::Session session(model, {/*max_slots=*/4});
//   based_core::GenerateOptions opt;
//   opt.max_new_tokens = 32;
//   auto tokens = session.generate({{464, 3139, 286}}, opt);
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
