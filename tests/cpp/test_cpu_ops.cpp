// test_cpu_ops.cpp: the CPU backend's ops against naive double-precision references
// written here independently, straight from SPEC.md's formulas (LA through the explicit
// quadratic sum of kappa(q, k) = 1 + s + s^2/2, SWA through a full per-query window
// loop, conv through the zero-padded cross-correlation), plus state continuation:
// split prefills, prefill-then-decode and multi-slot decode.
//
// Input pads (ld > width) hold NaN, so reading one poisons a result; output pads and
// state that must not be touched hold a sentinel (or NaN) that is checked afterwards.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "based_core/backends.h"
#include "based_core/error.h"

using namespace based_core;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kSentinel = 12345.f;
const int64_t kLengths[] = {1, 2, 3, 63, 64, 65, 300};

Backend& be() {
  static std::shared_ptr<Backend> b = make_cpu_backend();
  return *b;
}

// Row-major [rows, width] fp32 with row stride ld = width + pad.
struct Mat {
  int64_t rows, width, ld;
  std::vector<float> d;
  Mat(int64_t r, int64_t w, int64_t pad, float fill)
      : rows(r), width(w), ld(w + pad), d(std::size_t(r * (w + pad)), fill) {}
  float* row(int64_t i) { return d.data() + i * ld; }
  const float* row(int64_t i) const { return d.data() + i * ld; }
};

// N(0, scale) entries, NaN pads.
Mat randn(int64_t rows, int64_t width, int64_t pad, unsigned seed, float scale = 1.f) {
  Mat m(rows, width, pad, kNaN);
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < width; ++j) m.row(i)[j] = nd(g);
  return m;
}

Mat output(int64_t rows, int64_t width, int64_t pad) { return Mat(rows, width, pad, kSentinel); }

bool all_sentinel(const float* p, int64_t n) {
  return std::all_of(p, p + n, [](float x) { return x == kSentinel; });
}

using Ref = std::vector<double>;  // dense [rows][width]

// got[i, j] vs ref: |err| <= rtol * (|ref| + mean |ref|) everywhere; pads untouched.
void expect_close(const Mat& got, const Ref& ref, double rtol = 1e-4) {
  REQUIRE(int64_t(ref.size()) == got.rows * got.width);
  double mean = 0, worst = 0;
  for (double r : ref) mean += std::fabs(r) / double(ref.size());
  int64_t bad = 0, bad_pad = 0;
  for (int64_t i = 0; i < got.rows; ++i) {
    for (int64_t j = 0; j < got.width; ++j) {
      const double r = ref[i * got.width + j];
      const double rel = std::fabs(got.row(i)[j] - r) / (std::fabs(r) + mean + 1e-30);
      bad += !(rel <= rtol);  // NaN counts as bad
      worst = rel <= worst ? worst : rel;
    }
    for (int64_t j = got.width; j < got.ld; ++j) bad_pad += got.row(i)[j] != kSentinel;
  }
  INFO("worst relative error " << worst);
  CHECK(bad == 0);
  CHECK(bad_pad == 0);
}

// ---------------------------------------------------------------- backend basics
TEST_CASE("cpu backend: device, dtypes, memory") {
  CHECK(be().device() == Device{DeviceKind::CPU, 0});
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    CHECK(be().activation_dtype(t) == DType::F32);
  void* p = be().allocate(1000);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
  std::vector<uint8_t> src(1000, 7), back(1000, 0);
  be().copy(p, src.data(), 1000, CopyKind::HostToDevice);
  be().copy(back.data(), p, 1000, CopyKind::DeviceToHost);
  CHECK(back == src);
  be().fill_zero(p, 1000);
  be().copy(back.data(), p, 1000, CopyKind::DeviceToDevice);
  CHECK(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));
  be().synchronize();
  be().deallocate(p);
  be().deallocate(be().allocate(0));
  // A size whose rounding to whole cache lines overflows (no real allocator is asked,
  // so this also holds under sanitizers that abort on huge requests).
  const std::string huge = std::to_string(SIZE_MAX - 3);  // the message states the size
  CHECK_THROWS_WITH_AS(be().allocate(SIZE_MAX - 3), doctest::Contains(huge.c_str()), OutOfMemory);
}

