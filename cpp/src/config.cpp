// config.cpp: parsing config.json in the authors' format (SPEC.md 1.5).
#include "based_core/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "based_core/error.h"

namespace based_core {

using nlohmann::json;

const char* layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::Conv: return "conv";
    case LayerKind::LinearAttention: return "linear_attention";
    case LayerKind::SlidingWindow: return "sliding_window";
  }
  return "?";
}

namespace {

[[noreturn]] void fail(const std::string& msg) { throw CheckpointError("config.json: " + msg); }

// Deeper JSON is refused while parsing: nlohmann's dump() and comparisons
// recurse, so a file of a few MB of '[' would overflow the stack. The
// authors' configs nest 3 levels.
constexpr int kMaxJsonDepth = 32;

// A JSON value for an error message, cut short (values can be megabytes).
std::string brief(const json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

const json* find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t get_int(const json& j, const char* key, const std::string& where, const int64_t* dflt = nullptr) {
  const json* v = find(j, key);
  if (!v) {
    if (dflt) return *dflt;
    fail("missing key '" + where + key + "'");
  }
  if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
  // Some exporters write integral values as floats (e.g. 16.0).
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9e15) return int64_t(d);
  }
  fail("key '" + where + key + "' must be an integer, got " + brief(*v));
}

double get_num(const json& j, const char* key, const std::string& where, double dflt) {
  const json* v = find(j, key);
  if (!v) return dflt;
  if (!v->is_number()) fail("key '" + where + key + "' must be a number, got " + brief(*v));
  return v->get<double>();
}

std::string get_target(const json& mixer, const std::string& name) {
  const json* t = find(mixer, "_target_");
  if (!t || !t->is_string()) fail("mixer dict '" + name + "' has no '_target_' string");
  return t->get<std::string>();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The class a `_target_` names must be the one the slot expects: the
// released models use exactly BaseConv / LinearAttention / SlidingAttention.
void expect_target(const std::string& target, const std::string& slot, const std::string& cls) {
  if (ends_with(target, "." + cls) || target == cls) return;
  fail("unknown mixer '" + target + "' in '" + slot + "' (based_core supports " + cls + " there)");
}

std::vector<int64_t> get_layer_list(const json& j, const char* key, int64_t n_layer) {
  std::vector<int64_t> out;
  const json* v = find(j, key);
  if (!v) return out;
  if (!v->is_array()) fail(std::string("key '") + key + "' must be a list of layer indices");
  for (const auto& e : *v) {
    if (!e.is_number_integer()) fail(std::string("key '") + key + "' must hold integers, got " + brief(e));
    int64_t i = e.get<int64_t>();
    if (i < 0 || i >= n_layer)
      fail(std::string("key '") + key + "' names layer " + std::to_string(i) + " but n_layer is " +
           std::to_string(n_layer));
    out.push_back(i);
  }
  return out;
}

}  // namespace

