// based_core/sampler.h: turning logits into tokens.
#pragma once

#include <cstdint>
#include <random>

namespace based_core {

/// How to pick the next token. The defaults are greedy decoding.
///   temperature <= 0 or top_k == 1: argmax (lowest id on ties).
///   otherwise: keep the top_k logits (all when 0), divide by temperature,
///   keep the smallest set of tokens whose probability mass reaches top_p,
///   and draw from it.
struct SamplingParams {
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 0;  ///< with the sequence index, fixes every draw

  /// Throws InvalidArgument naming the field (temperature < 0, top_k < 0, top_p not in (0, 1]).
  void validate() const;
  bool greedy() const { return temperature <= 0.f || top_k == 1; }
};

/// A seeded host sampler for one sequence. Sequence i of a batch uses
/// Sampler(params, i), so a sequence draws the same tokens alone or batched.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params, uint64_t sequence = 0);
  /// Picks a token among logits[0..n). The logits are not modified.
  int32_t sample(const float* logits, int64_t n);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

/// Index of the largest value (lowest index on ties; NaN never wins).
int32_t argmax(const float* x, int64_t n);

}  // namespace based_core