// ---------------------------------------------------------------- GEMM
TEST_CASE("gemm: odd m/n/k, bias, accumulate, ld larger than the width") {
  struct Shape { int64_t m, n, k; };
  unsigned seed = 100;
  for (Shape s : {Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{7, 13, 29}, Shape{67, 131, 257},
                  Shape{130, 70, 600}, Shape{1, 300, 1792}}) {
    for (int bias = 0; bias < 2; ++bias)
      for (int acc = 0; acc < 2; ++acc) {
        CAPTURE(s.m); CAPTURE(s.n); CAPTURE(s.k); CAPTURE(bias); CAPTURE(acc);
        Mat x = randn(s.m, s.k, 3, ++seed), w = randn(s.n, s.k, 0, ++seed),
            b = randn(1, s.n, 0, ++seed), y = output(s.m, s.n, 5);
        Mat y0 = randn(s.m, s.n, 0, ++seed);
        for (int64_t i = 0; i < s.m; ++i) std::copy_n(y0.row(i), s.n, y.row(i));
        Ref ref(std::size_t(s.m * s.n));
        for (int64_t i = 0; i < s.m; ++i)
          for (int64_t j = 0; j < s.n; ++j) {
            double v = acc ? y0.row(i)[j] : 0.0;
            for (int64_t kk = 0; kk < s.k; ++kk) v += double(x.row(i)[kk]) * w.row(j)[kk];
            ref[i * s.n + j] = v + (bias ? b.d[j] : 0.0);
          }
        ops::GemmParams p;
        p.x = x.d.data(); p.ldx = x.ld; p.w = w.d.data(); p.bias = bias ? b.d.data() : nullptr;
        p.y = y.d.data(); p.ldy = y.ld; p.accumulate = acc; p.m = s.m; p.n = s.n; p.k = s.k;
        be().gemm(p);
        expect_close(y, ref);
      }
  }
}

// ---------------------------------------------------------------- row-wise ops
TEST_CASE("embedding, rmsnorm (with row gather), swiglu, argmax") {
  const int64_t vocab = 50, dim = 33;
  Mat table = randn(vocab, dim, 0, 1);
  std::vector<int32_t> ids = {0, 49, 7, 7, 23};
  Mat e = output(5, dim, 0);
  ops::EmbeddingParams ep;
  ep.ids = ids.data(); ep.n_tokens = 5; ep.table = table.d.data(); ep.vocab = vocab; ep.dim = dim;
  ep.out = e.d.data();
  be().embedding(ep);
  for (int t = 0; t < 5; ++t) CHECK(std::equal(e.row(t), e.row(t) + dim, table.row(ids[t])));
  ids[2] = 50;
  CHECK_THROWS_AS(be().embedding(ep), OutOfRange);

  for (int gather = 0; gather < 2; ++gather) {
    const int64_t d = 1792;
    Mat x = randn(10, d, 0, 2, 3.f), w = randn(1, d, 0, 3), y = output(5, d, 0);
    std::vector<int32_t> rows = {7, 0, 3, 3, 9};
    Ref ref(std::size_t(5 * d));
    for (int i = 0; i < 5; ++i) {
      const float* xr = x.row(gather ? rows[i] : i);
      double ss = 0;
      for (int64_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
      for (int64_t j = 0; j < d; ++j) ref[i * d + j] = xr[j] / std::sqrt(ss / d + 1e-5) * w.d[j];
    }
    ops::RmsNormParams rp;
    rp.x = x.d.data(); rp.rows = gather ? rows.data() : nullptr; rp.weight = w.d.data();
    rp.y = y.d.data(); rp.n_rows = 5; rp.dim = d; rp.eps = 1e-5f;
    be().rmsnorm(rp);
    expect_close(y, ref, 1e-5);
  }

  const int64_t n = 37, T = 9;
  Mat u = randn(T, 2 * n, 3, 4, 3.f), y = output(T, n, 2);
  Ref ref(std::size_t(T * n));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) {
      const double g = u.row(t)[n + i];
      ref[t * n + i] = u.row(t)[i] * g / (1.0 + std::exp(-g));
    }
  ops::SwigluParams sp;
  sp.u = u.d.data(); sp.ld_u = u.ld; sp.y = y.d.data(); sp.ld_y = y.ld; sp.n = n; sp.n_tokens = T;
  be().swiglu(sp);
  expect_close(y, ref, 1e-5);

  Mat l = randn(4, 1000, 0, 5);
  l.row(1)[10] = l.row(1)[500] = 100.f;  // tie: lowest index wins
  l.row(2)[999] = 100.f;
  std::fill_n(l.row(3), 1000, -1.f);
  std::vector<int32_t> out(4, -1);
  ops::ArgmaxParams ap;
  ap.logits = l.d.data(); ap.rows = 4; ap.vocab = 1000; ap.out = out.data();
  be().argmax(ap);
  CHECK(out[0] == int32_t(std::max_element(l.row(0), l.row(0) + 1000) - l.row(0)));
  CHECK(out[1] == 10);
  CHECK(out[2] == 999);
  CHECK(out[3] == 0);
}

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

