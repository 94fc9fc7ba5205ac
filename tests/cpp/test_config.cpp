// Tests of config.json parsing (SPEC.md 1.5): the layer plan, derived values,
// and errors that name the key.
#include <doctest/doctest.h>

#include <string>

#include "based_core/config.h"
#include "based_core/error.h"

using namespace based_core;

namespace {

// A config shaped like based-360m's.
std::string config_360m(const std::string& extra = "") {
  return R"({
    "n_embd": 1024, "n_layer": 27, "n_head": 16, "n_inner": 2048, "vocab_size": 50257,
    "pad_vocab_size_multiple": 8, "layer_norm_epsilon": 1e-05, "rotary_emb_fraction": 1,
    "activation_function": "swiglu", "bos_token_id": 50256, "eos_token_id": 50256,
    "mixer": {"l_max": 2048, "_target_": "based.models.mixers.convolution.BaseConv", "use_bias": true,
              "expand_proj": 4, "kernel_sizes": 3},
    "alt_mixer": {"_target_": "based.models.mixers.linear_attention.LinearAttention", "feature_dim": 16,
                  "num_heads": 16, "l_max": 2048,
                  "feature_map": {"_target_": "based.models.mixers.linear_attention.TaylorExp", "input_dim": 16}},
    "alt_mixer_2": {"_target_": "based.models.mixers.slide_attention.SlidingAttention", "window_size": 256,
                    "num_heads": 16, "causal": true},
    "alt_mixer_layers": [1, 6, 11, 16, 21],
    "alt_mixer_2_layers": [2, 7, 12, 17, 22])" + extra + "}";
}

}  // namespace

TEST_CASE("config: based-360m shape and derived values") {
  ModelConfig c = ModelConfig::from_json(config_360m());
  CHECK(c.d_model == 1024);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_padded == 50264);
  CHECK(c.swa_window == 128);  // W // 2 past tokens (+ the current one)
  CHECK(c.rotary_dim == 64);
  CHECK(c.rope_base == 10000.f);
  CHECK(c.la_feature_dim == 16);
  CHECK(c.la_head_dim == 64);
  CHECK(c.conv_channels == 2048);
  CHECK(c.conv_kernel == 3);
  CHECK(c.count(LayerKind::Conv) == 17);
  CHECK(c.count(LayerKind::LinearAttention) == 5);
  CHECK(c.count(LayerKind::SlidingWindow) == 5);
  CHECK(c.layers[0] == LayerKind::Conv);
  CHECK(c.layers[1] == LayerKind::LinearAttention);
  CHECK(c.layers[2] == LayerKind::SlidingWindow);
  CHECK(c.la_eps == doctest::Approx(1e-12));
}

TEST_CASE("config: alt_mixer_2_layers win over alt_mixer_layers; fla implementation changes eps") {
  std::string j = config_360m();
  j.replace(j.find("\"alt_mixer_layers\": [1,"), 23, "\"alt_mixer_layers\": [2,");
  ModelConfig c = ModelConfig::from_json(j);
  CHECK(c.layers[2] == LayerKind::SlidingWindow);
  std::string k = config_360m();
  k.replace(k.find("\"feature_dim\": 16,"), 18, "\"feature_dim\": 16, \"parallel_implementation\": \"fla_parallel\",");
  CHECK(ModelConfig::from_json(k).la_eps == doctest::Approx(1e-6));
}

TEST_CASE("config: errors name the key") {
  auto err = [](const std::string& text) {
    try {
      ModelConfig::from_json(text);
    } catch (const CheckpointError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err("[1, 2]").find("JSON object") != std::string::npos);
  CHECK(err("{").find("not valid JSON") != std::string::npos);
  CHECK(err(R"({"n_layer": 2})").find("'n_embd'") != std::string::npos);
  std::string bad_target = config_360m();
  bad_target.replace(bad_target.find("convolution.BaseConv"), 20, "hyena.HyenaOperator");
  CHECK(err(bad_target).find("unknown mixer 'based.models.mixers.hyena.HyenaOperator'") != std::string::npos);
  std::string bad_layer = config_360m();
  bad_layer.replace(bad_layer.find("[1, 6,"), 6, "[99, 6,");
  CHECK(err(bad_layer).find("names layer 99") != std::string::npos);
  std::string bad_heads = config_360m();
  bad_heads.replace(bad_heads.find("\"n_head\": 16"), 12, "\"n_head\": 15");
  CHECK(err(bad_heads).find("n_head (15) must divide n_embd") != std::string::npos);
  std::string bad_map = config_360m();
  bad_map.replace(bad_map.find("TaylorExp"), 9, "Hedgehog1");
  CHECK(err(bad_map).find("unknown feature map") != std::string::npos);
  std::string str_int = config_360m();
  str_int.replace(str_int.find("\"n_layer\": 27"), 13, "\"n_layer\": \"x\"");
  CHECK(err(str_int).find("'n_layer' must be an integer") != std::string::npos);
}
