// based_core/config.h: the model configuration, parsed from the authors'
// config.json (a flat GPT2Config dict plus the `mixer`, `alt_mixer` and
// `alt_mixer_2` dicts; SPEC.md section 1.5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace based_core {

/// The token mixer of one block.
enum class LayerKind : int {
  Conv = 0,             ///< BaseConv: gated short convolution (the `mixer` dict)
  LinearAttention = 1,  ///< Taylor linear attention (the `alt_mixer` dict)
  SlidingWindow = 2,    ///< local softmax attention (the `alt_mixer_2` dict)
};

/// "conv", "linear_attention" or "sliding_window" (a static string).
const char* layer_kind_name(LayerKind k);

/// Everything the runtime needs to know about a BASED model. Values derived by
/// the authors' rules (SPEC.md 1.5) are filled in by from_json(). A plain
/// value: copy it freely. Sizes count elements (dimensions, tokens, layers).
struct ModelConfig {
  int64_t d_model = 0;      ///< n_embd
  int64_t n_layer = 0;      ///< blocks; layers.size() == n_layer
  int64_t n_head = 0;       ///< heads of the SWA layers
  int64_t head_dim = 0;     ///< d_model / n_head
  int64_t n_inner = 0;      ///< SwiGLU hidden size
  int64_t vocab_size = 0;   ///< tokens the tokenizer knows (50257)
  int64_t vocab_padded = 0; ///< rows of the embedding / logits columns (50264)
  int64_t pad_vocab_size_multiple = 1;  ///< vocab_padded is vocab_size rounded up to this
  float norm_eps = 1e-5f;   ///< layer_norm_epsilon (of every RMSNorm)
  std::vector<LayerKind> layers;  ///< the token mixer of each block, in order

  // Linear attention (alt_mixer).
  int64_t la_heads = 0;         ///< alt_mixer.num_heads
  int64_t la_feature_dim = 16;  ///< f: q/k width per head (feature_map.input_dim)
  int64_t la_head_dim = 0;      ///< value width per head, d_model / la_heads
  float la_eps = 1e-12f;        ///< 1e-6 when parallel_implementation names fla

  // Sliding-window attention (alt_mixer_2).
  int64_t window_size = 0;   ///< the config's window_size W
  int64_t swa_window = 0;    ///< past tokens attended: W // 2 (flash-attn window (W//2, 0))
  int64_t rotary_dim = 0;    ///< int(rotary_emb_fraction * head_dim)
  float rope_base = 10000.f;  ///< rotary_emb_base

  // BaseConv (mixer).
  int64_t conv_channels = 0;  ///< 2 * d_model (expand_proj / 2 * d_model)
  int64_t conv_kernel = 3;    ///< always 3 (the config's kernel_sizes is ignored, as by the authors)
  int64_t expand_proj = 4;    ///< mixer.expand_proj

  int64_t bos_token_id = -1;  ///< -1 when the config has none
  int64_t eos_token_id = -1;  ///< -1 when the config has none; not a stop token unless you pass it
  int64_t max_position_hint = 2048;  ///< training context (l_max); not enforced

  /// Parses config.json text (the file's contents, not its path). Throws
  /// CheckpointError naming the key for invalid JSON, missing keys, wrong
  /// types, unknown `_target_` classes or inconsistent values. n_inner may
  /// stay 0 (absent): Model::from_weights then takes it from the weights.
  static ModelConfig from_json(const std::string& text);

  /// Number of layers of one kind.
  int64_t count(LayerKind k) const;

  /// A one-line human summary ("d=1024 layers=27 (17 conv, 5 la, 5 swa) ...").
  std::string summary() const;
};

}  // namespace based_core
