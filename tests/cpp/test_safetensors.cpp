// Tests of the strict safetensors reader on in-memory images: valid files,
// and every malformed header field rejected with a message naming it.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "based_core/error.h"
#include "safetensors.h"

using namespace based_core;

namespace {

std::vector<uint8_t> image(const std::string& header, std::size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::string error_of(const std::vector<uint8_t>& img) {
  try {
    SafetensorsFile f(img.data(), img.size(), "t.safetensors");
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("safetensors: valid file with metadata, several dtypes") {
  std::string h = R"({"__metadata__": {"format": "pt"},
      "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
      "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
      "c": {"dtype": "I8", "shape": [2], "data_offsets": [32, 34]},
      "e": {"dtype": "F16", "shape": [0, 5], "data_offsets": [34, 34]}})";
  auto img = image(h, 34);
  SafetensorsFile f(img.data(), img.size(), "t");
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.tensors().at("a").shape == std::vector<int64_t>{2, 3});
  CHECK(f.tensors().at("a").dtype == DType::F32);
  CHECK(f.tensors().at("b").nbytes == 8);
  CHECK(f.tensors().at("e").nbytes == 0);
  CHECK(f.unsupported().at("c") == "I8");
  CHECK(f.metadata().at("format") == "pt");
}

TEST_CASE("safetensors: malformed inputs are rejected with a reason") {
  CHECK(error_of(std::vector<uint8_t>(5, 0)).find("truncated") != std::string::npos);
  auto big = image("{}", 0);
  big[7] = 0x10;  // header length 2^60
  CHECK(error_of(big).find("exceeds") != std::string::npos);
  auto longer = image("{}", 0);
  longer[0] = 200;
  CHECK(error_of(longer).find("only") != std::string::npos);
  CHECK(error_of(image("{nope", 0)).find("not valid JSON") != std::string::npos);
  CHECK(error_of(image("[]", 0)).find("not a JSON object") != std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4)).find("truncated") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8)).find("needs 12 bytes") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8)).find("reversed") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8)).find("unknown dtype") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8)).find("non-negative") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", 8))
            .find("too large") != std::string::npos);
  CHECK(error_of(image(R"({"a": {"dtype": "F32", "data_offsets": [0, 8]}})", 8)).find("missing 'shape'") !=
        std::string::npos);
  CHECK(error_of(image(R"({"a": 3})", 0)).find("not an object") != std::string::npos);
}

TEST_CASE("safetensors: random corruption never crashes") {
  std::string h = R"({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}})";
  auto good = image(h, 64);
  std::mt19937 rng(1);
  int rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto img = good;
    int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; ++i) img[rng() % img.size()] = uint8_t(rng());
    if (rng() % 4 == 0) img.resize(rng() % img.size());
    try {
      SafetensorsFile f(img.data(), img.size(), "fuzz");
      for (const auto& kv : f.tensors())  // whatever loaded lies inside the image
        CHECK(static_cast<const uint8_t*>(kv.second.data) + kv.second.nbytes <= img.data() + img.size());
    } catch (const CheckpointError&) {
      ++rejected;
    }
  }
  CHECK(rejected > 0);
}
