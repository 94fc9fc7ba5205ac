// sliding_window.cpp: CPU sliding-window softmax attention with RoPE (SPEC.md 2.2).
//
// q and k are rotated (rotate-half over the first rotary_dim dims) at their
// ABSOLUTE position; the ring holds post-RoPE keys and raw values, position p
// in row p % R. A query at p attends keys max(0, p - window) .. p (window + 1
// keys). Scores, softmax and the weighted sum of values are done in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"

namespace based_core {
namespace cpu {
namespace {

void check_shape(const ops::SlidingWindowShape& s, const char* op) {
  using detail::require;
  require(s.heads > 0, op, "shape.heads must be > 0, got " + std::to_string(s.heads));
  require(s.head_dim > 0, op, "shape.head_dim must be > 0, got " + std::to_string(s.head_dim));
  require(s.window >= 0, op, "shape.window must be >= 0, got " + std::to_string(s.window));
  require(s.rotary_dim >= 0 && s.rotary_dim <= s.head_dim && s.rotary_dim % 2 == 0, op,
          "shape.rotary_dim must be even and in [0, head_dim], got " +
              std::to_string(s.rotary_dim));
  require(s.rotary_dim == 0 || (std::isfinite(s.rope_base) && s.rope_base > 0.f), op,
          "shape.rope_base must be finite and > 0");
  require(std::isfinite(s.scale), op, "shape.scale must be finite");
  require(int64_t(s.ring_size) >= int64_t(s.window) + 1, op,
          "shape.ring_size (" + std::to_string(s.ring_size) + ") must be >= window + 1 (" +
              std::to_string(int64_t(s.window) + 1) + ")");
}

template <class P>
void check_common(const P& p, const char* op) {
  check_shape(p.shape, op);
  detail::require_nonneg(p.n_tokens, op, "n_tokens");
  detail::require_f32(p.dtype, op, "dtype");
  const bool work = p.n_tokens > 0;
  const int64_t width = int64_t(p.shape.heads) * p.shape.head_dim;
  detail::require_ptr(p.qkv, work, op, "qkv");
  detail::require_ptr(p.out, work, op, "out");
  detail::require_ptr(p.ring_k, work, op, "ring_k");
  detail::require_ptr(p.ring_v, work, op, "ring_v");
  detail::require_ld(p.ld_qkv, 3 * width, p.n_tokens, op, "ld_qkv");
  detail::require_ld(p.ld_out, width, p.n_tokens, op, "ld_out");
}

// computes: cs[i] = cos(pos * theta_i), sn[i] = sin(pos * theta_i), theta_i = base^(-2i/rd),
// i < rd/2. Angles in double: p * theta in fp32 would drift by ~1e-4 rad at p ~ 2000.
void rope_angles(int64_t pos, int rd, float base, float* cs, float* sn) {
  for (int i = 0; i < rd / 2; ++i) {
    const double theta = std::pow(double(base), -2.0 * i / double(rd));
    const double a = double(pos) * theta;
    cs[i] = float(std::cos(a));
    sn[i] = float(std::sin(a));
  }
}

// computes: out = x with pairs (i, i + rd/2), i < rd/2, rotated by the angles (rotate-half);
// dims >= rd are copied unchanged.
void rope_rotate(const float* x, int hd, int rd, const float* cs, const float* sn, float* out) {
  const int half = rd / 2;
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    out[i] = a * cs[i] - b * sn[i];
    out[i + half] = b * cs[i] + a * sn[i];
  }
  for (int i = rd; i < hd; ++i) out[i] = x[i];
}

// computes: out = sum_{j=lo}^{hi} softmax_j(q . k_j * scale) v_j, where kv(j) yields the
// (k_j, v_j) pointers of one head. scores has hi - lo + 1 and acc hd doubles of scratch.
template <class KV>
void attend(const float* q, int64_t lo, int64_t hi, int hd, float scale, KV kv, double* scores,
            double* acc, float* out) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = lo; j <= hi; ++j) {
    const float* k = kv(j).first;
    double s = 0.0;
    for (int e = 0; e < hd; ++e) s += double(q[e]) * k[e];
    s *= scale;
    scores[j - lo] = s;
    mx = std::max(mx, s);
  }
  for (int e = 0; e < hd; ++e) acc[e] = 0.0;
  double sum = 0.0;
  for (int64_t j = lo; j <= hi; ++j) {
    const double wgt = std::exp(scores[j - lo] - mx);  // max subtraction: no overflow
    sum += wgt;
    const float* v = kv(j).second;
    for (int e = 0; e < hd; ++e) acc[e] += wgt * v[e];
  }
  for (int e = 0; e < hd; ++e) out[e] = float(acc[e] / sum);
}

template <class T>
std::vector<T> scratch(std::size_t n, const char* op) {
  try {
    return std::vector<T>(n);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory(std::string(op) + ": cannot allocate " + std::to_string(n * sizeof(T)) +
                      " bytes of host scratch");
  }
}

}  // namespace

