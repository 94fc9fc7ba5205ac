// cpu_op_test_util.h: shared helpers of the CPU op tests: padded matrices whose
// input pads hold NaN (reading one poisons a result) and whose output pads hold
// a sentinel that is checked afterwards, and a relative-error comparison.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>


#include "based_core/backends.h"
#include "based_core/error.h"

using namespace based_core;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kSentinel = 12345.f;
const int64_t kLengths[] = {1, 2, 3, 63, 64, 65, 300};

Backend& be() {
  static std::shared_ptr<Backend> b = make_cpu_backend();
  return *b;
}

// Row-major [rows, width] fp32 with row stride ld = width + pad.
struct Mat {
  int64_t rows, width, ld;
  std::vector<float> d;
  Mat(int64_t r, int64_t w, int64_t pad, float fill)
      : rows(r), width(w), ld(w + pad), d(std::size_t(r * (w + pad)), fill) {}
  float* row(int64_t i) { return d.data() + i * ld; }
  const float* row(int64_t i) const { return d.data() + i * ld; }
};

// N(0, scale) entries, NaN pads.
Mat randn(int64_t rows, int64_t width, int64_t pad, unsigned seed, float scale = 1.f) {
  Mat m(rows, width, pad, kNaN);
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < width; ++j) m.row(i)[j] = nd(g);
  return m;
}

Mat output(int64_t rows, int64_t width, int64_t pad) { return Mat(rows, width, pad, kSentinel); }

bool all_sentinel(const float* p, int64_t n) {
  return std::all_of(p, p + n, [](float x) { return x == kSentinel; });
}

using Ref = std::vector<double>;  // dense [rows][width]

// got[i, j] vs ref: |err| <= rtol * (|ref| + mean |ref|) everywhere; pads untouched.
void expect_close(const Mat& got, const Ref& ref, double rtol = 1e-4) {
  REQUIRE(int64_t(ref.size()) == got.rows * got.width);
  double mean = 0, worst = 0;
  for (double r : ref) mean += std::fabs(r) / double(ref.size());
  int64_t bad = 0, bad_pad = 0;
  for (int64_t i = 0; i < got.rows; ++i) {
    for (int64_t j = 0; j < got.width; ++j) {
      const double r = ref[i * got.width + j];
      const double rel = std::fabs(got.row(i)[j] - r) / (std::fabs(r) + mean + 1e-30);
      bad += !(rel <= rtol);  // NaN counts as bad
      worst = rel <= worst ? worst : rel;
    }
    for (int64_t j = got.width; j < got.ld; ++j) bad_pad += got.row(i)[j] != kSentinel;
  }
  INFO("worst relative error " << worst);
  CHECK(bad == 0);
  CHECK(bad_pad == 0);
}


}  // namespace