// ---------------------------------------------------------------- short conv
struct Conv {
  int64_t C, T;
  Mat u, w;
  Conv(int64_t C_, int64_t T_, unsigned seed)
      : C(C_), T(T_), u(randn(T_, 2 * C_, 3, seed, 2.f)), w(randn(C_, 3, 0, seed + 1)) {}
  double a(int64_t t, int64_t c) const { return t >= 0 ? u.row(t)[c] : 0.0; }  // a_{<0} = 0
};

// SPEC 2.3: c_t = w0 a_{t-2} + w1 a_{t-1} + w2 a_t (cross-correlation), y = SiLU(c) * g.
Ref conv_ref(const Conv& x) {
  Ref y(std::size_t(x.T * x.C));
  for (int64_t t = 0; t < x.T; ++t)
    for (int64_t c = 0; c < x.C; ++c) {
      const float* w = x.w.row(c);
      const double v = w[0] * x.a(t - 2, c) + w[1] * x.a(t - 1, c) + w[2] * x.a(t, c);
      y[t * x.C + c] = v / (1 + std::exp(-v)) * x.u.row(t)[x.C + c];
    }
  return y;
}

void conv_call(const Conv& x, Mat& y, int64_t t0, int64_t n, float* tail, const int32_t* slots) {
  if (slots) {
    ops::ConvDecodeParams p;
    p.u = x.u.row(t0); p.ld_u = x.u.ld; p.weight = x.w.d.data(); p.y = y.row(t0); p.ld_y = y.ld;
    p.channels = x.C; p.n_tokens = n; p.slots = slots; p.tail = tail;
    be().conv_decode(p);
  } else {
    ops::ConvPrefillParams p;
    p.u = x.u.row(t0); p.ld_u = x.u.ld; p.weight = x.w.d.data(); p.y = y.row(t0); p.ld_y = y.ld;
    p.channels = x.C; p.n_tokens = n; p.tail = tail;
    be().conv_prefill(p);
  }
}

void expect_tail(const Conv& x, int64_t T, const float* tail) {
  for (int64_t c = 0; c < x.C; ++c) {
    CHECK(tail[c] == float(x.a(T - 2, c)));
    CHECK(tail[x.C + c] == float(x.a(T - 1, c)));
  }
}

