// test_cpu_attention.cpp: the CPU backend's linear-attention and sliding-window
// ops against naive double-precision references written from SPEC.md (LA through
// the explicit quadratic sum of kappa(q, k) = 1 + s + s^2/2, SWA through a full
// per-query window loop), plus state continuation and multi-slot decode.

#include "cpu_op_test_util.h"

using namespace based_core;

namespace {

// ---------------------------------------------------------------- linear attention
struct La {
  int H, f, hd;
  int64_t T;
  Mat q, k, v;
  La(int H_, int f_, int hd_, int64_t T_, unsigned seed)
      : H(H_), f(f_), hd(hd_), T(T_), q(randn(T_, H_ * f_, 2, seed)),
        k(randn(T_, H_ * f_, 1, seed + 1)), v(randn(T_, H_ * hd_, 3, seed + 2)) {}
  int64_t D() const { return 1 + f + int64_t(f) * f; }
  int64_t state() const { return H * D() * hd; }
  ops::LinearAttentionShape shape() const {
    ops::LinearAttentionShape s;
    s.heads = H; s.feature_dim = f; s.head_dim = hd; s.eps = 1e-12f;
    return s;
  }
};

// SPEC 2.1 parallel form: y_t = sum_{j<=t} kappa(q_t,k_j) v_j / (sum_{j<=t} kappa + eps).
Ref la_ref(const La& a) {
  Ref y(std::size_t(a.T * a.H * a.hd));
  for (int h = 0; h < a.H; ++h)
    for (int64_t t = 0; t < a.T; ++t) {
      std::vector<double> num(a.hd, 0.0);
      double den = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double s = 0;
        for (int i = 0; i < a.f; ++i)
          s += double(a.q.row(t)[h * a.f + i]) * a.k.row(j)[h * a.f + i];
        s /= std::sqrt(double(a.f));
        const double kappa = 1 + s + s * s / 2;
        den += kappa;
        for (int e = 0; e < a.hd; ++e) num[e] += kappa * a.v.row(j)[h * a.hd + e];
      }
      for (int e = 0; e < a.hd; ++e) y[(t * a.H + h) * a.hd + e] = num[e] / (den + 1e-12);
    }
  return y;
}

// SPEC 2.1 state after tokens [0, T): S = sum phi(k_j) v_j^T [H][D][hd], z = sum phi(k_j) [H][D]
// laid out as one [H*D] x hd (resp. [H] x D) matrix, phi from the table in SPEC 2.1.
void la_state_ref(const La& a, int64_t T, Ref& S, Ref& z) {
  const int64_t D = a.D();
  S.assign(std::size_t(a.H * D * a.hd), 0.0);
  z.assign(std::size_t(a.H * D), 0.0);
  std::vector<double> phi(D);
  for (int h = 0; h < a.H; ++h)
    for (int64_t j = 0; j < T; ++j) {
      const float* x = a.k.row(j) + h * a.f;
      phi[0] = 1;
      for (int i = 0; i < a.f; ++i) phi[1 + i] = x[i] / std::pow(double(a.f), 0.25);
      for (int i = 0; i < a.f; ++i)
        for (int m = 0; m < a.f; ++m)
          phi[1 + a.f + a.f * i + m] = double(x[i]) * x[m] / std::sqrt(2.0 * a.f);
      for (int64_t r = 0; r < D; ++r) {
        z[h * D + r] += phi[r];
        for (int e = 0; e < a.hd; ++e)
          S[(h * D + r) * a.hd + e] += phi[r] * a.v.row(j)[h * a.hd + e];
      }
    }
}

void la_prefill(const La& a, Mat& y, int64_t t0, int64_t n, float* S, float* z) {
  ops::LaPrefillParams p;
  p.shape = a.shape();
  p.q = a.q.row(t0); p.k = a.k.row(t0); p.v = a.v.row(t0);
  p.ld_q = a.q.ld; p.ld_k = a.k.ld; p.ld_v = a.v.ld; p.y = y.row(t0); p.ld_y = y.ld;
  p.n_tokens = n; p.state_s = S; p.state_z = z;
  be().la_prefill(p);
}

void la_decode(const La& a, Mat& y, int64_t t, int32_t slot, float* S, float* z) {
  ops::LaDecodeParams p;
  p.shape = a.shape();
  p.q = a.q.row(t); p.k = a.k.row(t); p.v = a.v.row(t);
  p.ld_q = a.q.ld; p.ld_k = a.k.ld; p.ld_v = a.v.ld; p.y = y.row(t); p.ld_y = y.ld;
  p.n_tokens = 1; p.slots = &slot; p.state_s = S; p.state_z = z;
  be().la_decode(p);
}

