// fuzz_model.cpp: a fuzzed safetensors image loaded as the weights of a fixed
// tiny BASED config on the CPU backend. Every input either gives a Model that
// then prefills and decodes without crashing, or throws based_core::Error.
//
// Input: byte 0 picks the variant (bit 0: config with / without n_inner, so
// the width comes from the fc2 tensor; bits 1-2: model dtype), the rest is the
// safetensors image. tests/fuzz/make_corpus.py writes matching seeds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "based_core/based_core.h"
#include "safetensors.h"

namespace {

// d_model 16, 2 heads, layers conv / linear attention / sliding window,
// vocab 30 padded to 32. Keep in sync with make_corpus.py (TINY).
std::string tiny_config(bool with_n_inner) {
  std::string inner = with_n_inner ? "\"n_inner\": 32, " : "";
  return "{\"n_embd\": 16, \"n_head\": 2, \"n_layer\": 3, " + inner +
         "\"vocab_size\": 30, \"pad_vocab_size_multiple\": 8, \"layer_norm_epsilon\": 1e-5,"
         " \"activation_function\": \"swiglu\", \"alt_mixer_layers\": [1], \"alt_mixer_2_layers\": [2],"
         " \"mixer\": {\"_target_\": \"based.models.mixers.convolution.BaseConv\", \"expand_proj\": 4},"
         " \"alt_mixer\": {\"_target_\": \"based.models.mixers.linear_attention.LinearAttention\","
         "   \"feature_dim\": 4, \"num_heads\": 2,"
         "   \"feature_map\": {\"_target_\": \"based.models.mixers.linear_attention.TaylorExp\", \"input_dim\": 4}},"
         " \"alt_mixer_2\": {\"_target_\": \"based.models.mixers.slide_attention.SlidingAttention\","
         "   \"window_size\": 4, \"num_heads\": 2}}";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const based_core::ModelConfig configs[2] = {based_core::ModelConfig::from_json(tiny_config(false)),
                                                     based_core::ModelConfig::from_json(tiny_config(true))};
  static const based_core::DType dtypes[4] = {based_core::DType::F32, based_core::DType::BF16,
                                              based_core::DType::F16, based_core::DType::F32};
  const uint8_t variant = data[0];
  try {
    based_core::SafetensorsFile file(data + 1, size - 1, "fuzz.safetensors");
    based_core::LoadOptions o;
    o.dtype = dtypes[(variant >> 1) & 3];
    auto model = based_core::Model::from_weights(configs[variant & 1], file.tensors(), o);
    // Weights may hold NaN / inf: the forward pass and sampling must still be memory-safe.
    based_core::Session session(model, {/*max_slots=*/2});
    based_core::GenerateOptions g;
    g.max_new_tokens = 3;
    auto out = session.generate({{1, 2, 3, 4, 5, 6}, {29}}, g);
    for (const auto& seq : out)
      for (int32_t t : seq)
        if (t < 0 || t >= 30) __builtin_trap();  // generate must never emit a padded or invalid id
  } catch (const based_core::Error&) {
  }
  return 0;
}
