// Tests of the host sampler: greedy, seeded draws, top-k and top-p support.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <vector>

#include "based_core/error.h"
#include "based_core/sampler.h"

using namespace based_core;

TEST_CASE("sampler: argmax takes the lowest index on ties and skips NaN") {
  std::vector<float> x = {1.f, 3.f, NAN, 3.f, -2.f};
  CHECK(argmax(x.data(), int64_t(x.size())) == 1);
  Sampler greedy(SamplingParams{});
  CHECK(greedy.sample(x.data(), int64_t(x.size())) == 1);
}

TEST_CASE("sampler: top-k and top-p restrict the support; seeds repeat") {
  std::vector<float> x = {0.f, 5.f, 4.9f, 1.f, 4.8f, -3.f};
  SamplingParams p;
  p.temperature = 1.f;
  p.top_k = 2;
  p.seed = 7;
  std::set<int> seen;
  Sampler s(p);
  for (int i = 0; i < 300; ++i) seen.insert(s.sample(x.data(), 6));
  CHECK(seen == std::set<int>{1, 2});
  SamplingParams q;
  q.temperature = 1.f;
  q.top_p = 0.3f;  // token 1 alone has ~37% of the mass
  Sampler t(q);
  for (int i = 0; i < 100; ++i) CHECK(t.sample(x.data(), 6) == 1);
  Sampler a(p, 3), b(p, 3), c(p, 4);
  std::vector<int> da, db, dc;
  for (int i = 0; i < 50; ++i) {
    da.push_back(a.sample(x.data(), 6));
    db.push_back(b.sample(x.data(), 6));
    dc.push_back(c.sample(x.data(), 6));
  }
  CHECK(da == db);
  CHECK(da != dc);
}

TEST_CASE("sampler: bad parameters are refused") {
  SamplingParams p;
  p.temperature = -1.f;
  CHECK_THROWS_AS(p.validate(), InvalidArgument);
  p.temperature = 1.f;
  p.top_p = 1.5f;
  CHECK_THROWS_AS(p.validate(), InvalidArgument);
  p.top_p = 1.f;
  p.top_k = -3;
  CHECK_THROWS_AS(p.validate(), InvalidArgument);
}