TEST_CASE("conv: prefill in one, two or three calls, then decode; multi-slot decode") {
  for (int64_t T : kLengths) {
    const Conv x(48, T, unsigned(T));
    const Ref ref = conv_ref(x);
    for (int64_t split : {int64_t(0), int64_t(1), int64_t(2), T / 2, T - 1}) {
      if (split > T) continue;
      CAPTURE(T); CAPTURE(split);
      std::vector<float> tail(2 * x.C, 0.f);
      Mat y = output(T, x.C, 2), yd = output(T, x.C, 2);
      const int64_t first = std::min<int64_t>(split, 1);  // split 2 runs as 1 + 1 + rest
      conv_call(x, y, 0, first, tail.data(), nullptr);
      conv_call(x, y, first, split - first, tail.data(), nullptr);
      std::vector<float> tail2 = tail;
      conv_call(x, y, split, T - split, tail.data(), nullptr);
      expect_close(y, ref, 1e-5);
      expect_tail(x, T, tail.data());
      for (int64_t t = 0; t < split; ++t) std::copy_n(y.row(t), y.ld, yd.row(t));
      const int32_t slot = 0;
      for (int64_t t = split; t < T; ++t) conv_call(x, yd, t, 1, tail2.data(), &slot);
      expect_close(yd, ref, 1e-5);
      expect_tail(x, T, tail2.data());
    }
  }
  const int64_t C = 40;
  std::vector<Conv> seqs;
  const std::vector<int64_t> hist = {5, 0, 1, 0};
  for (int s = 0; s < 4; ++s) seqs.emplace_back(C, hist[s] + 1, unsigned(30 + s));
  for (int s = 1; s < 4; ++s) seqs[s].w = seqs[0].w;  // one layer: one weight
  std::vector<float> tails(4 * 2 * C, kSentinel);
  for (int s : {0, 2, 3}) {
    Mat y = output(hist[s], C, 0);
    std::fill_n(tails.begin() + s * 2 * C, 2 * C, 0.f);
    conv_call(seqs[s], y, 0, hist[s], tails.data() + s * 2 * C, nullptr);
  }
  const std::vector<int32_t> slots = {2, 3, 0};
  Mat u(3, 2 * C, 1, kNaN), y = output(3, C, 1);
  Ref ref;
  for (int i = 0; i < 3; ++i) {
    const Conv& x = seqs[slots[i]];
    std::copy_n(x.u.row(x.T - 1), 2 * C, u.row(i));
    const Ref full = conv_ref(x);
    ref.insert(ref.end(), full.end() - C, full.end());
  }
  ops::ConvDecodeParams p;
  p.u = u.d.data(); p.ld_u = u.ld; p.weight = seqs[0].w.d.data(); p.y = y.d.data(); p.ld_y = y.ld;
  p.channels = C; p.n_tokens = 3; p.slots = slots.data(); p.tail = tails.data();
  be().conv_decode(p);
  expect_close(y, ref, 1e-5);
  for (int i = 0; i < 3; ++i)
    expect_tail(seqs[slots[i]], seqs[slots[i]].T, tails.data() + slots[i] * 2 * C);
  CHECK(all_sentinel(tails.data() + 2 * C, 2 * C));  // slot 1 untouched
}

// ---------------------------------------------------------------- validation
TEST_CASE("ops reject bad arguments with the documented exception types") {
  float buf[64] = {};
  ops::GemmParams g;
  g.x = g.w = g.y = buf; g.ldx = g.k = 4; g.ldy = g.n = 4; g.m = 2;
  be().gemm(g);
  g.m = -1;
  CHECK_THROWS_AS(be().gemm(g), InvalidArgument);
  g.m = 2; g.ldx = 3;
  CHECK_THROWS_AS(be().gemm(g), InvalidArgument);
  g.ldx = 4; g.in_dtype = DType::BF16;
  CHECK_THROWS_AS(be().gemm(g), TypeMismatch);
  g.in_dtype = DType::F32; g.out_dtype = DType::F16;
  CHECK_THROWS_AS(be().gemm(g), TypeMismatch);

  ops::SwaPrefillParams s;  // ring_size < window + 1
  s.shape.window = 128; s.shape.ring_size = 128;
  CHECK_THROWS_AS(be().swa_prefill(s), InvalidArgument);
  s.shape.ring_size = 129;
  be().swa_prefill(s);  // nothing to do: null pointers are fine
  s.n_tokens = 1;
  CHECK_THROWS_AS(be().swa_prefill(s), InvalidArgument);

  ops::LaPrefillParams l;
  l.n_tokens = 3;
  CHECK_THROWS_AS(be().la_prefill(l), InvalidArgument);

  const int32_t dup[2] = {1, 1};
  ops::ConvDecodeParams c;
  c.u = c.weight = c.y = buf; c.tail = buf; c.ld_u = 8; c.ld_y = 4; c.channels = 4;
  c.n_tokens = 2; c.slots = dup;
  CHECK_THROWS_AS(be().conv_decode(c), InvalidArgument);
  c.n_tokens = -1;
  CHECK_THROWS_AS(be().conv_decode(c), InvalidArgument);
}

}  // namespace
