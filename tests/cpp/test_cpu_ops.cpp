// test_cpu_ops.cpp: the CPU backend's ops against naive double-precision references
// written here independently, straight from SPEC.md's formulas (LA through the explicit
// quadratic sum of kappa(q, k) = 1 + s + s^2/2, SWA through a full per-query window
// loop, conv through the zero-padded cross-correlation), plus state continuation:
// split prefills, prefill-then-decode and multi-slot decode.
//
// Input pads (ld > width) hold NaN, so reading one poisons a result; output pads and
// state that must not be touched hold a sentinel (or NaN) that is checked afterwards.

#include "cpu_op_test_util.h"

using namespace based_core;

namespace {

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
  // strided rows: only the first `vocab` columns of each ld-wide row count
  ap.vocab = 600; ap.ld = 1000; ap.rows = 2;
  l.row(0)[700] = 1000.f;  // past vocab: ignored
  l.row(0)[599] = 500.f;
  be().argmax(ap);
  CHECK(out[0] == 599);
  CHECK(out[1] == 10);
  // sample on strided rows draws what it draws on the compacted rows
  Mat c(2, 600, 0, 0.f);
  for (int r = 0; r < 2; ++r) std::copy_n(l.row(r), 600, c.row(r));
  std::vector<int32_t> seqs = {0, 1}, steps = {5, 6}, o1(2), o2(2);
  ops::SampleParams sp2;
  sp2.rows = 2; sp2.vocab = 600; sp2.temperature = 50.f; sp2.seed = 3;
  sp2.seqs = seqs.data(); sp2.steps = steps.data();
  sp2.logits = l.d.data(); sp2.ld = 1000; sp2.out = o1.data();
  be().sample(sp2);
  sp2.logits = c.d.data(); sp2.ld = 0; sp2.out = o2.data();
  be().sample(sp2);
  CHECK(o1 == o2);
  CHECK((o1[0] >= 0 && o1[0] < 600 && o1[1] >= 0 && o1[1] < 600));
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
  l.n_tokens = 0;
  l.n_seqs = -1;  // a negative batch
  CHECK_THROWS_AS(be().la_prefill(l), InvalidArgument);
  l.n_seqs = 2, l.seq_stride_y = -8;  // sequences must not run backwards
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
