// short_conv.cpp: CPU BaseConv after in_proj (SPEC.md 2.3): the causal depthwise
// 3-tap convolution of a = u[:, 0:C] (cross-correlation: tap 2 is the current
// token), SiLU, and the gate g = u[:, C:2C] (no activation on g).
// The tail [2][C] holds a_{t-2}, a_{t-1} of the last token seen, so a later
// prefill chunk or a decode step continues exactly where the previous call ended.
#include <algorithm>
#include <cmath>

#include "cpu/cpu_ops.h"

namespace based_core {
namespace cpu {
namespace {

template <class P>
void check_common(const P& p, const char* op) {
  detail::require_nonneg(p.channels, op, "channels");
  detail::require_nonneg(p.n_tokens, op, "n_tokens");
  detail::require_f32(p.dtype, op, "dtype");
  const bool work = p.n_tokens > 0 && p.channels > 0;
  detail::require_ptr(p.u, work, op, "u");
  detail::require_ptr(p.weight, work, op, "weight");
  detail::require_ptr(p.y, work, op, "y");
  detail::require_ptr(p.tail, work, op, "tail");
  detail::require_ld(p.ld_u, 2 * p.channels, work ? p.n_tokens : 0, op, "ld_u");
  detail::require_ld(p.ld_y, p.channels, work ? p.n_tokens : 0, op, "ld_y");
}

inline float silu(float x) { return x / (1.f + std::exp(-x)); }

// computes: y[c] = SiLU(w[c,0] a2[c] + w[c,1] a1[c] + w[c,2] a0[c]) * g[c] for c < C
// (a2 = a_{t-2}, a1 = a_{t-1}, a0 = a_t).
void conv_row(const float* w, const float* a2, const float* a1, const float* a0, const float* g,
              int64_t C, float* y) {
  for (int64_t c = 0; c < C; ++c) {
    const float v = w[3 * c] * a2[c] + w[3 * c + 1] * a1[c] + w[3 * c + 2] * a0[c];
    y[c] = silu(v) * g[c];
  }
}

}  // namespace

// computes: c_t = w[:,0] a_{t-2} + w[:,1] a_{t-1} + w[:,2] a_t (a_{<0} from the tail),
// y_t = SiLU(c_t) * g_t; leaves a_{T-2}, a_{T-1} (old tail where T < 2) in the tail.
void conv_prefill(const ops::ConvPrefillParams& p) {
  const char* op = "conv_prefill";
  check_common(p, op);
  if (p.n_tokens == 0 || p.channels == 0) return;
  const int64_t C = p.channels, T = p.n_tokens;
  const float* U = static_cast<const float*>(p.u);
  const float* w = static_cast<const float*>(p.weight);
  float* Y = static_cast<float*>(p.y);
  const float* tail0 = p.tail;      // a_{-2}
  const float* tail1 = p.tail + C;  // a_{-1}
  // The tail is only read here and updated after the loop, so tokens are independent.
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (T * C > 32768)
#endif
  for (int64_t t = 0; t < T; ++t) {
    const float* a0 = U + t * p.ld_u;
    const float* a1 = t >= 1 ? U + (t - 1) * p.ld_u : tail1;
    const float* a2 = t >= 2 ? U + (t - 2) * p.ld_u : (t == 1 ? tail1 : tail0);
    conv_row(w, a2, a1, a0, a0 + C, C, Y + t * p.ld_y);
  }
  // New tail: [a_{T-2}, a_{T-1}]; with T = 1, a_{T-2} is the old a_{-1}.
  if (T >= 2) {
    std::copy_n(U + (T - 2) * p.ld_u, C, p.tail);
  } else {
    std::copy_n(p.tail + C, C, p.tail);
  }
  std::copy_n(U + (T - 1) * p.ld_u, C, p.tail + C);
}

// computes, for row i in slot s = slots[i]: y_i = SiLU(w[:,0] tail_s[0] + w[:,1] tail_s[1]
// + w[:,2] a_i) * g_i, then tail_s = [tail_s[1], a_i].
void conv_decode(const ops::ConvDecodeParams& p) {
  const char* op = "conv_decode";
  check_common(p, op);
  detail::check_decode_slots(p.slots, p.n_tokens, op);
  if (p.n_tokens == 0 || p.channels == 0) return;
  const int64_t C = p.channels;
  const float* U = static_cast<const float*>(p.u);
  const float* w = static_cast<const float*>(p.weight);
  float* Y = static_cast<float*>(p.y);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (p.n_tokens * C > 32768)
#endif
  for (int64_t i = 0; i < p.n_tokens; ++i) {
    float* tail = p.tail + int64_t(p.slots[i]) * 2 * C;
    const float* a0 = U + i * p.ld_u;
    conv_row(w, tail, tail + C, a0, a0 + C, C, Y + i * p.ld_y);
    std::copy_n(tail + C, C, tail);
    std::copy_n(a0, C, tail + C);
  }
}

}  // namespace cpu
}  // namespace based_core
