// fuzz_config.cpp: any text given to the config.json parser either gives a
// ModelConfig whose invariants hold or throws based_core::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "based_core/config.h"
#include "based_core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    based_core::ModelConfig c =
        based_core::ModelConfig::from_json(std::string(reinterpret_cast<const char*>(data), size));
    // What the rest of the library relies on after a successful parse.
    if (c.d_model <= 0 || c.n_head <= 0 || c.d_model % c.n_head != 0) __builtin_trap();
    if (c.n_layer <= 0 || int64_t(c.layers.size()) != c.n_layer) __builtin_trap();
    if (c.vocab_padded < c.vocab_size || c.vocab_size <= 0) __builtin_trap();
    if (c.count(based_core::LayerKind::LinearAttention) &&
        (c.la_heads <= 0 || c.la_feature_dim <= 0 || c.la_head_dim * c.la_heads != c.d_model))
      __builtin_trap();
    if (c.count(based_core::LayerKind::SlidingWindow) && (c.swa_window < 0 || c.rotary_dim < 0 || c.rotary_dim > c.head_dim))
      __builtin_trap();
    if (c.count(based_core::LayerKind::Conv) && c.conv_channels <= 0) __builtin_trap();
    (void)c.summary();
  } catch (const based_core::Error&) {
  }
  return 0;
}
