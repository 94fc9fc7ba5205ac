// Tests of the threading contract (model.h, session.h): one immutable Model
// shared by several Sessions, each used by its own thread at the same time,
// gives exactly the tokens and logits of running the same work sequentially.
// Runs on the CPU backend, and on CUDA too when a GPU is usable (there each
// Session has its own stream and workspace).
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tiny_model.h"

using namespace based_core;

namespace {

// Everything one round of work produces, compared bit for bit across threads.
struct Result {
  std::vector<std::vector<int32_t>> greedy, sampled, streamed;
  std::vector<float> logits;
  bool operator==(const Result& o) const {
    return greedy == o.greedy && sampled == o.sampled && streamed == o.streamed && logits.size() == o.logits.size() &&
           std::memcmp(logits.data(), o.logits.data(), logits.size() * sizeof(float)) == 0;
  }
};

const std::vector<std::vector<int32_t>>& prompts() {
  // Ragged, and the longest passes the sliding-window ring (5 rows) several times.
  static const std::vector<std::vector<int32_t>> p = {tiny::prompt(1, 1), tiny::prompt(7, 2), tiny::prompt(23, 3)};
  return p;
}

// One round: greedy and sampled generation of a ragged batch (streamed through
// on_token), then full-sequence logits, all in a fresh Session on `model`.
Result run_round(const std::shared_ptr<const Model>& model, bool graphs) {
  SessionOptions so;
  so.max_slots = int(prompts().size());
  so.prefill_chunk = 8;  // several chunks per long prompt
  so.use_graphs = graphs;
  Session s(model, so);
  Result r;
  GenerateOptions g;
  g.max_new_tokens = 12;
  r.streamed.resize(prompts().size());
  g.on_token = [&](int seq, int32_t tok) {
    r.streamed[std::size_t(seq)].push_back(tok);
    return true;
  };
  r.greedy = s.generate(prompts(), g);
  GenerateOptions t;
  t.max_new_tokens = 12;
  t.sampling.temperature = 0.9f;
  t.sampling.top_k = 20;
  t.sampling.top_p = 0.95f;
  t.sampling.seed = 5;
  r.sampled = s.generate(prompts(), t);
  r.logits = tiny::host(s.logits({prompts()[2]}));
  return r;
}

// 4 threads, each running kRounds rounds in its own Sessions on `model`,
// must all reproduce the sequential result bit for bit.
void check_threads_match_sequential(const Device& dev, bool graphs) {
  CAPTURE(dev.str());
  CAPTURE(graphs);
  std::shared_ptr<const Model> model = tiny::make_model({}, 11, dev);
  const Result expected = run_round(model, graphs);
  REQUIRE(expected.greedy.size() == 3);
  CHECK(expected.streamed == expected.greedy);  // the callback saw every token, in order
  CHECK(expected.sampled != expected.greedy);   // the sampled run really sampled

  constexpr int kThreads = 4, kRounds = 3;
  std::vector<std::vector<Result>> got(kThreads);
  std::vector<std::string> errors(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together, so the work overlaps
      try {
        for (int round = 0; round < kRounds; ++round) got[std::size_t(i)].push_back(run_round(model, graphs));
      } catch (const std::exception& e) {
        errors[std::size_t(i)] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    CAPTURE(i);
    CHECK(errors[std::size_t(i)] == "");
    CHECK(got[std::size_t(i)].size() == std::size_t(kRounds));
    for (const Result& r : got[std::size_t(i)]) CHECK(r == expected);
  }
}

}  // namespace

TEST_CASE("threading: 4 Sessions on 4 threads share one Model and match the sequential result") {
  SUBCASE("cpu") { check_threads_match_sequential(Device{}, false); }  // the CPU backend has no graphs
  if (cuda_available()) {
    // With CUDA graphs, captures run while other threads launch and allocate.
    SUBCASE("cuda (graphs)") { check_threads_match_sequential(parse_device("cuda"), true); }
    SUBCASE("cuda (no graphs)") { check_threads_match_sequential(parse_device("cuda"), false); }
  }
}

TEST_CASE("threading: Sessions keep their Model alive; each thread's slots are its own") {
  std::shared_ptr<const Model> model = tiny::make_model({}, 12);
  std::weak_ptr<const Model> weak = model;
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 4; ++i) sessions.emplace_back(new Session(model));
  model.reset();  // the caller's handle may go first
  CHECK(!weak.expired());

  // Different prompts per thread, same slot index 0 everywhere: no thread may
  // see another's state, so each must match its own sequential run.
  std::vector<std::vector<float>> expected(4), got(4);
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p = tiny::prompt(9 + i, 100 + uint32_t(i));
    expected[std::size_t(i)] = tiny::host(sessions[std::size_t(i)]->prefill(0, p.data(), int64_t(p.size())));
    sessions[std::size_t(i)]->reset(0);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      std::vector<int32_t> p = tiny::prompt(9 + i, 100 + uint32_t(i));
      for (int round = 0; round < 5; ++round) {
        sessions[std::size_t(i)]->reset(0);
        got[std::size_t(i)] = tiny::host(sessions[std::size_t(i)]->prefill(0, p.data(), int64_t(p.size())));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 4; ++i) CHECK(got[std::size_t(i)] == expected[std::size_t(i)]);

  sessions.clear();
  CHECK(weak.expired());  // the last Session released the weights
}
