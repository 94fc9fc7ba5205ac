// based_core/model.h: a loaded BASED model (config + weights on a device).
//
// A Model is immutable after loading and may be shared by any number of
// Sessions on any number of threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "based_core/config.h"
#include "based_core/dtype.h"
#include "based_core/ops.h"
#include "based_core/tensor.h"

namespace based_core {

/// Options for loading.
struct LoadOptions {
  Device device;               ///< where the weights go (default: cpu)
  DType dtype = DType::BF16;   ///< weight/activation dtype on the device (CPU computes in fp32 from it)
  /// Called after each tensor is placed: (bytes done, bytes total). May be empty.
  std::function<void(std::size_t, std::size_t)> progress;
};

/// Weights of one block, on the device, in the model dtype (F32 on the CPU
/// backend). Pointers are owned by the Model.
struct LayerWeights {
  LayerKind kind = LayerKind::Conv;
  const void* norm1 = nullptr;  ///< [d]
  const void* norm2 = nullptr;  ///< [d]
  const void* fc1 = nullptr;    ///< [2 n_inner, d]
  const void* fc2 = nullptr;    ///< [d, n_inner]
  /// Mixer input projection: conv in_proj [2C, d] (+ bias); LA proj_q|proj_k|proj_v
  /// stacked [2 H f + H hd, d]; SWA Wqkv [3d, d].
  const void* mix_in = nullptr;
  const void* mix_in_bias = nullptr;
  int64_t mix_in_rows = 0;
  const void* conv = nullptr;         ///< [C, 3] conv taps (BaseConv only)
  const void* mix_out = nullptr;      ///< out_proj [d, *]
  const void* mix_out_bias = nullptr; ///< BaseConv only
  int64_t mix_out_cols = 0;
};

class Model {
 public:
  /// Loads a folder in the authors' released layout: config.json plus
  /// model.safetensors (memory-mapped). Throws CheckpointError for missing,
  /// truncated, corrupt or mismatching files (the message names the file and
  /// tensor), OutOfMemory, Unsupported/CudaError for device problems.
  static std::shared_ptr<Model> load(const std::string& folder, const LoadOptions& options = {});

  /// Builds a model from a config and named host tensors in the checkpoint's
  /// key names (an optional "model." prefix, "*metrics*" keys and
  /// "transformer.decay.decay" are accepted and ignored). The views are only
  /// read during the call.
  static std::shared_ptr<Model> from_weights(const ModelConfig& config,
                                             const std::map<std::string, HostTensorView>& weights,
                                             const LoadOptions& options = {});

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }          ///< the requested model dtype
  DType weight_dtype() const { return weight_dtype_; }  ///< dtype the weights are stored in on the device
  DType activation_dtype() const { return act_dtype_; }
  Device device() const;
  const std::shared_ptr<Backend>& backend() const { return backend_; }
  const LayerWeights& layer(int64_t i) const { return layers_.at(std::size_t(i)); }
  const void* embedding() const { return embedding_; }  ///< [vocab_padded, d], also the LM head
  const void* final_norm() const { return ln_f_; }
  std::size_t weight_bytes() const { return weight_bytes_; }

 private:
  Model() = default;
  void* upload(const HostTensorView& t, const std::string& name);

  ModelConfig config_;
  DType dtype_ = DType::BF16, weight_dtype_ = DType::BF16, act_dtype_ = DType::BF16;
  std::shared_ptr<Backend> backend_;
  std::vector<void*> buffers_;  // every device allocation, freed in ~Model
  std::vector<LayerWeights> layers_;
  const void* embedding_ = nullptr;
  const void* ln_f_ = nullptr;
  std::size_t weight_bytes_ = 0;
};

}  // namespace based_core