// computes: for t < T, p = start_pos + t: o_t = sum_{j=max(0,p-window)}^{p}
// softmax_j(rope(q_t, p) . k_j * scale) v_j, keys of j < start_pos from the ring; then
// stores rope(k_t, p), v_t of the last min(R, T) new positions in ring rows p % R.
void swa_prefill(const ops::SwaPrefillParams& p) {
  const char* op = "swa_prefill";
  check_common(p, op);
  detail::require_nonneg(p.start_pos, op, "start_pos");
  if (p.n_tokens == 0) return;
  const int H = p.shape.heads, hd = p.shape.head_dim, rd = p.shape.rotary_dim;
  const int64_t W = p.shape.window, R = p.shape.ring_size, T = p.n_tokens, P0 = p.start_pos;
  const int64_t width = int64_t(H) * hd;
  const float* QKV = static_cast<const float*>(p.qkv);
  float* ring_k = static_cast<float*>(p.ring_k);
  float* ring_v = static_cast<float*>(p.ring_v);
  float* OUT = static_cast<float*>(p.out);

  // The ring is only read during attention and written at the end, so history
  // rows (positions < start_pos) are never overwritten before they are used.
  // The new tokens' rotated keys go to host scratch; their values are read in place.
  std::vector<float> keys = scratch<float>(std::size_t(T * width), op);
  std::vector<float> rope = scratch<float>(std::size_t(T) * std::max(rd, 1), op);
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t t = 0; t < T; ++t) {
    float* cs = rope.data() + t * std::max(rd, 1);
    float* sn = cs + rd / 2;
    rope_angles(P0 + t, rd, p.shape.rope_base, cs, sn);
    const float* k = QKV + t * p.ld_qkv + width;
    for (int h = 0; h < H; ++h)
      rope_rotate(k + int64_t(h) * hd, hd, rd, cs, sn, keys.data() + t * width + int64_t(h) * hd);
  }

#ifdef _OPENMP
#pragma omp parallel
#endif
  {
    std::vector<double> scores(static_cast<std::size_t>(W + 1));
    std::vector<double> acc(static_cast<std::size_t>(hd));
    std::vector<float> q(static_cast<std::size_t>(hd));
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
    for (int64_t w = 0; w < T * H; ++w) {
      const int64_t t = w / H, pos = P0 + t;
      const int64_t ho = (w % H) * hd;  // this head's column offset
      const float* cs = rope.data() + t * std::max(rd, 1);
      rope_rotate(QKV + t * p.ld_qkv + ho, hd, rd, cs, cs + rd / 2, q.data());
      auto kv = [&](int64_t j) -> std::pair<const float*, const float*> {
        if (j < P0) return {ring_k + (j % R) * width + ho, ring_v + (j % R) * width + ho};
        return {keys.data() + (j - P0) * width + ho, QKV + (j - P0) * p.ld_qkv + 2 * width + ho};
      };
      attend(q.data(), std::max<int64_t>(0, pos - W), pos, hd, p.shape.scale, kv, scores.data(),
             acc.data(), OUT + t * p.ld_out + ho);
    }
  }

  // Only the last R new positions survive in the ring; earlier ones would be overwritten.
  for (int64_t pos = std::max(P0, P0 + T - R); pos < P0 + T; ++pos) {
    const int64_t t = pos - P0, row = pos % R;
    std::copy_n(keys.data() + t * width, width, ring_k + row * width);
    std::copy_n(QKV + t * p.ld_qkv + 2 * width, width, ring_v + row * width);
  }
}

// computes: for row i (slot s, position p): write rope(k_i, p), v_i to ring row p % R of
// slot s, then o_i = sum_{j=max(0,p-window)}^{p} softmax_j(rope(q_i, p) . k_j * scale) v_j.
void swa_decode(const ops::SwaDecodeParams& p) {
  const char* op = "swa_decode";
  check_common(p, op);
  detail::check_decode_slots(p.slots, p.n_tokens, op);
  detail::require_ptr(p.positions, p.n_tokens > 0, op, "positions");
  for (int64_t i = 0; i < p.n_tokens; ++i)
    detail::require(p.positions[i] >= 0, op,
                    "positions[" + std::to_string(i) + "] must be >= 0, got " +
                        std::to_string(p.positions[i]));
  if (p.n_tokens == 0) return;
  const int H = p.shape.heads, hd = p.shape.head_dim, rd = p.shape.rotary_dim;
  const int64_t W = p.shape.window, R = p.shape.ring_size;
  const int64_t width = int64_t(H) * hd;
  const float* QKV = static_cast<const float*>(p.qkv);
  float* OUT = static_cast<float*>(p.out);

  // (row, head) pairs touch disjoint ring columns (slots are distinct): parallel.
#ifdef _OPENMP
#pragma omp parallel
#endif
  {
    std::vector<double> scores(static_cast<std::size_t>(W + 1));
    std::vector<double> acc(static_cast<std::size_t>(hd));
    std::vector<float> q(static_cast<std::size_t>(hd));
    std::vector<float> cs(static_cast<std::size_t>(rd / 2 + 1)), sn(cs.size());
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t w = 0; w < p.n_tokens * H; ++w) {
      const int64_t i = w / H, ho = (w % H) * hd;
      const int64_t pos = p.positions[i];
      float* rk = static_cast<float*>(p.ring_k) + int64_t(p.slots[i]) * R * width;
      float* rv = static_cast<float*>(p.ring_v) + int64_t(p.slots[i]) * R * width;
      const float* row = QKV + i * p.ld_qkv;
      rope_angles(pos, rd, p.shape.rope_base, cs.data(), sn.data());
      // Write first: the current token is one of the keys it attends.
      rope_rotate(row + width + ho, hd, rd, cs.data(), sn.data(), rk + (pos % R) * width + ho);
      std::copy_n(row + 2 * width + ho, hd, rv + (pos % R) * width + ho);
      rope_rotate(row + ho, hd, rd, cs.data(), sn.data(), q.data());
      auto kv = [&](int64_t j) -> std::pair<const float*, const float*> {
        return {rk + (j % R) * width + ho, rv + (j % R) * width + ho};
      };
      attend(q.data(), std::max<int64_t>(0, pos - W), pos, hd, p.shape.scale, kv, scores.data(),
             acc.data(), OUT + i * p.ld_out + ho);
    }
  }
}

}  // namespace cpu
}  // namespace based_core
