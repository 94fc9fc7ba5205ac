// based_core/sampler.h: turning logits into tokens, on the host.
//
// Session::generate samples with these already; use a Sampler directly when
// driving prefill/decode yourself (examples/stream_generate.cpp). Threading:
// SamplingParams is a plain value; a Sampler counts its draws and is used by
// one thread at a time.
#pragma once

#include <cstdint>

namespace based_core {

/// How to pick the next token. The defaults are greedy decoding.
///   temperature <= 0 or top_k == 1: argmax (lowest id on ties).
///   otherwise: keep the top_k logits (all when 0), divide by temperature,
///   keep the smallest set of tokens whose probability mass reaches top_p,
///   and draw from it.
struct SamplingParams {
  float temperature = 0.f;  ///< softmax temperature, finite and >= 0; 0 = greedy
  int top_k = 0;            ///< keep the k largest logits, >= 0; 0 = no limit, 1 = greedy
  float top_p = 1.f;        ///< nucleus probability mass in (0, 1]; 1 = no limit
  uint64_t seed = 0;  ///< with the sequence index, fixes every draw

  /// Throws InvalidArgument naming the field (temperature < 0 or not finite,
  /// top_k < 0, top_p not in (0, 1]).
  void validate() const;
  /// True when these parameters pick the argmax (no randomness involved).
  bool greedy() const { return temperature <= 0.f || top_k == 1; }
};

/// A seeded host sampler for one sequence. Draw number k of sequence i uses a
/// counter-based random number (seed, i, k), so a sequence draws the same
/// tokens alone or batched, and the GPU's sampling kernel draws the same ones.
class Sampler {
 public:
  /// Copies `params` (validated: InvalidArgument when bad); draws start at
  /// number 0 of sequence `sequence`.
  explicit Sampler(const SamplingParams& params, uint64_t sequence = 0);
  /// Picks a token among logits[0..n) (host memory, fp32, read during the
  /// call; not modified). Pass n = vocab_size to leave out the padded ids.
  /// Greedy parameters return argmax(logits, n) and use no draw; otherwise
  /// each call uses the next draw. NaN logits are never picked.
  /// Throws InvalidArgument for n <= 0.
  int32_t sample(const float* logits, int64_t n);

 private:
  SamplingParams p_;
  uint64_t sequence_ = 0;
  uint64_t step_ = 0;
};

/// Index of the largest of x[0..n) (host memory; lowest index on ties; NaN
/// never wins; 0 when n <= 0 or every value is NaN).
int32_t argmax(const float* x, int64_t n);

}  // namespace based_core
