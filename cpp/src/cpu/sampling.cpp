// sampling.cpp: the sample op on the CPU backend (the host routine of sampler.cpp per row).
#include <string>

#include "based_core/error.h"
#include "based_core/sampler.h"
#include "cpu_ops.h"
#include "sampling_math.h"

namespace based_core {
namespace cpu {

// computes: SampleParams (ops.h) row by row.
void sample(const ops::SampleParams& p) {
  if (p.rows <= 0) return;
  if (!p.logits || !p.out || !p.seqs || !p.steps || p.vocab <= 0)
    throw InvalidArgument("sample: null pointer or empty vocabulary");
  if (p.ld != 0 && p.ld < p.vocab) throw InvalidArgument("sample: ld must be 0 or >= vocab");
  for (int64_t i = 0; i < p.rows; ++i) {
    const float* row = p.logits + i * p.row_stride();
    if (p.temperature <= 0.f || p.top_k == 1) {
      p.out[i] = based_core::argmax(row, p.vocab);
      continue;
    }
    double u = sample_uniform(p.seed, uint32_t(p.seqs[i]), uint32_t(p.steps[i]));
    p.out[i] = sample_row(row, p.vocab, p.temperature, p.top_k, p.top_p, u);
  }
}

}  // namespace cpu
}  // namespace based_core
