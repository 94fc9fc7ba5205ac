// fuzz_safetensors.cpp: any byte string given to the safetensors reader
// either parses or throws based_core::Error; it never reads outside the
// buffer, aborts, hangs or allocates without bound. Any other exception
// escapes and libFuzzer reports it as a crash.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "based_core/error.h"
#include "safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    based_core::SafetensorsFile f(data, size, "fuzz.safetensors");
    // Every view must lie inside the buffer: touch its first and last byte
    // (ASan flags a read past the fuzzer's exactly-sized input copy).
    volatile uint8_t sink = 0;
    for (const auto& kv : f.tensors()) {
      const auto& v = kv.second;
      std::size_t n = 1;
      for (int64_t d : v.shape) n *= std::size_t(d);
      if (n * based_core::dtype_size(v.dtype) != v.nbytes) __builtin_trap();  // the size check lied
      if (v.nbytes) {
        const uint8_t* p = static_cast<const uint8_t*>(v.data);
        sink = sink ^ p[0] ^ p[v.nbytes - 1];
      }
    }
    (void)f.metadata().size();
  } catch (const based_core::Error&) {
    // A clean rejection.
  }
  return 0;
}