void expect_state(const La& a, int64_t T, const float* S, const float* z) {
  Ref Sr, zr;
  la_state_ref(a, T, Sr, zr);
  Mat Sm(a.H * a.D(), a.hd, 0, 0.f), zm(a.H, a.D(), 0, 0.f);
  std::copy_n(S, Sm.d.size(), Sm.d.begin());
  std::copy_n(z, zm.d.size(), zm.d.begin());
  expect_close(Sm, Sr);
  expect_close(zm, zr);
}

TEST_CASE("la_prefill: matches the quadratic kappa form and leaves sum phi(k) v^T in the state") {
  for (int hd : {64, 112})
    for (int64_t T : kLengths) {
      CAPTURE(hd); CAPTURE(T);
      La a(2, 16, hd, T, unsigned(10 * T + hd));
      std::vector<float> S(a.state(), 0.f), z(a.H * a.D(), 0.f);
      Mat y = output(T, a.H * hd, 4);
      la_prefill(a, y, 0, T, S.data(), z.data());
      expect_close(y, la_ref(a));
      expect_state(a, T, S.data(), z.data());
    }
}

TEST_CASE("la_prefill: two calls equal one (state continuation); then decode continues") {
  for (int hd : {64, 112})
    for (int64_t T : kLengths) {
      const Ref ref = la_ref(La(2, 16, hd, T, unsigned(T + 7)));
      for (int64_t split : {int64_t(0), int64_t(1), T / 2, T - 1}) {
        CAPTURE(hd); CAPTURE(T); CAPTURE(split);
        La a(2, 16, hd, T, unsigned(T + 7));
        std::vector<float> S(a.state(), 0.f), z(a.H * a.D(), 0.f);
        Mat y = output(T, a.H * hd, 4), yd = output(T, a.H * hd, 4);
        la_prefill(a, y, 0, split, S.data(), z.data());
        std::vector<float> S2 = S, z2 = z;
        la_prefill(a, y, split, T - split, S.data(), z.data());
        expect_close(y, ref);
        expect_state(a, T, S.data(), z.data());
        // prefill [0, split) then decode the rest one token at a time
        for (int64_t t = 0; t < split; ++t) std::copy_n(y.row(t), y.ld, yd.row(t));
        for (int64_t t = split; t < T; ++t) la_decode(a, yd, t, 0, S2.data(), z2.data());
        expect_close(yd, ref);
        expect_state(a, T, S2.data(), z2.data());
      }
    }
}

TEST_CASE("la_prefill batched: B sequences per call (interleaved rows), two calls per sequence") {
  // Sequence b's token t is row t*B + b of q, k, v (token stride B*ld, sequence stride ld); y of
  // sequence b is rows [b*T, (b+1)*T) of one output; states [B][H][D][hd]. Tokens [0, split) in one
  // batched call, the rest in a second: each sequence continues from its own state.
  for (int hd : {64, 112})
    for (int B : {1, 3})
      for (int64_t T : {int64_t(1), int64_t(63), int64_t(65), int64_t(300)}) {
        CAPTURE(hd); CAPTURE(B); CAPTURE(T);
        std::vector<La> seqs;
        for (int b = 0; b < B; ++b) seqs.emplace_back(2, 16, hd, T, unsigned(1000 + 10 * b + T));
        const La& a0 = seqs[0];
        Mat q(T * B, 32, 1, kNaN), k(T * B, 32, 1, kNaN), v(T * B, 2 * hd, 1, kNaN);
        for (int b = 0; b < B; ++b)
          for (int64_t t = 0; t < T; ++t) {
            std::copy_n(seqs[b].q.row(t), 32, q.row(t * B + b));
            std::copy_n(seqs[b].k.row(t), 32, k.row(t * B + b));
            std::copy_n(seqs[b].v.row(t), 2 * hd, v.row(t * B + b));
          }
        Mat y = output(B * T, 2 * hd, 4);
        std::vector<float> S(B * a0.state(), 0.f), z(B * a0.H * a0.D(), 0.f);
        const int64_t split = T / 2;
        for (auto [t0, n] : {std::pair<int64_t, int64_t>{0, split}, {split, T - split}}) {
          ops::LaPrefillParams p;
          p.shape = a0.shape();
          p.q = q.row(t0 * B); p.k = k.row(t0 * B); p.v = v.row(t0 * B); p.y = y.row(t0);
          p.ld_q = B * q.ld; p.ld_k = B * k.ld; p.ld_v = B * v.ld; p.ld_y = y.ld;
          p.seq_stride_q = q.ld; p.seq_stride_k = k.ld; p.seq_stride_v = v.ld; p.seq_stride_y = T * y.ld;
          p.n_tokens = n; p.n_seqs = B; p.state_s = S.data(); p.state_z = z.data();
          be().la_prefill(p);
        }
        for (int b = 0; b < B; ++b) {
          Mat yb(T, 2 * hd, 4, 0.f);
          for (int64_t t = 0; t < T; ++t) std::copy_n(y.row(b * T + t), y.ld, yb.row(t));
          expect_close(yb, la_ref(seqs[b]));
          expect_state(seqs[b], T, S.data() + b * a0.state(), z.data() + b * a0.H * a0.D());
        }
      }
}

