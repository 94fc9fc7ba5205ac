// Tests of Session state slots (session.h): reset, copy_slot and
// save_slot/load_slot restore a sequence exactly (bit-identical logits
// afterwards), slots are independent, and load_slot refuses bytes saved from
// another model config. Prompts are longer than the sliding-window ring (5
// rows), so ring wrap-around is part of every saved state.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "prefill_chunk.h"
#include "tiny_model.h"

using namespace based_core;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> prefill(Session& s, int slot, const std::vector<int32_t>& p) {
  return tiny::host(s.prefill(slot, p.data(), int64_t(p.size())));
}

std::vector<float> decode1(Session& s, int slot, int32_t token) {
  const int32_t sl = slot;
  return tiny::host(s.decode(&sl, &token, 1));
}

// Logits of decoding `tokens` one at a time in `slot`, concatenated.
std::vector<float> decode_run(Session& s, int slot, const std::vector<int32_t>& tokens) {
  std::vector<float> all;
  for (int32_t t : tokens) {
    std::vector<float> l = decode1(s, slot, t);
    all.insert(all.end(), l.begin(), l.end());
  }
  return all;
}

SessionOptions slots(int n) {
  SessionOptions o;
  o.max_slots = n;
  return o;
}

}  // namespace

TEST_CASE("slots: reset and reset_all restore the empty state exactly") {
  auto model = tiny::make_model({}, 21);
  Session s(model, slots(2));
  const auto a = tiny::prompt(13, 1), b = tiny::prompt(17, 2);
  const std::vector<float> first = prefill(s, 0, a);
  CHECK(s.position(0) == 13);
  prefill(s, 0, b);  // more of the sequence: the state moves on
  s.reset(0);
  CHECK(s.position(0) == 0);
  CHECK(same_bits(prefill(s, 0, a), first));
  CHECK(same_bits(prefill(s, 1, a), first));  // a fresh slot is the same as a reset one
  s.reset_all();
  CHECK(s.position(0) == 0);
  CHECK(s.position(1) == 0);
  CHECK(same_bits(prefill(s, 1, a), first));
}

TEST_CASE("slots: copy_slot forks a sequence exactly and the copies are independent") {
  auto model = tiny::make_model({}, 22);
  Session s(model, slots(3));
  const auto p = tiny::prompt(13, 3), cont = tiny::prompt(9, 4), other = tiny::prompt(6, 5);
  prefill(s, 0, p);
  s.copy_slot(0, 1);
  CHECK(s.position(1) == s.position(0));
  const std::vector<float> from_copy = decode_run(s, 1, cont);
  const std::vector<float> from_src = decode_run(s, 0, cont);
  CHECK(same_bits(from_copy, from_src));

  // Moving the source on does not touch the copy: the copy matches a replay.
  s.copy_slot(0, 2);
  decode_run(s, 0, other);
  Session ref(model, slots(1));
  prefill(ref, 0, p);
  decode_run(ref, 0, cont);
  CHECK(same_bits(decode_run(s, 2, other), decode_run(ref, 0, other)));
  s.copy_slot(2, 2);  // onto itself: a no-op
  CHECK(s.position(2) == ref.position(0));
}

TEST_CASE("slots: save_slot/load_slot round-trip exactly, also into another Session") {
  auto model = tiny::make_model({}, 23);
  Session a(model, slots(2));
  const auto p = tiny::prompt(19, 6), cont = tiny::prompt(11, 7);
  prefill(a, 0, p);
  const std::vector<uint8_t> saved = a.save_slot(0);
  CHECK(saved.size() > a.state_bytes_per_slot());  // a header, then the state
  const std::vector<float> expected = decode_run(a, 0, cont);

  a.load_slot(0, saved);
  CHECK(a.position(0) == 19);
  CHECK(a.save_slot(0) == saved);  // byte-exact
  CHECK(same_bits(decode_run(a, 0, cont), expected));

  // Another Session of the same model, other slot count, chunking and slot index.
  SessionOptions o = slots(3);
  o.prefill_chunk = 4;
  Session b(model, o);
  b.load_slot(2, saved);
  CHECK(b.position(2) == 19);
  CHECK(same_bits(decode_run(b, 2, cont), expected));

  // Prefilling more after a load continues the saved sequence.
  b.load_slot(1, saved);
  Session c(model, slots(1));
  prefill(c, 0, p);
  CHECK(same_bits(prefill(b, 1, cont), prefill(c, 0, cont)));

  // An empty slot's bytes act as reset.
  const std::vector<uint8_t> empty = b.save_slot(0);
  a.load_slot(1, empty);
  CHECK(a.position(1) == 0);
  Session d(model, slots(1));
  CHECK(same_bits(prefill(a, 1, cont), prefill(d, 0, cont)));
}

