// sampler.cpp: host sampling (greedy, temperature, top-k, top-p).
#include "based_core/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "based_core/error.h"

namespace based_core {

void SamplingParams::validate() const {
  if (!(temperature >= 0.f) || std::isinf(temperature))
    throw InvalidArgument("temperature: expected a finite value >= 0, got " + std::to_string(temperature));
  if (top_k < 0) throw InvalidArgument("top_k: expected >= 0 (0 = no limit), got " + std::to_string(top_k));
  if (!(top_p > 0.f && top_p <= 1.f)) throw InvalidArgument("top_p: expected a value in (0, 1], got " + std::to_string(top_p));
}

int32_t argmax(const float* x, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  return int32_t(best < 0 ? 0 : best);
}

Sampler::Sampler(const SamplingParams& params, uint64_t sequence) : p_(params) {
  p_.validate();
  // Mix the sequence index into the seed so sequences draw independently.
  std::seed_seq seq{uint32_t(params.seed), uint32_t(params.seed >> 32), uint32_t(sequence), uint32_t(sequence >> 32)};
  rng_.seed(seq);
}

int32_t Sampler::sample(const float* logits, int64_t n) {
  if (n <= 0) throw InvalidArgument("sample: empty logits");
  if (p_.greedy()) return argmax(logits, n);
  std::vector<int32_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t k = (p_.top_k > 0 && p_.top_k < n) ? p_.top_k : n;
  if (k < n) {
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
    idx.resize(std::size_t(k));
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  // Softmax over the kept logits at this temperature (in double).
  std::vector<double> prob(idx.size());
  double mx = logits[idx[0]];
  double sum = 0;
  for (std::size_t i = 0; i < idx.size(); ++i) {
    double v = logits[idx[i]];
    prob[i] = std::isnan(v) ? 0.0 : std::exp((v - mx) / double(p_.temperature));
    sum += prob[i];
  }
  // Top-p: the smallest prefix (by descending probability) whose mass reaches top_p.
  std::size_t keep = prob.size();
  if (p_.top_p < 1.f) {
    double acc = 0;
    for (std::size_t i = 0; i < prob.size(); ++i) {
      acc += prob[i] / sum;
      if (acc >= double(p_.top_p)) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (std::size_t i = 0; i < keep; ++i) total += prob[i];
  std::uniform_real_distribution<double> U(0.0, total);
  double r = U(rng_);
  for (std::size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace based_core