TEST_CASE("la_decode: several slots in arbitrary order write only their slots") {
  for (int hd : {64, 112}) {
    CAPTURE(hd);
    const int NS = 5;
    const std::vector<int64_t> hist = {3, 0, 65, 0, 1};  // tokens already in each slot
    std::vector<La> seqs;
    for (int s = 0; s < NS; ++s) seqs.emplace_back(2, 16, hd, hist[s] + 2, unsigned(50 + s));
    const int64_t st = seqs[0].state(), zt = seqs[0].H * seqs[0].D();
    std::vector<float> S(NS * st, kSentinel), z(NS * zt, kSentinel);
    for (int s : {0, 2, 4}) {
      std::fill_n(S.begin() + s * st, st, 0.f);
      std::fill_n(z.begin() + s * zt, zt, 0.f);
      Mat y = output(seqs[s].T, 2 * hd, 0);
      la_prefill(seqs[s], y, 0, hist[s], S.data() + s * st, z.data() + s * zt);
    }
    const std::vector<int32_t> slots = {4, 0, 2};
    for (int step = 0; step < 2; ++step) {  // two decode steps over the same rows
      Mat q(3, 32, 1, kNaN), k(3, 32, 1, kNaN), v(3, 2 * hd, 1, kNaN), y = output(3, 2 * hd, 2);
      for (int i = 0; i < 3; ++i) {
        const La& a = seqs[slots[i]];
        const int64_t t = hist[slots[i]] + step;
        std::copy_n(a.q.row(t), 32, q.row(i));
        std::copy_n(a.k.row(t), 32, k.row(i));
        std::copy_n(a.v.row(t), 2 * hd, v.row(i));
      }
      ops::LaDecodeParams p;
      p.shape = seqs[0].shape();
      p.q = q.d.data(); p.k = k.d.data(); p.v = v.d.data();
      p.ld_q = q.ld; p.ld_k = k.ld; p.ld_v = v.ld;
      p.y = y.d.data(); p.ld_y = y.ld; p.n_tokens = 3; p.slots = slots.data();
      p.state_s = S.data(); p.state_z = z.data();
      be().la_decode(p);
      Ref ref(std::size_t(3 * 2 * hd));
      for (int i = 0; i < 3; ++i) {
        const Ref full = la_ref(seqs[slots[i]]);
        const int64_t t = hist[slots[i]] + step;
        std::copy_n(full.begin() + t * 2 * hd, 2 * hd, ref.begin() + i * 2 * hd);
      }
      expect_close(y, ref);
    }
    for (int s : {1, 3}) {  // untouched slots still hold the sentinel
      CHECK(all_sentinel(S.data() + s * st, st));
      CHECK(all_sentinel(z.data() + s * zt, zt));
    }
    for (int s : {0, 2, 4})
      expect_state(seqs[s], hist[s] + 2, S.data() + s * st, z.data() + s * zt);
  }
}

