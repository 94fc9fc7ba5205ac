// based_core/model.h: a loaded BASED model (config + weights on a device).
//
// A Model is immutable after loading and may be shared by any number of
// Sessions on any number of threads: nothing in it changes after load() or
// from_weights() return, so concurrent reads need no locking. It is handed out
// as std::shared_ptr; each Session holds a reference, so the weights stay
// allocated until the last Session and the last handle are gone (the thread
// that drops the last reference frees them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "based_core/config.h"
#include "based_core/dtype.h"
#include "based_core/error.h"
#include "based_core/ops.h"
#include "based_core/tensor.h"

namespace based_core {

/// Options for Model::load and Model::from_weights.
struct LoadOptions {
  Device device;               ///< where the weights go (default: cpu)
  /// Weight/activation dtype on the device: BF16, F16 or F32 (anything else:
  /// InvalidArgument). Weights are rounded to it from the file's dtype. The CPU
  /// backend then stores and computes in fp32, so results match a GPU run of
  /// the same dtype up to the GPU's rounding of activations.
  DType dtype = DType::BF16;
  /// Called on the loading thread after each tensor is placed: (bytes done,
  /// bytes total), counted in the checkpoint's bytes. May be empty. An
  /// exception it throws aborts the load and propagates.
  std::function<void(std::size_t, std::size_t)> progress;
};

/// Weights of one block, on the device, in Model::weight_dtype() (F32 on the
/// CPU backend). For backends and tools that run the ops themselves; shapes are
/// [rows, cols] row-major in the checkpoint's layout. Pointers are device
/// memory owned by the Model, valid while it lives; never write through them.
struct LayerWeights {
  LayerKind kind = LayerKind::Conv;  ///< the block's token mixer
  const void* norm1 = nullptr;  ///< [d]
  const void* norm2 = nullptr;  ///< [d]
  const void* fc1 = nullptr;    ///< [2 n_inner, d]
  const void* fc2 = nullptr;    ///< [d, n_inner]
  /// Mixer input projection: conv in_proj [2C, d] (+ bias); LA proj_q|proj_k|proj_v
  /// stacked [2 H f + H hd, d]; SWA Wqkv [3d, d].
  const void* mix_in = nullptr;
  const void* mix_in_bias = nullptr;  ///< [mix_in_rows] (BaseConv only; else null)
  int64_t mix_in_rows = 0;            ///< output rows of mix_in
  const void* conv = nullptr;         ///< [C, 3] conv taps (BaseConv only)
  const void* mix_out = nullptr;      ///< out_proj [d, *]
  /// [d] float32 whatever the weight dtype (rounded to it first), BaseConv only (else null):
  /// out_proj writes the fp32 residual, and an fp32 bias fuses into that GEMM.
  const void* mix_out_bias = nullptr;
  int64_t mix_out_cols = 0;           ///< input columns of mix_out
};

/// A BASED model: its config and its weights on one device. Create with
/// load() or from_weights(); run it through a Session (session.h).
class Model {
 public:
  /// Loads a folder in the authors' released layout: config.json plus
  /// model.safetensors. The file is memory-mapped and read during the call
  /// only; nothing refers to it afterwards. pytorch_model.bin is not read from
  /// C++ (convert it once with `based-core convert`). Throws CheckpointError
  /// for missing, truncated, corrupt or mismatching files (the message names
  /// the file and tensor), InvalidArgument for a bad dtype, OutOfMemory,
  /// Unsupported/CudaError for device problems. Thread-safe: several models
  /// may be loaded at once.
  static std::shared_ptr<Model> load(const std::string& folder, const LoadOptions& options = {});

  /// Builds a model from a config and named host tensors in the checkpoint's
  /// key names and shapes (SPEC.md 3; the tied embedding under
  /// "transformer.embeddings.word_embeddings.weight" or "lm_head.weight"). An
  /// optional "model." prefix, "*metrics*" keys and "transformer.decay.decay"
  /// are accepted and ignored. The views (F64/F32/F16/BF16) are only read
  /// during the call; the caller keeps ownership. When config.n_inner is 0 it
  /// is taken from the first fc2 weight. Throws CheckpointError naming the
  /// tensor for missing, misshapen, unexpected or wrongly typed tensors, and
  /// when the tensors present contradict the config's layer plan; otherwise as
  /// load().
  static std::shared_ptr<Model> from_weights(const ModelConfig& config,
                                             const std::map<std::string, HostTensorView>& weights,
                                             const LoadOptions& options = {});

  /// Frees the device memory of the weights. Runs when the last shared_ptr
  /// (the caller's or a Session's) goes.
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  /// The parsed config (n_inner filled in from the weights when it was 0).
  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }          ///< the requested model dtype (LoadOptions::dtype)
  DType weight_dtype() const { return weight_dtype_; }  ///< dtype the weights are stored in on the device
  DType activation_dtype() const { return act_dtype_; }  ///< dtype of activations and SWA K/V state
  Device device() const;  ///< where the weights live
  /// The backend the weights were uploaded with. Sessions create their own
  /// (backend_for); use this one only from one thread at a time.
  const std::shared_ptr<Backend>& backend() const { return backend_; }
  /// Block i's weights, i in [0, config().n_layer); OutOfRange otherwise.
  const LayerWeights& layer(int64_t i) const {
    if (i < 0 || i >= int64_t(layers_.size()))
      throw OutOfRange("Model::layer: index " + std::to_string(i) + " outside [0, " + std::to_string(layers_.size()) + ")");
    return layers_[std::size_t(i)];
  }
  const void* embedding() const { return embedding_; }  ///< [vocab_padded, d], also the LM head (device)
  const void* final_norm() const { return ln_f_; }      ///< [d] (device)
  std::size_t weight_bytes() const { return weight_bytes_; }  ///< device bytes held by the weights

 private:
  Model() = default;
  void* upload(const std::vector<const HostTensorView*>& parts, DType out);

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
