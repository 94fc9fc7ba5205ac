// model.cpp: mapping checkpoint tensors onto the layer plan and uploading them.
#include "based_core/model.h"

#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "based_core/backends.h"
#include "based_core/error.h"
#include "convert.h"
#include "safetensors.h"

namespace based_core {

namespace {

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw CheckpointError(path + ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// The checkpoint's tensors after the authors' renames (SPEC.md 3): an optional
// "model." prefix stripped, "*metrics*" and the unused decay buffer dropped.
class WeightIndex {
 public:
  explicit WeightIndex(const std::map<std::string, HostTensorView>& raw) {
    for (const auto& kv : raw) {
      std::string name = kv.first;
      if (name.rfind("model.", 0) == 0) name = name.substr(6);
      if (name.find("metrics") != std::string::npos) continue;
      if (name == "transformer.decay.decay") continue;
      if (!map_.emplace(name, &kv.second).second)
        throw CheckpointError("tensor '" + name + "' appears twice (with and without the 'model.' prefix)");
    }
  }
  bool has(const std::string& name) const { return map_.count(name) != 0; }

  const HostTensorView& take(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = map_.find(name);
    if (it == map_.end()) throw CheckpointError("missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    check(name, *it->second, shape);
    used_.insert(name);
    return *it->second;
  }

  static void check(const std::string& name, const HostTensorView& v, const std::vector<int64_t>& shape) {
    if (v.shape != shape)
      throw CheckpointError("tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " + shape_str(shape));
    uint64_t numel = 1;
    for (int64_t d : v.shape) numel *= uint64_t(d);
    if (!v.data || v.nbytes != numel * dtype_size(v.dtype))
      throw CheckpointError("tensor '" + name + "' holds " + std::to_string(v.nbytes) + " bytes but " + dtype_name(v.dtype) +
                            " x " + shape_str(v.shape) + " needs " + std::to_string(numel * dtype_size(v.dtype)));
    if (v.dtype != DType::F32 && v.dtype != DType::F16 && v.dtype != DType::BF16 && v.dtype != DType::F64)
      throw CheckpointError("tensor '" + name + "' has dtype " + dtype_name(v.dtype) +
                            "; weights must be float64/float32/float16/bfloat16");
  }

  void mark_used(const std::string& name) { used_.insert(name); }

  void check_all_used() const {
    std::vector<std::string> extra;
    for (const auto& kv : map_)
      if (!used_.count(kv.first)) extra.push_back(kv.first);
    if (extra.empty()) return;
    std::string msg = "unexpected tensor(s) not used by this config: ";
    for (std::size_t i = 0; i < extra.size() && i < 5; ++i) msg += (i ? ", '" : "'") + extra[i] + "'";
    if (extra.size() > 5) msg += " and " + std::to_string(extra.size() - 5) + " more";
    throw CheckpointError(msg);
  }

 private:
  std::map<std::string, const HostTensorView*> map_;
  std::set<std::string> used_;
};

// Which mixer a layer's tensors belong to, for the cross-check against config.json.
const char* mixer_key_for(LayerKind k) {
  switch (k) {
    case LayerKind::Conv: return "in_proj.weight";
    case LayerKind::LinearAttention: return "proj_q.weight";
    case LayerKind::SlidingWindow: return "Wqkv.weight";
  }
  return "";
}

}  // namespace

Device Model::device() const { return backend_->device(); }

Model::~Model() {
  for (void* p : buffers_) backend_->deallocate(p);
}

// Converts the parts to `out` (through the load dtype), stacked along rows into one buffer
// (LA's q|k|v projections become one GEMM), and copies that to the device.
void* Model::upload(const std::vector<const HostTensorView*>& parts, DType out) {
  const std::size_t out_size = dtype_size(out);
  std::size_t total = 0;
  for (const auto* t : parts) total += t->nbytes / dtype_size(t->dtype);
  std::vector<uint8_t> staging(total * out_size);
  std::size_t off = 0;
  for (const auto* t : parts) {
    const std::size_t n = t->nbytes / dtype_size(t->dtype);
    convert_values(t->data, t->dtype, n, dtype_, out, staging.data() + off * out_size);
    off += n;
  }
  void* p = backend_->allocate(staging.size() ? staging.size() : 1);
  buffers_.push_back(p);
  backend_->copy(p, staging.data(), staging.size(), CopyKind::HostToDevice);
  weight_bytes_ += staging.size();
  return p;
}

std::shared_ptr<Model> Model::from_weights(const ModelConfig& config_in,
                                           const std::map<std::string, HostTensorView>& weights,
                                           const LoadOptions& options) {
  if (options.dtype != DType::BF16 && options.dtype != DType::F16 && options.dtype != DType::F32)
    throw InvalidArgument(std::string("dtype: expected bfloat16, float16 or float32, got ") + dtype_name(options.dtype));
  std::shared_ptr<Model> m(new Model());
  m->config_ = config_in;
  ModelConfig& c = m->config_;
  WeightIndex idx(weights);
  const int64_t d = c.d_model;

  // Tied embedding / LM head under either name (SPEC.md 3).
  const std::string emb_name = "transformer.embeddings.word_embeddings.weight";
  const std::string head_name = "lm_head.weight";
  std::string tied = idx.has(emb_name) ? emb_name : head_name;
  if (!idx.has(tied))
    throw CheckpointError("missing tensor '" + emb_name + "' (or its tied twin '" + head_name + "'), expected shape " +
                          shape_str({c.vocab_padded, d}));
  if (idx.has(emb_name) && idx.has(head_name)) idx.take(head_name, {c.vocab_padded, d});  // the tied twin

  // n_inner may be absent from config.json: take it from the first fc2.
  if (c.n_inner == 0) {
    std::string fc2 = "transformer.layers.0.mlp.fc2.weight";
    auto it = weights.find(fc2);
    if (it == weights.end()) it = weights.find("model." + fc2);
    if (it == weights.end() || it->second.shape.size() != 2)
      throw CheckpointError("config.json has no n_inner and tensor '" + fc2 + "' is missing");
    c.n_inner = it->second.shape[1];
  }

  // Cross-check the layer plan against the tensors present before reading any.
  for (int64_t i = 0; i < c.n_layer; ++i) {
    std::string pre = "transformer.layers." + std::to_string(i) + ".mixer.";
    for (LayerKind k : {LayerKind::Conv, LayerKind::LinearAttention, LayerKind::SlidingWindow}) {
      if (k != c.layers[size_t(i)] && idx.has(pre + mixer_key_for(k)))
        throw CheckpointError("layer " + std::to_string(i) + ": config.json makes it " +
                              layer_kind_name(c.layers[size_t(i)]) + " but the checkpoint has '" + pre +
                              mixer_key_for(k) + "' (a " + layer_kind_name(k) + " layer)");
    }
  }

  m->dtype_ = options.dtype;
  m->backend_ = backend_for(options.device);
  m->weight_dtype_ = m->backend_->activation_dtype(options.dtype);
  m->act_dtype_ = m->weight_dtype_;

  // Collect every tensor first (validating names and shapes), then upload.
  struct Item {
    std::vector<const HostTensorView*> parts;  // stacked along rows when several
    const void** slot;
    bool f32 = false;  // stored as float32 instead of the weight dtype
  };
  std::vector<Item> items;
  m->layers_.resize(std::size_t(c.n_layer));
  const void* emb = nullptr;
  const void* lnf = nullptr;
  items.push_back({{&idx.take(tied, {c.vocab_padded, d})}, &emb});
  items.push_back({{&idx.take("transformer.ln_f.weight", {d})}, &lnf});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    LayerWeights& L = m->layers_[std::size_t(i)];
    L.kind = c.layers[std::size_t(i)];
    std::string pre = "transformer.layers." + std::to_string(i) + ".";
    auto add = [&](const void** slot, const std::string& name, std::vector<int64_t> shape) {
      items.push_back({{&idx.take(pre + name, shape)}, slot});
    };
    add(&L.norm1, "norm1.weight", {d});
    add(&L.norm2, "norm2.weight", {d});
    add(&L.fc1, "mlp.fc1.weight", {2 * c.n_inner, d});
    add(&L.fc2, "mlp.fc2.weight", {d, c.n_inner});
    if (L.kind == LayerKind::Conv) {
      const int64_t C = c.conv_channels;
      add(&L.mix_in, "mixer.in_proj.weight", {2 * C, d});
      add(&L.mix_in_bias, "mixer.in_proj.bias", {2 * C});
      add(&L.conv, "mixer.conv.conv.weight", {C, 1, c.conv_kernel});
      add(&L.mix_out, "mixer.out_proj.weight", {d, C});
      items.push_back({{&idx.take(pre + "mixer.out_proj.bias", {d})}, &L.mix_out_bias, true});
      L.mix_in_rows = 2 * C;
      L.mix_out_cols = C;
    } else if (L.kind == LayerKind::LinearAttention) {
      const int64_t qk = c.la_heads * c.la_feature_dim;
      items.push_back({{&idx.take(pre + "mixer.proj_q.weight", {qk, d}), &idx.take(pre + "mixer.proj_k.weight", {qk, d}),
                        &idx.take(pre + "mixer.proj_v.weight", {d, d})},
                       &L.mix_in});
      add(&L.mix_out, "mixer.out_proj.weight", {d, d});
      L.mix_in_rows = 2 * qk + d;
      L.mix_out_cols = d;
    } else {
      add(&L.mix_in, "mixer.Wqkv.weight", {3 * d, d});
      add(&L.mix_out, "mixer.out_proj.weight", {d, d});
      L.mix_in_rows = 3 * d;
      L.mix_out_cols = d;
    }
  }
  idx.check_all_used();

  std::size_t total = 0, done = 0;
  for (const Item& it : items)
    for (const auto* p : it.parts) total += p->nbytes;
  for (const Item& it : items) {
    *it.slot = m->upload(it.parts, it.f32 ? DType::F32 : m->weight_dtype_);
    for (const auto* p : it.parts) done += p->nbytes;
    if (options.progress) options.progress(done, total);
  }
  m->embedding_ = emb;
  m->ln_f_ = lnf;
  return m;
}

std::shared_ptr<Model> Model::load(const std::string& folder, const LoadOptions& options) {
  std::string cfg_path = folder + "/config.json";
  if (!file_exists(cfg_path)) throw CheckpointError(folder + ": no config.json in this folder");
  ModelConfig config = ModelConfig::from_json(read_text(cfg_path));
  std::string st_path = folder + "/model.safetensors";
  if (!file_exists(st_path)) {
    if (file_exists(folder + "/pytorch_model.bin"))
      throw CheckpointError(folder + ": has pytorch_model.bin but no model.safetensors; load it from Python "
                                     "(based_core.load reads .bin through torch) or convert it once with "
                                     "`based-core convert " + folder + "`");
    throw CheckpointError(folder + ": no model.safetensors in this folder");
  }
  SafetensorsFile file(st_path);
  for (const auto& kv : file.unsupported())
    throw CheckpointError(st_path + ": tensor '" + kv.first + "' has unsupported dtype " + kv.second);
  return from_weights(config, file.tensors(), options);
}

}  // namespace based_core
