// tiny_model.h: a tiny random BASED model built in memory through
// Model::from_weights (no files), for tests of Sessions and threading.
//
// The config is JSON in the authors' format; the weights use the checkpoint's
// key names (SPEC.md 3) and are scaled like based_core.testing's so that
// activations stay O(1) and greedy decoding does not lock onto one token.
#pragma once

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "based_core/based_core.h"

namespace tiny {

struct Shape {
  int64_t d_model = 32;
  int64_t n_head = 2;
  int64_t window_size = 8;  // the model attends W/2 = 4 past tokens, so a ring of 5 rows
  int64_t vocab_size = 100;
  std::string layers = "conv,la,swa,conv,la,swa";  // layer kinds in order
};

inline std::vector<std::string> kinds_of(const Shape& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s.layers + ",") {
    if (ch != ',') {
      cur += ch;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

// config.json text for `s` (n_inner = 2 d, vocabulary padded to a multiple of 8).
inline std::string config_json(const Shape& s) {
  const std::vector<std::string> kinds = kinds_of(s);
  std::string la, swa;
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    if (kinds[i] == "la") la += (la.empty() ? "" : ", ") + std::to_string(i);
    if (kinds[i] == "swa") swa += (swa.empty() ? "" : ", ") + std::to_string(i);
  }
  const std::string d = std::to_string(s.d_model), h = std::to_string(s.n_head);
  return R"({"n_embd": )" + d + R"(, "n_layer": )" + std::to_string(kinds.size()) + R"(, "n_head": )" + h +
         R"(, "n_inner": )" + std::to_string(2 * s.d_model) + R"(, "vocab_size": )" + std::to_string(s.vocab_size) +
         R"(, "pad_vocab_size_multiple": 8, "layer_norm_epsilon": 1e-5, "rotary_emb_fraction": 1,
    "activation_function": "swiglu",
    "mixer": {"_target_": "based.models.mixers.convolution.BaseConv", "expand_proj": 4, "l_max": 2048},
    "alt_mixer": {"_target_": "based.models.mixers.linear_attention.LinearAttention", "feature_dim": 16,
                  "num_heads": )" + h + R"(, "l_max": 2048,
                  "feature_map": {"_target_": "based.models.mixers.linear_attention.TaylorExp", "input_dim": 16}},
    "alt_mixer_2": {"_target_": "based.models.mixers.slide_attention.SlidingAttention", "window_size": )" +
         std::to_string(s.window_size) + R"(, "num_heads": )" + h + R"(, "causal": true},
    "alt_mixer_layers": [)" + la + R"(], "alt_mixer_2_layers": [)" + swa + "]}";
}

// Builds the model on `device` with random weights from `seed`. The host
// buffers only live during the call: from_weights copies what it needs.
inline std::shared_ptr<based_core::Model> make_model(const Shape& s = {}, uint64_t seed = 0,
                                                     based_core::Device device = {},
                                                     based_core::DType dtype = based_core::DType::F32) {
  using namespace based_core;
  const ModelConfig c = ModelConfig::from_json(config_json(s));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, HostTensorView> views;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float std) {
    int64_t n = 1;
    for (int64_t x : shape) n *= x;
    std::vector<float>& v = data[name];
    v.resize(std::size_t(n));
    for (float& x : v) x = mean + std * normal(rng);
    views[name] = HostTensorView{DType::F32, shape, v.data(), v.size() * sizeof(float)};
  };
  const int64_t d = c.d_model, hid = c.n_inner, qk = c.la_heads * c.la_feature_dim;
  auto lin = [&](const std::string& name, int64_t out, int64_t in, float gain = 1.f) {
    add(name, {out, in}, 0.f, gain / std::sqrt(float(in)));
  };
  add("lm_head.weight", {c.vocab_padded, d}, 0.f, 2.f / std::sqrt(float(d)));  // tied with the embedding
  add("transformer.ln_f.weight", {d}, 1.f, 0.1f);
  // Random signs on ln_f: with a tied head, a near-1 ln_f makes each token predict itself.
  for (float& x : data["transformer.ln_f.weight"]) x = (normal(rng) < 0.f) ? -x : x;
  const std::vector<std::string> kinds = kinds_of(s);
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    const std::string p = "transformer.layers." + std::to_string(i) + ".";
    add(p + "norm1.weight", {d}, 1.f, 0.1f);
    add(p + "norm2.weight", {d}, 1.f, 0.1f);
    lin(p + "mlp.fc1.weight", 2 * hid, d);
    lin(p + "mlp.fc2.weight", d, hid, 0.5f);
    if (kinds[i] == "conv") {
      lin(p + "mixer.in_proj.weight", 4 * d, d);
      add(p + "mixer.in_proj.bias", {4 * d}, 0.f, 0.1f);
      add(p + "mixer.conv.conv.weight", {2 * d, 1, 3}, 0.f, 0.5f);
      lin(p + "mixer.out_proj.weight", d, 2 * d, 0.5f);
      add(p + "mixer.out_proj.bias", {d}, 0.f, 0.1f);
    } else if (kinds[i] == "la") {
      lin(p + "mixer.proj_q.weight", qk, d);
      lin(p + "mixer.proj_k.weight", qk, d);
      lin(p + "mixer.proj_v.weight", d, d);
      lin(p + "mixer.out_proj.weight", d, d, 0.5f);
    } else {
      lin(p + "mixer.Wqkv.weight", 3 * d, d);
      lin(p + "mixer.out_proj.weight", d, d, 0.5f);
    }
  }
  LoadOptions o;
  o.device = device;
  o.dtype = dtype;
  return Model::from_weights(c, views, o);
}

// A deterministic pseudo-random prompt of n tokens below `vocab`.
inline std::vector<int32_t> prompt(int64_t n, uint32_t seed, int64_t vocab = 100) {
  std::mt19937 rng(seed);
  std::vector<int32_t> out(static_cast<std::size_t>(n));
  for (int32_t& t : out) t = int32_t(rng() % uint32_t(vocab));
  return out;
}

// Logits tensor -> host floats (copies from the GPU when the model is there).
inline std::vector<float> host(const based_core::Tensor& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  t.copy_to_host(out.data());
  return out;
}

}  // namespace tiny