ModelConfig ModelConfig::from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) fail("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return true;
    });
  } catch (const json::exception& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("top level must be a JSON object");

  ModelConfig c;
  c.d_model = get_int(j, "n_embd", "");
  c.n_layer = get_int(j, "n_layer", "");
  c.n_head = get_int(j, "n_head", "");
  const int64_t zero = 0, one = 1;
  c.n_inner = get_int(j, "n_inner", "", &zero);  // 0: taken from the fc2 weight's shape
  c.vocab_size = get_int(j, "vocab_size", "");
  c.pad_vocab_size_multiple = get_int(j, "pad_vocab_size_multiple", "", &one);
  c.norm_eps = float(get_num(j, "layer_norm_epsilon", "", 1e-5));
  const int64_t none = -1;
  c.bos_token_id = get_int(j, "bos_token_id", "", &none);
  c.eos_token_id = get_int(j, "eos_token_id", "", &none);

  if (c.d_model <= 0 || c.d_model > (1 << 16)) fail("n_embd must be in 1..65536, got " + std::to_string(c.d_model));
  if (c.n_layer <= 0 || c.n_layer > 4096) fail("n_layer must be in 1..4096, got " + std::to_string(c.n_layer));
  if (c.n_head <= 0 || c.d_model % c.n_head != 0)
    fail("n_head (" + std::to_string(c.n_head) + ") must divide n_embd (" + std::to_string(c.d_model) + ")");
  if (c.n_inner < 0 || c.n_inner > (1 << 20)) fail("n_inner out of range: " + std::to_string(c.n_inner));
  if (c.vocab_size <= 0 || c.vocab_size > (1 << 24)) fail("vocab_size out of range: " + std::to_string(c.vocab_size));
  if (c.pad_vocab_size_multiple <= 0 || c.pad_vocab_size_multiple > 4096)
    fail("pad_vocab_size_multiple out of range: " + std::to_string(c.pad_vocab_size_multiple));
  if (!(c.norm_eps > 0.f) || !(c.norm_eps < 1.f)) fail("layer_norm_epsilon must be in (0, 1)");
  c.head_dim = c.d_model / c.n_head;
  c.vocab_padded = (c.vocab_size + c.pad_vocab_size_multiple - 1) / c.pad_vocab_size_multiple *
                   c.pad_vocab_size_multiple;

  const json* act = find(j, "activation_function");
  if (act && act->is_string() && act->get<std::string>() != "swiglu")
    fail("activation_function '" + act->get<std::string>() + "' is not supported (BASED uses 'swiglu')");

  // Layer plan: alt_mixer_2_layers are checked first, then alt_mixer_layers.
  c.layers.assign(size_t(c.n_layer), LayerKind::Conv);
  for (int64_t i : get_layer_list(j, "alt_mixer_layers", c.n_layer)) c.layers[size_t(i)] = LayerKind::LinearAttention;
  for (int64_t i : get_layer_list(j, "alt_mixer_2_layers", c.n_layer)) c.layers[size_t(i)] = LayerKind::SlidingWindow;

  if (c.count(LayerKind::Conv) > 0) {
    const json* m = find(j, "mixer");
    if (!m || !m->is_object()) fail("layers use the default mixer but there is no 'mixer' dict");
    expect_target(get_target(*m, "mixer"), "mixer", "BaseConv");
    const int64_t four = 4;
    c.expand_proj = get_int(*m, "expand_proj", "mixer.", &four);
    if (c.expand_proj <= 0 || c.expand_proj % 2 != 0 || c.expand_proj > 64)
      fail("mixer.expand_proj must be a positive even number, got " + std::to_string(c.expand_proj));
    // kernel_sizes is ignored by the authors' BaseConv: the kernel is 3 (SPEC.md 1.5).
    c.conv_kernel = 3;
    c.conv_channels = c.expand_proj / 2 * c.d_model;
  }

  if (c.count(LayerKind::LinearAttention) > 0) {
    const json* m = find(j, "alt_mixer");
    if (!m || !m->is_object()) fail("'alt_mixer_layers' is not empty but there is no 'alt_mixer' dict");
    expect_target(get_target(*m, "alt_mixer"), "alt_mixer", "LinearAttention");
    const int64_t sixteen = 16;
    c.la_heads = get_int(*m, "num_heads", "alt_mixer.", &c.n_head);
    c.la_feature_dim = get_int(*m, "feature_dim", "alt_mixer.", &sixteen);
    if (c.la_heads <= 0 || c.d_model % c.la_heads != 0)
      fail("alt_mixer.num_heads (" + std::to_string(c.la_heads) + ") must divide n_embd");
    if (c.la_feature_dim <= 0 || c.la_feature_dim > 64)
      fail("alt_mixer.feature_dim must be in 1..64, got " + std::to_string(c.la_feature_dim));
    c.la_head_dim = c.d_model / c.la_heads;
    const json* fm = find(*m, "feature_map");
    if (fm) {
      if (!fm->is_object()) fail("alt_mixer.feature_map must be a dict");
      std::string t = get_target(*fm, "alt_mixer.feature_map");
      if (!ends_with(t, "TaylorExp"))
        fail("unknown feature map '" + t + "' in 'alt_mixer.feature_map' (based_core supports TaylorExp)");
      int64_t in_dim = get_int(*fm, "input_dim", "alt_mixer.feature_map.", &c.la_feature_dim);
      if (in_dim != c.la_feature_dim)
        fail("alt_mixer.feature_map.input_dim (" + std::to_string(in_dim) + ") differs from feature_dim (" +
             std::to_string(c.la_feature_dim) + ")");
    }
    const json* impl = find(*m, "parallel_implementation");
    if (impl && impl->is_string() && impl->get<std::string>().find("fla") != std::string::npos) c.la_eps = 1e-6f;
  }

  if (c.count(LayerKind::SlidingWindow) > 0) {
    const json* m = find(j, "alt_mixer_2");
    if (!m || !m->is_object()) fail("'alt_mixer_2_layers' is not empty but there is no 'alt_mixer_2' dict");
    expect_target(get_target(*m, "alt_mixer_2"), "alt_mixer_2", "SlidingAttention");
    c.window_size = get_int(*m, "window_size", "alt_mixer_2.");
    if (c.window_size < 0 || c.window_size > (1 << 20))
      fail("alt_mixer_2.window_size out of range: " + std::to_string(c.window_size));
    c.swa_window = c.window_size / 2;  // flash-attn window (W // 2, 0): W//2 past tokens + the current one
    // The authors' GPT2Config extension defaults the fraction to 0 (no RoPE); the released configs set 1.
    double frac = get_num(j, "rotary_emb_fraction", "", 0.0);
    if (!(frac >= 0.0 && frac <= 1.0)) fail("rotary_emb_fraction must be in [0, 1]");
    c.rotary_dim = int64_t(frac * double(c.head_dim));
    if (c.rotary_dim % 2 != 0) fail("rotary dim (" + std::to_string(c.rotary_dim) + ") must be even");
    c.rope_base = float(get_num(j, "rotary_emb_base", "", 10000.0));
    if (!(c.rope_base > 1.f)) fail("rotary_emb_base must be > 1");
  }

  const json* lmax = find(j, "l_max");
  if (!lmax) {
    const json* m = find(j, "mixer");
    if (m && m->is_object()) lmax = find(*m, "l_max");
  }
  if (lmax && lmax->is_number_integer()) c.max_position_hint = lmax->get<int64_t>();
  return c;
}

int64_t ModelConfig::count(LayerKind k) const {
  int64_t n = 0;
  for (LayerKind l : layers) n += (l == k);
  return n;
}

std::string ModelConfig::summary() const {
  std::ostringstream s;
  s << "d_model=" << d_model << " layers=" << n_layer << " (" << count(LayerKind::Conv) << " conv, "
    << count(LayerKind::LinearAttention) << " linear-attention, " << count(LayerKind::SlidingWindow)
    << " sliding-window) heads=" << n_head << "x" << head_dim << " n_inner=" << n_inner
    << " vocab=" << vocab_size << " (padded " << vocab_padded << ")";
  if (count(LayerKind::SlidingWindow)) s << " window=" << swa_window << "+1";
  if (count(LayerKind::LinearAttention)) s << " la_feature_dim=" << la_feature_dim;
  return s.str();
}

}  // namespace based_core