TEST_CASE("slots: load_slot rejects bytes of another config and leaves the slot as it was") {
  auto model = tiny::make_model({}, 24);
  Session s(model, slots(1));
  const auto p = tiny::prompt(10, 8), cont = tiny::prompt(5, 9);
  prefill(s, 0, p);
  const std::vector<uint8_t> good = s.save_slot(0);

  tiny::Shape wider;
  wider.d_model = 64;
  tiny::Shape shorter;
  shorter.layers = "conv,la,swa";
  tiny::Shape wide_window;
  wide_window.window_size = 16;
  tiny::Shape more_heads;
  more_heads.n_head = 4;
  for (const tiny::Shape& other : {wider, shorter, wide_window, more_heads}) {
    CAPTURE(tiny::config_json(other));
    Session o(tiny::make_model(other, 25), slots(1));
    prefill(o, 0, p);
    CHECK_THROWS_AS(s.load_slot(0, o.save_slot(0)), InvalidArgument);
    CHECK_THROWS_AS(o.load_slot(0, good), InvalidArgument);
  }

  std::vector<uint8_t> bad = good;
  bad.pop_back();
  CHECK_THROWS_AS(s.load_slot(0, bad), InvalidArgument);  // truncated
  bad = good;
  bad.push_back(0);
  CHECK_THROWS_AS(s.load_slot(0, bad), InvalidArgument);  // trailing bytes
  bad = good;
  bad[0] ^= 0xff;
  CHECK_THROWS_AS(s.load_slot(0, bad), InvalidArgument);  // not a slot image
  CHECK_THROWS_AS(s.load_slot(0, {}), InvalidArgument);

  // Nothing was written by the refused loads.
  CHECK(s.position(0) == 10);
  Session ref(model, slots(1));
  prefill(ref, 0, p);
  CHECK(same_bits(decode_run(s, 0, cont), decode_run(ref, 0, cont)));
}

// Equal sizes are not enough: the slot header carries a fingerprint of the
// layer plan, so state saved under another layer order is refused.
TEST_CASE("slots: load_slot rejects a config with the same sizes but another layer order") {
  auto model = tiny::make_model({}, 26);
  tiny::Shape permuted;
  permuted.layers = "la,conv,swa,conv,la,swa";
  Session s(model, slots(1)), o(tiny::make_model(permuted, 26), slots(1));
  REQUIRE(s.state_bytes_per_slot() == o.state_bytes_per_slot());
  const auto p = tiny::prompt(8, 10);
  prefill(o, 0, p);
  CHECK_THROWS_AS(s.load_slot(0, o.save_slot(0)), InvalidArgument);
}

TEST_CASE("slots: bad slot ids are OutOfRange") {
  auto model = tiny::make_model({}, 27);
  Session s(model, slots(2));
  CHECK_THROWS_AS(s.reset(2), OutOfRange);
  CHECK_THROWS_AS(s.reset(-1), OutOfRange);
  CHECK_THROWS_AS(s.copy_slot(0, 2), OutOfRange);
  CHECK_THROWS_AS(s.save_slot(5), OutOfRange);
  CHECK_THROWS_AS(s.load_slot(2, s.save_slot(0)), OutOfRange);
  CHECK_THROWS_AS(s.position(2), OutOfRange);
}

TEST_CASE("slots: prefill_batch gives what prefill per slot gives, across pass boundaries") {
  auto model = tiny::make_model({}, 26);
  for (int64_t chunk : {5, 64}) {  // prompts spanning passes; several prompts per pass
    CAPTURE(chunk);
    SessionOptions o = slots(4);
    o.prefill_chunk = chunk;
    Session packed(model, o), alone(model, o);
    const std::vector<std::vector<int32_t>> prompts = {tiny::prompt(13, 10), tiny::prompt(1, 11),
                                                       tiny::prompt(9, 12), tiny::prompt(9, 13)};
    const std::vector<int32_t> order = {3, 0, 1, 2};  // slots 1, 2: equal lengths, one batched LA call
    prefill(packed, 1, tiny::prompt(7, 14));  // a slot that already holds a sequence
    prefill(alone, 1, tiny::prompt(7, 14));
    const std::vector<float> got = tiny::host(packed.prefill_batch(order, prompts, LogitsMode::Last));
    std::vector<float> want;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<float> l = prefill(alone, order[i], prompts[i]);
      want.insert(want.end(), l.begin(), l.end());
    }
    CHECK(same_bits(got, want));
    for (int slot = 0; slot < 4; ++slot) {
      CHECK(packed.position(slot) == alone.position(slot));
      CHECK(packed.save_slot(slot) == alone.save_slot(slot));  // the states, byte for byte
    }
  }
}

TEST_CASE("prefill_chunk: the CUDA default fits the workspace budget, the CPU default is 512") {
  CHECK(based_core::default_prefill_chunk(30740, false) == 512);
  // based-360m (~30 KiB a row) gets the longest pass, based-1b (~53 KiB) half of it
  CHECK(based_core::default_prefill_chunk(30740, true) == 32768);
  CHECK(based_core::default_prefill_chunk(53780, true) == 16384);
  for (std::size_t row : {1000u, 30740u, 32769u, 53780u, 65537u, 131072u}) {
    const int64_t rows = based_core::default_prefill_chunk(row, true);
    CHECK(rows >= 8192);
    CHECK(rows <= 32768);
    // within the budget unless already at the 8192-row floor; the next longer pass would not fit
    if (rows > 8192) CHECK(std::size_t(rows) * row <= based_core::kPrefillWorkspaceBudget);
    if (rows < 32768) CHECK(std::size_t(rows) * 2 * row > based_core::kPrefillWorkspaceBudget);
  }
  CHECK(based_core::default_prefill_chunk(1u << 20, true) == 8192);  // floor, past the budget
}