// ---------------------------------------------------------------- sliding window
struct Swa {
  int H, hd, rd, W;
  int64_t L;
  Mat qkv;
  std::vector<double> krot;  // [L][H][hd] keys rotated at their positions (reference)
  Swa(int H_, int hd_, int rd_, int W_, int64_t L_, unsigned seed)
      : H(H_), hd(hd_), rd(rd_), W(W_), L(L_), qkv(randn(L_, 3 * H_ * hd_, 5, seed)) {
    for (int64_t t = 0; t < L; ++t)
      for (int h = 0; h < H; ++h) {
        const std::vector<double> k = rope(qkv.row(t) + width() + h * hd, t);
        krot.insert(krot.end(), k.begin(), k.end());
      }
  }
  int64_t width() const { return int64_t(H) * hd; }
  // SPEC 2.2: rotate-half over the first rd dims, theta_i = 10000^(-2i/rd), angle pos*theta_i.
  std::vector<double> rope(const float* x, int64_t pos) const {
    std::vector<double> o(x, x + hd);
    for (int i = 0; i < rd / 2; ++i) {
      const double a = pos * std::pow(10000.0, -2.0 * i / rd), c = std::cos(a), s = std::sin(a);
      o[i] = x[i] * c - x[i + rd / 2] * s;
      o[i + rd / 2] = x[i + rd / 2] * c + x[i] * s;
    }
    return o;
  }
  ops::SlidingWindowShape shape(int R) const {
    ops::SlidingWindowShape s;
    s.heads = H; s.head_dim = hd; s.window = W; s.rotary_dim = rd; s.rope_base = 10000.f;
    s.scale = float(1.0 / std::sqrt(double(hd))); s.ring_size = R;
    return s;
  }
};

// o_t = sum_{j=max(0,t-W)}^{t} softmax_j(q_t . k_j / sqrt(hd)) v_j, everything in double.
Ref swa_ref(const Swa& a) {
  Ref o(std::size_t(a.L * a.width()), 0.0);
  for (int64_t t = 0; t < a.L; ++t)
    for (int h = 0; h < a.H; ++h) {
      const std::vector<double> q = a.rope(a.qkv.row(t) + h * a.hd, t);
      std::vector<double> s;
      for (int64_t j = std::max<int64_t>(0, t - a.W); j <= t; ++j) {
        double d = 0;
        for (int e = 0; e < a.hd; ++e) d += q[e] * a.krot[(j * a.H + h) * a.hd + e];
        s.push_back(d / std::sqrt(double(a.hd)));
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t j = std::max<int64_t>(0, t - a.W), n = 0; j <= t; ++j, ++n)
        for (int e = 0; e < a.hd; ++e)
          o[t * a.width() + h * a.hd + e] +=
              s[n] / sum * a.qkv.row(j)[2 * a.width() + h * a.hd + e];
    }
  return o;
}

void swa_prefill(const Swa& a, Mat& out, int64_t t0, int64_t n, int R, float* rk, float* rv) {
  ops::SwaPrefillParams p;
  p.shape = a.shape(R); p.qkv = a.qkv.row(t0); p.ld_qkv = a.qkv.ld; p.out = out.row(t0);
  p.ld_out = out.ld; p.n_tokens = n; p.start_pos = t0; p.ring_k = rk; p.ring_v = rv;
  be().swa_prefill(p);
}

// The ring (one slot) holds rope(k_p), v_p of the last min(R, L) positions in row p % R.
void expect_ring(const Swa& a, int64_t L, int R, const float* rk, const float* rv) {
  const int64_t p0 = std::max<int64_t>(0, L - R), w = a.width();
  Mat k(L - p0, w, 0, 0.f), v(L - p0, w, 0, 0.f);
  Ref kref, vref;
  for (int64_t p = p0; p < L; ++p) {
    std::copy_n(rk + (p % R) * w, w, k.row(p - p0));
    std::copy_n(rv + (p % R) * w, w, v.row(p - p0));
    kref.insert(kref.end(), a.krot.begin() + p * w, a.krot.begin() + (p + 1) * w);
    vref.insert(vref.end(), a.qkv.row(p) + 2 * w, a.qkv.row(p) + 3 * w);
  }
  expect_close(k, kref, 1e-5);
  expect_close(v, vref, 0.0);
}

