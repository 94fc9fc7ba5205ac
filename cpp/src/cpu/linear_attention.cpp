// linear_attention.cpp: CPU Taylor linear attention (SPEC.md 2.1), prefill and decode.
//
// Both ops run the recurrent form token by token on the fp32 feature-major
// state S [D][hd], z [D] of one head (either layout of ops.h: full or
// symmetric): update with phi(k_t) v_t^T, then read out with phi(q_t). That is O(T * D * hd) per head and continues any state already
// present, which is what a prefill of a later chunk needs. Update and readout
// are fused in one pass over the D state rows; the readout sums in double.
#include <cmath>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"

namespace based_core {
namespace cpu {
namespace {

void check_shape(const ops::LinearAttentionShape& s, const char* op) {
  detail::require(s.heads > 0, op, "shape.heads must be > 0, got " + std::to_string(s.heads));
  detail::require(s.feature_dim > 0, op,
                  "shape.feature_dim must be > 0, got " + std::to_string(s.feature_dim));
  detail::require(s.head_dim > 0, op,
                  "shape.head_dim must be > 0, got " + std::to_string(s.head_dim));
  detail::require(std::isfinite(s.eps) && s.eps >= 0.f, op, "shape.eps must be finite and >= 0");
}

// computes: phi(x) = [1, x_i / f^(1/4), x_i x_j / (sqrt2 sqrt f)] (D = 1 + f + f^2 values,
// TaylorExp order: the second-order block is the row-major outer product), or, for the
// symmetric layout of ops.h, the upper triangle i <= j, then x, then 1, with the scales on the
// query side only (key side: x_i x_j, x_i, 1; query side: x_i x_j / f off the diagonal,
// x_i^2 / (2f) on it, x_i / sqrt f, 1). The constants use f, the feature dim, never hd
// (SPEC.md 6.4-6.5).
void feature_map(const float* x, int f, bool symmetric, bool query, float* out) {
  if (!symmetric) {
    const double c1 = 1.0 / std::sqrt(std::sqrt(double(f)));
    const double c2 = 1.0 / (std::sqrt(2.0) * std::sqrt(double(f)));
    out[0] = 1.f;
    for (int i = 0; i < f; ++i) out[1 + i] = float(x[i] * c1);
    float* o2 = out + 1 + f;
    for (int i = 0; i < f; ++i)
      for (int j = 0; j < f; ++j) o2[i * f + j] = float(double(x[i]) * x[j] * c2);
    return;
  }
  const double w1 = query ? 1.0 / std::sqrt(double(f)) : 1.0;
  const double w_off = query ? 1.0 / f : 1.0, w_diag = query ? 0.5 / f : 1.0;
  int r = 0;
  for (int i = 0; i < f; ++i)
    for (int j = i; j < f; ++j) out[r++] = float(double(x[i]) * x[j] * (i == j ? w_diag : w_off));
  for (int i = 0; i < f; ++i) out[r++] = float(x[i] * w1);
  out[r] = 1.f;
}

// computes, for one head and one token: S += phik v^T, z += phik (update first, so the
// token sees itself), then y = (phiq^T S) / (phiq^T z + eps). num is hd doubles of scratch.
void la_step(const float* phik, const float* phiq, const float* v, int64_t D, int hd,
             float eps, float* S, float* z, float* y, double* num) {
  for (int e = 0; e < hd; ++e) num[e] = 0.0;
  double den = 0.0;
  for (int64_t r = 0; r < D; ++r) {
    const float a = phik[r];
    const double b = phiq[r];
    float* Sr = S + r * hd;
    for (int e = 0; e < hd; ++e) {
      Sr[e] += a * v[e];
      num[e] += b * Sr[e];
    }
    z[r] += a;
    den += b * z[r];
  }
  const double inv = 1.0 / (den + double(eps));
  for (int e = 0; e < hd; ++e) y[e] = float(num[e] * inv);
}

// Checks shared by prefill and decode: sizes, dtypes, strides, pointers.
template <class P>
void check_common(const P& p, const char* op) {
  check_shape(p.shape, op);
  detail::require_nonneg(p.n_tokens, op, "n_tokens");
  detail::require_f32(p.dtype, op, "dtype");
  const bool work = p.n_tokens > 0;
  const int64_t qk_w = int64_t(p.shape.heads) * p.shape.feature_dim;
  const int64_t v_w = int64_t(p.shape.heads) * p.shape.head_dim;
  detail::require_ptr(p.q, work, op, "q");
  detail::require_ptr(p.k, work, op, "k");
  detail::require_ptr(p.v, work, op, "v");
  detail::require_ptr(p.y, work, op, "y");
  detail::require_ptr(p.state_s, work, op, "state_s");
  detail::require_ptr(p.state_z, work, op, "state_z");
  detail::require_ld(p.ld_q, qk_w, p.n_tokens, op, "ld_q");
  detail::require_ld(p.ld_k, qk_w, p.n_tokens, op, "ld_k");
  detail::require_ld(p.ld_v, v_w, p.n_tokens, op, "ld_v");
  detail::require_ld(p.ld_y, v_w, p.n_tokens, op, "ld_y");
}

}  // namespace

// computes: per head, for t = 0..T-1: S += phi(k_t) v_t^T, z += phi(k_t),
// y_t = (phi(q_t)^T S) / (phi(q_t)^T z + eps), continuing from the slot's state.
// Sequence b of a batch reads q + b*seq_stride_q (...) and owns state slot b.
void la_prefill(const ops::LaPrefillParams& p) {
  const char* op = "la_prefill";
  check_common(p, op);
  detail::require_nonneg(p.n_seqs, op, "n_seqs");
  if (p.n_seqs > 1) {
    detail::require_nonneg(p.seq_stride_q, op, "seq_stride_q");
    detail::require_nonneg(p.seq_stride_k, op, "seq_stride_k");
    detail::require_nonneg(p.seq_stride_v, op, "seq_stride_v");
    detail::require_nonneg(p.seq_stride_y, op, "seq_stride_y");
  }
  if (p.n_tokens == 0 || p.n_seqs == 0) return;
  const int H = p.shape.heads, f = p.shape.feature_dim, hd = p.shape.head_dim;
  const int64_t D = p.shape.state_rows();
  const bool sym = p.shape.symmetric;
  const float* Q = static_cast<const float*>(p.q);
  const float* K = static_cast<const float*>(p.k);
  const float* V = static_cast<const float*>(p.v);
  float* Y = static_cast<float*>(p.y);
  // (sequence, head) pairs are independent (own state, own columns), so they run in
  // parallel; the tokens of one head are sequential by nature of the recurrence.
  const int64_t work = p.n_seqs * H;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int64_t w = 0; w < work; ++w) {
    const int64_t b = w / H;
    const int h = int(w % H);
    std::vector<float> phik(D), phiq(D);
    std::vector<double> num(hd);
    float* S = p.state_s + (b * H + h) * D * hd;
    float* z = p.state_z + (b * H + h) * D;
    const float* Qb = Q + b * p.seq_stride_q;
    const float* Kb = K + b * p.seq_stride_k;
    const float* Vb = V + b * p.seq_stride_v;
    float* Yb = Y + b * p.seq_stride_y;
    for (int64_t t = 0; t < p.n_tokens; ++t) {
      feature_map(Kb + t * p.ld_k + int64_t(h) * f, f, sym, false, phik.data());
      feature_map(Qb + t * p.ld_q + int64_t(h) * f, f, sym, true, phiq.data());
      la_step(phik.data(), phiq.data(), Vb + t * p.ld_v + int64_t(h) * hd, D, hd, p.shape.eps, S,
              z, Yb + t * p.ld_y + int64_t(h) * hd, num.data());
    }
  }
}

// computes: for row i, slot s = slots[i], each head: S_s += phi(k_i) v_i^T, z_s += phi(k_i),
// y_i = (phi(q_i)^T S_s) / (phi(q_i)^T z_s + eps).
void la_decode(const ops::LaDecodeParams& p) {
  const char* op = "la_decode";
  check_common(p, op);
  detail::check_decode_slots(p.slots, p.n_tokens, op);
  if (p.n_tokens == 0) return;
  const int H = p.shape.heads, f = p.shape.feature_dim, hd = p.shape.head_dim;
  const int64_t D = p.shape.state_rows();
  const bool sym = p.shape.symmetric;
  const float* Q = static_cast<const float*>(p.q);
  const float* K = static_cast<const float*>(p.k);
  const float* V = static_cast<const float*>(p.v);
  float* Y = static_cast<float*>(p.y);
  const int64_t work = p.n_tokens * H;  // (row, head) pairs touch disjoint state: parallel
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int64_t w = 0; w < work; ++w) {
    const int64_t i = w / H;
    const int h = int(w % H);
    const int64_t slot = p.slots[i];
    std::vector<float> phik(D), phiq(D);
    std::vector<double> num(hd);
    float* S = p.state_s + (slot * H + h) * D * hd;
    float* z = p.state_z + (slot * H + h) * D;
    feature_map(K + i * p.ld_k + int64_t(h) * f, f, sym, false, phik.data());
    feature_map(Q + i * p.ld_q + int64_t(h) * f, f, sym, true, phiq.data());
    la_step(phik.data(), phiq.data(), V + i * p.ld_v + int64_t(h) * hd, D, hd, p.shape.eps, S, z,
            Y + i * p.ld_y + int64_t(h) * hd, num.data());
  }
}

}  // namespace cpu
}  // namespace based_core
