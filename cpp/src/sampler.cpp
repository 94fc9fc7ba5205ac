// sampler.cpp: host sampling (greedy, temperature, top-k, top-p).
#include "based_core/sampler.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "based_core/error.h"
#include "sampling_math.h"

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

Sampler::Sampler(const SamplingParams& params, uint64_t sequence) : p_(params), sequence_(sequence) {
  p_.validate();
}

int32_t Sampler::sample(const float* logits, int64_t n) {
  if (n <= 0) throw InvalidArgument("sample: empty logits");
  if (p_.greedy()) return argmax(logits, n);
  double u = sample_uniform(p_.seed, uint32_t(sequence_), uint32_t(step_++));
  return sample_row(logits, n, p_.temperature, p_.top_k, p_.top_p, u);
}

int32_t sample_row(const float* x, int64_t n, float temperature, int top_k, float top_p, double u) {
  // Keys order the logits (NaN -> 0, never kept); thresholds are key values.
  std::vector<uint32_t> keys(static_cast<std::size_t>(n));
  uint32_t kmax = 0;
  int64_t imax = 0;
  for (int64_t i = 0; i < n; ++i) {
    keys[std::size_t(i)] = float_order_key(x[i]);
    if (keys[std::size_t(i)] > kmax) kmax = keys[std::size_t(i)], imax = i;
  }
  if (kmax == 0) return 0;  // every logit is NaN
  uint32_t t_k = 1;  // keep every non-NaN logit
  if (top_k > 0 && top_k < n) {
    std::vector<uint32_t> sorted = keys;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<uint32_t>());
    t_k = std::max<uint32_t>(1, sorted[std::size_t(top_k - 1)]);
  }
  const double m = x[imax];
  std::vector<double> p(static_cast<std::size_t>(n), 0.0);
  double Z = 0;
  for (int64_t i = 0; i < n; ++i)
    if (keys[std::size_t(i)] >= t_k) Z += (p[std::size_t(i)] = std::exp((double(x[i]) - m) / double(temperature)));
  uint32_t t = t_k;
  if (top_p < 1.f) {
    // The largest key t whose tokens (key >= t) hold at least top_p of the mass.
    std::vector<std::pair<uint32_t, double>> kp;
    for (int64_t i = 0; i < n; ++i)
      if (keys[std::size_t(i)] >= t_k) kp.emplace_back(keys[std::size_t(i)], p[std::size_t(i)]);
    std::sort(kp.begin(), kp.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    const double target = double(top_p) * Z;
    double acc = 0;
    for (std::size_t j = 0; j < kp.size(); ++j) {
      acc += kp[j].second;
      // Take every token tied at this key before testing the mass.
      if (j + 1 < kp.size() && kp[j + 1].first == kp[j].first) continue;
      if (acc >= target) {
        t = kp[j].first;
        break;
      }
    }
  }
  double Zs = 0;
  for (int64_t i = 0; i < n; ++i)
    if (keys[std::size_t(i)] >= t) Zs += p[std::size_t(i)];
  const double r = u * Zs;
  double acc = 0;
  int64_t last = imax;
  for (int64_t i = 0; i < n; ++i) {
    if (keys[std::size_t(i)] < t) continue;
    acc += p[std::size_t(i)];
    last = i;
    if (acc > r) return int32_t(i);
  }
  return int32_t(last);
}

}  // namespace based_core