TEST_CASE("swa_prefill: window + RoPE at absolute positions; two calls equal one; then decode") {
  for (int hd : {64, 112})
    for (int W : {64, 128})
      for (int64_t L : kLengths) {
        const Swa a(2, hd, hd == 64 && W == 64 ? 32 : hd, W, L, unsigned(L * 3 + hd + W));
        const Ref ref = swa_ref(a);
        const int64_t w = a.width();
        for (int R : {W + 1, W + 8}) {  // one shot, fresh sequence (NaN ring: never read)
          CAPTURE(hd); CAPTURE(W); CAPTURE(L); CAPTURE(R);
          std::vector<float> rk(R * w, kNaN), rv(R * w, kNaN);
          Mat o = output(L, w, 3);
          swa_prefill(a, o, 0, L, R, rk.data(), rv.data());
          expect_close(o, ref);
          expect_ring(a, L, R, rk.data(), rv.data());
        }
        const int R = W + 1;  // ring of exactly window + 1 rows
        for (int64_t split : {int64_t(0), int64_t(1), L / 2, L - 1}) {
          CAPTURE(hd); CAPTURE(W); CAPTURE(L); CAPTURE(split);
          std::vector<float> rk(R * w, kNaN), rv(R * w, kNaN);
          Mat o = output(L, w, 3), od = output(L, w, 3);
          swa_prefill(a, o, 0, split, R, rk.data(), rv.data());
          std::vector<float> rk2 = rk, rv2 = rv;
          swa_prefill(a, o, split, L - split, R, rk.data(), rv.data());
          expect_close(o, ref);
          expect_ring(a, L, R, rk.data(), rv.data());
          for (int64_t t = 0; t < split; ++t) std::copy_n(o.row(t), o.ld, od.row(t));
          for (int64_t t = split; t < L; ++t) {  // prefill-then-decode == one longer prefill
            ops::SwaDecodeParams p;
            const int32_t slot = 0, pos = int32_t(t);
            p.shape = a.shape(R); p.qkv = a.qkv.row(t); p.ld_qkv = a.qkv.ld; p.out = od.row(t);
            p.ld_out = od.ld; p.n_tokens = 1; p.slots = &slot; p.positions = &pos;
            p.ring_k = rk2.data(); p.ring_v = rv2.data();
            be().swa_decode(p);
          }
          expect_close(od, ref);
          expect_ring(a, L, R, rk2.data(), rv2.data());
        }
      }
}

TEST_CASE("swa_decode: several slots in arbitrary order write only their slots' rows p % R") {
  const int hd = 112, W = 64, R = W + 3, NS = 4;
  const std::vector<int64_t> hist = {70, 0, 2, 200};
  std::vector<Swa> seqs;
  for (int s = 0; s < NS; ++s) seqs.emplace_back(2, hd, hd, W, hist[s] + 1, unsigned(90 + s));
  const int64_t w = seqs[0].width(), ring = R * w;
  std::vector<float> rk(NS * ring, kNaN), rv(NS * ring, kNaN);
  for (int s = 0; s < NS; ++s) {
    Mat o = output(hist[s], w, 0);
    swa_prefill(seqs[s], o, 0, hist[s], R, rk.data() + s * ring, rv.data() + s * ring);
  }
  const std::vector<float> rk0 = rk, rv0 = rv;
  const std::vector<int32_t> slots = {3, 0, 2}, pos = {200, 70, 2};
  Mat qkv(3, 3 * w, 7, kNaN), o = output(3, w, 1);
  Ref ref;
  for (int i = 0; i < 3; ++i) {
    std::copy_n(seqs[slots[i]].qkv.row(pos[i]), 3 * w, qkv.row(i));
    const Ref full = swa_ref(seqs[slots[i]]);
    ref.insert(ref.end(), full.begin() + pos[i] * w, full.begin() + (pos[i] + 1) * w);
  }
  ops::SwaDecodeParams p;
  p.shape = seqs[0].shape(R); p.qkv = qkv.d.data(); p.ld_qkv = qkv.ld; p.out = o.d.data();
  p.ld_out = o.ld; p.n_tokens = 3; p.slots = slots.data(); p.positions = pos.data();
  p.ring_k = rk.data(); p.ring_v = rv.data();
  be().swa_decode(p);
  expect_close(o, ref);
  for (int s = 0; s < NS; ++s)
    for (int64_t r = 0; r < R; ++r) {
      const auto it = std::find(slots.begin(), slots.end(), s);
      const bool written = it != slots.end() && pos[it - slots.begin()] % R == r;
      const int64_t off = s * ring + r * w;
      CHECK((std::memcmp(rk.data() + off, rk0.data() + off, w * 4) != 0) == written);
      CHECK((std::memcmp(rv.data() + off, rv0.data() + off, w * 4) != 0) == written);
    }
  for (int i = 0; i < 3; ++i)
    expect_ring(seqs[slots[i]], pos[i] + 1, R, rk.data() + slots[i] * ring,
                rv.data() + slots[i] * ring);
}

}  // namespace
