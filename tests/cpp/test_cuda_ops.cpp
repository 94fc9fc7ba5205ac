// test_cuda_ops.cpp: the CUDA backend's dense ops (embedding, rmsnorm, swiglu,
// argmax, cuBLASLt GEMMs), the short conv and graph capture against naive fp64
// host implementations of SPEC.md, in float32, float16 and bfloat16. Skips
// (exit 0) when no GPU is visible. Attention ops: test_cuda_attention.cpp.

#include "cuda_op_test_util.h"

// ------------------------------------------------------------------------------------------
TEST_CASE("embedding gathers rows exactly") {
  NEED_GPU();
  std::mt19937 g(1);
  for (DType t : kDtypes)
    for (int dim : {64, 1792, 30, 33}) {
      const int vocab = 1000, n = 37;
      const auto table = rnd(g, std::size_t(vocab) * dim, 2.f, t);
      std::vector<int32_t> ids(n);
      for (auto& i : ids) i = int32_t(g() % vocab);
      Buf tb = upload(be, table, t), ib = upload_i32(be, ids), out(be, std::size_t(n) * dim * 4);
      ops::EmbeddingParams p;
      p.ids = ib.as<int32_t>(), p.n_tokens = n, p.table = tb.p, p.dtype = t, p.vocab = vocab, p.dim = dim;
      p.out = out.as<float>();
      be->embedding(p);
      std::vector<float> ref(std::size_t(n) * dim);
      for (int i = 0; i < n; ++i)
        for (int d = 0; d < dim; ++d) ref[std::size_t(i) * dim + d] = table[std::size_t(ids[i]) * dim + d];
      CHECK(close(download(be, out, ref.size(), DType::F32), ref, {0, 0}, "embedding " + dname(t)));
    }
}

TEST_CASE("rmsnorm with and without row gather") {
  NEED_GPU();
  std::mt19937 g(2);
  for (DType t : kDtypes)
    for (int dim : {64, 1024, 1792, 33, 2048, 2052, 4100})  // <= 2048 in registers, the loop above
      for (int gather : {0, 1}) {
        const int src_rows = 70, n = gather ? 5 : 64;
        const auto x = rnd(g, std::size_t(src_rows) * dim, 3.f, DType::F32);
        const auto w = rnd(g, dim, 1.5f, t);
        std::vector<int32_t> rows(n);
        for (auto& r : rows) r = int32_t(g() % src_rows);
        Buf xb = upload(be, x, DType::F32), wb = upload(be, w, t), rb = upload_i32(be, rows);
        Buf yb(be, std::size_t(n) * dim * dtype_size(t));
        ops::RmsNormParams p;
        p.x = xb.as<float>(), p.rows = gather ? rb.as<int32_t>() : nullptr, p.weight = wb.p, p.y = yb.p;
        p.dtype = t, p.n_rows = n, p.dim = dim, p.eps = 1e-5f;
        be->rmsnorm(p);
        std::vector<double> ref(std::size_t(n) * dim);
        for (int i = 0; i < n; ++i) {
          const float* xr = &x[std::size_t(gather ? rows[i] : i) * dim];
          double ss = 0;
          for (int d = 0; d < dim; ++d) ss += double(xr[d]) * xr[d];
          const double inv = 1 / std::sqrt(ss / dim + 1e-5);
          for (int d = 0; d < dim; ++d) ref[std::size_t(i) * dim + d] = xr[d] * inv * w[d];
        }
        CHECK(close(download(be, yb, ref.size(), t), ref, tol_for(t),
                    "rmsnorm " + dname(t) + " dim " + std::to_string(dim)));
      }
}

TEST_CASE("swiglu: value first, gate second") {
  NEED_GPU();
  std::mt19937 g(3);
  for (DType t : kDtypes)
    for (int n : {2048, 100, 33})
      for (int T : {1, 7})
        for (int pad : {0, 8}) {
          const int ld_u = 2 * n + pad, ld_y = n + pad;
          const auto u = rnd(g, std::size_t(T) * ld_u, 4.f, t);
          Buf ub = upload(be, u, t), yb(be, std::size_t(T) * ld_y * dtype_size(t));
          ops::SwigluParams p;
          p.u = ub.p, p.ld_u = ld_u, p.y = yb.p, p.ld_y = ld_y, p.dtype = t, p.n = n, p.n_tokens = T;
          be->swiglu(p);
          const auto got = download(be, yb, std::size_t(T) * ld_y, t);
          std::vector<float> g2;
          std::vector<double> ref;
          for (int i = 0; i < T; ++i)
            for (int c = 0; c < n; ++c) {
              const double a = u[std::size_t(i) * ld_u + c], gt = u[std::size_t(i) * ld_u + n + c];
              ref.push_back(a * gt / (1 + std::exp(-gt)));
              g2.push_back(got[std::size_t(i) * ld_y + c]);
            }
          CHECK(close(g2, ref, tol_for(t), "swiglu " + dname(t)));
        }
}

TEST_CASE("argmax: lowest index on ties; rows strided (ld > vocab, as generate's padded rows)") {
  NEED_GPU();
  std::mt19937 g(4);
  struct Shape {
    int vocab, ld;
  };
  // 1 and 3 rows split each row over several CTAs (argmax.cu), 64 and 200 do not; every case
  // runs twice, so a split workspace left dirty by the first call fails the second.
  for (Shape sh : {Shape{50264, 0}, Shape{1001, 0}, Shape{50257, 50264}, Shape{1001, 1003}, Shape{4099, 4102}})
    for (int rows : {1, 3, 64, 200}) {
      const int vocab = sh.vocab, ld = sh.ld ? sh.ld : sh.vocab;
      auto x = rnd(g, std::size_t(rows) * ld, 10.f, DType::F32);
      std::vector<int32_t> want(rows);
      for (int r = 0; r < rows; ++r) {
        float* row = &x[std::size_t(r) * ld];
        for (int j = vocab; j < ld; ++j) row[j] = 100.f;  // padding: never picked
        int a = int(g() % vocab), b = int(g() % vocab);
        if (r == 0) a = vocab - 1;  // the vocab % 4 tail of the vectorised kernel
        row[a] = row[b] = 11.f;  // a tie at the maximum
        want[r] = std::min(a, b);
      }
      Buf xb = upload(be, x, DType::F32), ob(be, rows * 4);
      ops::ArgmaxParams p;
      p.logits = xb.as<float>(), p.rows = rows, p.vocab = vocab, p.ld = sh.ld, p.out = ob.as<int32_t>();
      for (int call = 0; call < 2; ++call) {
        be->fill_zero(ob.p, std::size_t(rows) * 4);
        be->argmax(p);
        CHECK_MESSAGE(download_i32(be, ob, rows) == want, "vocab " << vocab << " rows " << rows << " call " << call);
      }
    }
}

TEST_CASE("argmax: NaN beats everything (first NaN wins), -0 ties +0, all -inf gives 0") {
  NEED_GPU();
  const int vocab = 50257;
  struct Case {
    std::vector<std::pair<int, float>> set;  // (index, value) over a row of -1
    float fill;
    int want;
  };
  const float nan = std::nanf(""), inf = INFINITY;
  const Case cases[] = {
      {{{40000, nan}, {7, 5.f}, {45000, nan}}, -1.f, 40000},
      {{{30000, 0.f}, {20000, -0.f}}, -1.f, 20000},
      {{{30000, -0.f}, {20001, 0.f}}, -1.f, 20001},
      {{}, -inf, 0},
      {{{50256, 3.f}, {25000, 3.f}}, -1.f, 25000},
  };
  for (const Case& c : cases)
    for (int rows : {1, 2, 100}) {
      std::vector<float> x(std::size_t(rows) * vocab, c.fill);
      for (int r = 0; r < rows; ++r)
        for (auto [i, v] : c.set) x[std::size_t(r) * vocab + i] = v;
      Buf xb = upload(be, x, DType::F32), ob(be, rows * 4);
      ops::ArgmaxParams p;
      p.logits = xb.as<float>(), p.rows = rows, p.vocab = vocab, p.out = ob.as<int32_t>();
      be->argmax(p);
      CHECK_MESSAGE(download_i32(be, ob, rows) == std::vector<int32_t>(rows, c.want),
                    "case want " << c.want << " rows " << rows);
    }
}

TEST_CASE("sample: strided rows (ld > vocab) draw what the compacted rows draw") {
  NEED_GPU();
  std::mt19937 g(9);
  const int rows = 16, vocab = 50257, ld = 50264;
  const auto x = rnd(g, std::size_t(rows) * ld, 4.f, DType::F32);
  std::vector<float> compact(std::size_t(rows) * vocab);
  for (int r = 0; r < rows; ++r) std::copy_n(&x[std::size_t(r) * ld], vocab, &compact[std::size_t(r) * vocab]);
  std::vector<int32_t> seqs(rows), steps(rows);
  for (int r = 0; r < rows; ++r) seqs[r] = r, steps[r] = 3 * r;
  Buf xb = upload(be, x, DType::F32), cb = upload(be, compact, DType::F32);
  Buf sb = upload_i32(be, seqs), tb = upload_i32(be, steps), o1(be, rows * 4), o2(be, rows * 4);
  for (int top_k : {0, 50}) {
    ops::SampleParams p;
    p.rows = rows, p.vocab = vocab, p.temperature = 0.9f, p.top_k = top_k, p.top_p = 0.95f, p.seed = 11;
    p.seqs = sb.as<int32_t>(), p.steps = tb.as<int32_t>();
    p.logits = xb.as<float>(), p.ld = ld, p.out = o1.as<int32_t>();
    be->sample(p);
    p.logits = cb.as<float>(), p.ld = 0, p.out = o2.as<int32_t>();
    be->sample(p);
    const auto a = download_i32(be, o1, rows), c = download_i32(be, o2, rows);
    CHECK(a == c);
    for (int32_t t : a) CHECK((t >= 0 && t < vocab));
  }
}

namespace {
struct GemmCase {
  int m, n, k, ldx, ldy;
  bool bias, acc;
  DType in, out;
};
struct GemmRun {
  std::vector<float> got;
  std::vector<double> ref;
  std::vector<double> mag_sum;    // |x.w| + |y0| + |b|
  std::vector<double> mag_terms;  // sum_c |x_c w_c| + |y0| + |b| (the size of what is summed)
};

/// Y = (acc ? Y0 : 0) + X W^T (+ bias) through be->gemm (path: BASED_CORE_GEMM for the call, ""
/// for the backend's choice) on fresh random operands, and its fp64 reference.
GemmRun run_gemm(Backend* be, std::mt19937& g, const GemmCase& c, const char* path) {
  const auto x = rnd(g, std::size_t(c.m) * c.ldx, 1.f, c.in);
  const auto w = rnd(g, std::size_t(c.n) * c.k, 1.f, c.in);
  const auto b = rnd(g, c.n, 1.f, c.in);
  const auto y0 = rnd(g, std::size_t(c.m) * c.ldy, 1.f, c.out);
  Buf xb = upload(be, x, c.in), wb = upload(be, w, c.in), bb = upload(be, b, c.in), yb = upload(be, y0, c.out);
  ops::GemmParams p;
  p.x = xb.p, p.ldx = c.ldx, p.w = wb.p, p.bias = c.bias ? bb.p : nullptr, p.in_dtype = c.in;
  p.y = yb.p, p.ldy = c.ldy, p.out_dtype = c.out, p.accumulate = c.acc;
  p.m = c.m, p.n = c.n, p.k = c.k;
  if (*path) setenv("BASED_CORE_GEMM", path, 1);
  be->gemm(p);
  if (*path) unsetenv("BASED_CORE_GEMM");
  GemmRun r;
  r.got = download(be, yb, std::size_t(c.m) * c.ldy, c.out);
  r.ref.assign(r.got.begin(), r.got.end());  // the padding columns must stay as they were
  r.mag_sum.assign(r.got.size(), 0.0);
  r.mag_terms.assign(r.got.size(), 0.0);
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      double v = 0, a = 0;
      for (int k = 0; k < c.k; ++k) {
        const double term = double(x[std::size_t(i) * c.ldx + k]) * w[std::size_t(j) * c.k + k];
        v += term;
        a += std::fabs(term);
      }
      const double y0v = c.acc ? y0[std::size_t(i) * c.ldy + j] : 0.0, bv = c.bias ? b[j] : 0.0;
      const std::size_t o = std::size_t(i) * c.ldy + j;
      r.ref[o] = v + y0v + bv;
      r.mag_sum[o] = std::fabs(v) + std::fabs(y0v) + std::fabs(bv);
      r.mag_terms[o] = a + std::fabs(y0v) + std::fabs(bv);
    }
  return r;
}
}  // namespace

TEST_CASE("gemm through cuBLASLt: bias, accumulate, strides, output dtypes") {
  NEED_GPU();
  std::mt19937 g(5);
  struct Shape {
    int m, n, k;
  };
  for (DType t : kDtypes)
    for (Shape s : {Shape{1, 64, 64}, Shape{3, 200, 96}, Shape{64, 256, 320}, Shape{300, 72, 128}})
      for (int bias : {0, 1})
        for (int acc : {0, 1})
          for (DType out : {t, DType::F32})
            for (int pad : {0, 8}) {
              if (out == t && t == DType::F32 && pad) continue;
              const GemmCase c{s.m, s.n, s.k, s.k + pad, s.n + pad, bias != 0, acc != 0, t, out};
              const GemmRun r = run_gemm(be, g, c, "");
              // 16-bit outputs: cuBLASLt may round the product before adding C and the bias
              const Tol tl = out == DType::F32 ? Tol{2e-5 * std::sqrt(double(s.k)), 1e-5} : Tol{1e-3, tol_for(out).rtol / 2};
              CHECK(close(r.got, r.ref, tl,
                          "gemm " + dname(t) + "->" + dname(out) + " m" + std::to_string(s.m) + " n" +
                              std::to_string(s.n) + " k" + std::to_string(s.k) + " bias" +
                              std::to_string(bias) + " acc" + std::to_string(acc) + " pad" +
                              std::to_string(pad),
                          &r.mag_sum));
            }
}

// Decode-sized GEMMs: the backend routes one row to the GEMV (gemv.cu, launched with PDL),
// more to cuBLASLt; BASED_CORE_GEMM=gemv|cublaslt forces either (the GEMV takes up to 8 rows).
// Every path against the fp64 reference, including odd n and k.
TEST_CASE("gemm decode paths: gemv and cuBLASLt at 1..9 rows") {
  NEED_GPU();
  std::mt19937 g(9);
  struct Shape {
    int m, n, k;
  };
  // one row: k <= 2048 and k <= 4096 hold the weight row in registers, k = 4104 takes the loop
  const Shape shapes[] = {{1, 48, 32},     {1, 4112, 1056}, {1, 1800, 3592}, {1, 72, 4104},
                          {2, 200, 96},    {5, 72, 264},    {8, 2064, 1056}, {9, 40, 160}};
  for (const char* path : {"", "gemv", "cublaslt"})
    for (DType t : {DType::BF16, DType::F16})
      for (Shape s : shapes) {
        const int bias = (s.m + s.k / 8) % 2, acc = (s.n / 8) % 2;
        const DType out = (s.n % 3) ? DType::F32 : t;
        const GemmCase c{s.m, s.n, s.k, s.k + 8, s.n + 8, bias != 0, acc != 0, t, out};
        const GemmRun r = run_gemm(be, g, c, path);
        const Tol tl = out == DType::F32 ? Tol{1e-5, 1e-5} : Tol{1e-3, tol_for(out).rtol / 2};
        CHECK(close(r.got, r.ref, tl,
                    std::string("gemm path '") + path + "' " + dname(t) + "->" + dname(out) + " m" +
                        std::to_string(s.m) + " n" + std::to_string(s.n) + " k" + std::to_string(s.k) +
                        " bias" + std::to_string(bias) + " acc" + std::to_string(acc),
                    &r.mag_terms));
      }
}

// The one-row GEMV holds short weight rows in registers (loaded before its PDL wait);
// BASED_CORE_GEMV=loop takes the loop for every k. Both sum each lane's chunks in the same
// order: the outputs must be equal exactly.
TEST_CASE("gemv: register-resident rows equal the loop exactly") {
  NEED_GPU();
  std::mt19937 g(17);
  for (DType t : {DType::BF16, DType::F16})
    for (int k : {8, 1032, 1792, 2048, 2056, 3584, 4096})
      for (int big = 0; big < 2; ++big)
      for (DType out : {t, DType::F32}) {
        // big: more rows than one wave of warps, so warps loop over rows (launch_chunks)
        if (big && k != 1792 && k != 3584) continue;
        const int n = (big ? 12000 : 264) + k / 8;
        const GemmCase c{1, n, k, k, n, k % 3 == 0, out == DType::F32, t, out};
        std::vector<float> got[2];
        for (int loop = 0; loop < 2; ++loop) {
          std::mt19937 g2 = g;  // the same operands for both paths
          if (loop) setenv("BASED_CORE_GEMV", "loop", 1);
          got[loop] = run_gemm(be, g2, c, "gemv").got;
          unsetenv("BASED_CORE_GEMV");
        }
        g.discard(1);
        CHECK(close(got[0], got[1], Tol{0, 0},
                    "gemv " + dname(t) + "->" + dname(out) + " n" + std::to_string(n) + " k" + std::to_string(k) +
                        ": registers vs loop"));
      }
}

// Backend::rmsnorm_gemm / swiglu_gemm: one row fuses the op into the GEMV (gemv.cu), which
// computes it with the separate kernel's arithmetic, so both outputs must equal those of the
// two separate ops exactly; BASED_CORE_FUSE=0 runs the separate ops for comparison.
TEST_CASE("rmsnorm_gemm and swiglu_gemm equal the separate ops exactly") {
  NEED_GPU();
  std::mt19937 g(21);
  struct Shape {
    int n, k;
    bool bias, acc, f32_out, gather;
  };
  const Shape shapes[] = {{7168, 1792, false, false, false, false}, {1792, 3584, false, true, true, false},
                          {50264, 1792, false, false, true, true},  {40, 1024, true, false, false, true},
                          {8, 64, false, true, true, false},        {4104, 2048, true, true, true, false}};
  for (DType t : {DType::BF16, DType::F16})
    for (const Shape& s : shapes)
      for (int op = 0; op < 2; ++op) {  // 0: rmsnorm, 1: swiglu
        const DType out = s.f32_out ? DType::F32 : t;
        const auto resid = rnd(g, std::size_t(4) * s.k, 3.f, DType::F32);
        const auto nw = rnd(g, s.k, 1.5f, t);
        const auto u = rnd(g, std::size_t(2) * s.k, 3.f, t);
        const auto w = rnd(g, std::size_t(s.n) * s.k, 1.f, t);
        const auto b = rnd(g, s.n, 1.f, t);
        const auto y0 = rnd(g, s.n, 1.f, out);
        Buf rb = upload(be, resid, DType::F32), nwb = upload(be, nw, t), ub = upload(be, u, t),
            wb = upload(be, w, t), bb = upload(be, b, t), row = upload_i32(be, {2});
        std::vector<float> xs[2], ys[2];
        for (int fused = 0; fused < 2; ++fused) {
          Buf xb(be, std::size_t(s.k) * dtype_size(t)), yb = upload(be, y0, out);
          ops::RmsNormParams np;
          np.x = rb.as<float>(), np.rows = s.gather ? row.as<int32_t>() : nullptr, np.weight = nwb.p;
          np.y = xb.p, np.dtype = t, np.n_rows = 1, np.dim = s.k, np.eps = 1e-5f;
          ops::SwigluParams sp;
          sp.u = ub.p, sp.ld_u = 2 * s.k, sp.y = xb.p, sp.ld_y = s.k, sp.dtype = t, sp.n = s.k, sp.n_tokens = 1;
          ops::GemmParams gp;
          gp.x = xb.p, gp.ldx = s.k, gp.w = wb.p, gp.bias = s.bias ? bb.p : nullptr, gp.in_dtype = t;
          gp.y = yb.p, gp.ldy = s.n, gp.out_dtype = out, gp.accumulate = s.acc, gp.m = 1, gp.n = s.n, gp.k = s.k;
          if (!fused) setenv("BASED_CORE_FUSE", "0", 1);
          if (op == 0) be->rmsnorm_gemm(np, gp);
          else be->swiglu_gemm(sp, gp);
          unsetenv("BASED_CORE_FUSE");
          xs[fused] = download(be, xb, s.k, t);
          ys[fused] = download(be, yb, s.n, out);
        }
        const std::string what = std::string(op ? "swiglu" : "rmsnorm") + "_gemm " + dname(t) + "->" +
                                  dname(out) + " n" + std::to_string(s.n) + " k" + std::to_string(s.k);
        CHECK(close(xs[1], xs[0], Tol{0, 0}, what + ": the op's output"));
        CHECK(close(ys[1], ys[0], Tol{0, 0}, what + ": the gemm's output"));
      }
}

// ------------------------------------------------------------------------------------------
// BaseConv gated short convolution (SPEC 2.3).
namespace {
/// y for rows of u ([n][2C]) continuing from tail ([2][C]); updates tail.
std::vector<double> conv_ref(const std::vector<float>& u, int n, int C, const std::vector<float>& w,
                             std::vector<float>& tail) {
  std::vector<double> y(std::size_t(n) * C);
  for (int c = 0; c < C; ++c) {
    float am2 = tail[c], am1 = tail[C + c];
    for (int t = 0; t < n; ++t) {
      const float a = u[std::size_t(t) * 2 * C + c];
      const double g = u[std::size_t(t) * 2 * C + C + c];
      const double cv = double(w[c * 3]) * am2 + double(w[c * 3 + 1]) * am1 + double(w[c * 3 + 2]) * a;
      y[std::size_t(t) * C + c] = cv / (1 + std::exp(-cv)) * g;
      am2 = am1, am1 = a;
    }
    tail[c] = am2, tail[C + c] = am1;
  }
  return y;
}

std::vector<float> run_conv_prefill(Backend* be, const std::vector<float>& u, int n, int C, const Buf& w,
                                    DType t, float* tail) {
  Buf ub = upload(be, u, t), yb(be, std::size_t(n) * C * dtype_size(t));
  ops::ConvPrefillParams p;
  p.u = ub.p, p.ld_u = 2 * C, p.weight = w.p, p.y = yb.p, p.ld_y = C, p.dtype = t, p.channels = C;
  p.n_tokens = n, p.tail = tail;
  be->conv_prefill(p);
  return download(be, yb, std::size_t(n) * C, t);
}

std::vector<float> run_conv_decode(Backend* be, const std::vector<float>& u, const std::vector<int32_t>& slots,
                                   int C, const Buf& w, DType t, float* tail) {
  const int B = int(slots.size());
  Buf ub = upload(be, u, t), yb(be, std::size_t(B) * C * dtype_size(t)), sb = upload_i32(be, slots);
  ops::ConvDecodeParams p;
  p.u = ub.p, p.ld_u = 2 * C, p.weight = w.p, p.y = yb.p, p.ld_y = C, p.dtype = t, p.channels = C;
  p.n_tokens = B, p.slots = sb.as<int32_t>(), p.tail = tail;
  be->conv_decode(p);
  return download(be, yb, std::size_t(B) * C, t);
}
}  // namespace

TEST_CASE("conv_prefill and conv_decode: 3-tap conv, SiLU, gate, tail") {
  NEED_GPU();
  std::mt19937 g(12);
  for (DType t : kDtypes)
    for (int C : {96, 2050}) {
      const auto w = rnd(g, std::size_t(C) * 3, 1.f, t);
      Buf wb = upload(be, w, t);
      for (int T : kLengths)
        for (int fresh : {0, 1}) {
          const std::string ctx = "conv_prefill " + dname(t) + " C" + std::to_string(C) + " T" + std::to_string(T);
          auto tail = fresh ? std::vector<float>(2 * C, 0.f) : rnd(g, 2 * C, 2.f, t);
          const auto u = rnd(g, std::size_t(T) * 2 * C, 2.f, t);
          Buf tb = upload(be, tail, DType::F32);
          const auto got = run_conv_prefill(be, u, T, C, wb, t, tb.as<float>());
          const auto ref = conv_ref(u, T, C, w, tail);
          CHECK(close(got, ref, tol_for(t), ctx + " y"));
          CHECK(close(download(be, tb, 2 * C, DType::F32), tail, {0, 0}, ctx + " tail"));
        }
      for (int B : {1, 64}) {
        const std::string ctx = "conv_decode " + dname(t) + " C" + std::to_string(C) + " B" + std::to_string(B);
        std::vector<int32_t> perm(B + 2);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), g);
        const std::vector<int32_t> slots(perm.begin(), perm.begin() + B);
        auto tails = rnd(g, std::size_t(B + 2) * 2 * C, 2.f, t);
        const auto u = rnd(g, std::size_t(B) * 2 * C, 2.f, t);
        Buf tb = upload(be, tails, DType::F32);
        const auto got = run_conv_decode(be, u, slots, C, wb, t, tb.as<float>());
        std::vector<double> ref;
        for (int i = 0; i < B; ++i) {
          std::vector<float> tl(tails.begin() + std::size_t(slots[i]) * 2 * C, tails.begin() + std::size_t(slots[i] + 1) * 2 * C);
          const std::vector<float> ui(u.begin() + std::size_t(i) * 2 * C, u.begin() + std::size_t(i + 1) * 2 * C);
          const auto y = conv_ref(ui, 1, C, w, tl);
          ref.insert(ref.end(), y.begin(), y.end());
          std::copy(tl.begin(), tl.end(), tails.begin() + std::size_t(slots[i]) * 2 * C);
        }
        CHECK(close(got, ref, tol_for(t), ctx + " y"));
        CHECK(close(download(be, tb, tails.size(), DType::F32), tails, {0, 0}, ctx + " tails"));
      }
      // consistency: split prefill and prefill + decode against one prefill of 300 tokens
      const int T = 300, T1 = 137, Td = 3;
      const auto u = rnd(g, std::size_t(T) * 2 * C, 2.f, t);
      auto rows = [&](int a, int b) {
        return std::vector<float>(u.begin() + std::size_t(a) * 2 * C, u.begin() + std::size_t(b) * 2 * C);
      };
      Buf t1(be, 2 * C * 4), t2(be, 2 * C * 4), t3(be, 2 * C * 4);
      for (Buf* b : {&t1, &t2, &t3}) be->fill_zero(b->p, 2 * C * 4);
      const auto y1 = run_conv_prefill(be, u, T, C, wb, t, t1.as<float>());
      auto y2 = run_conv_prefill(be, rows(0, T1), T1, C, wb, t, t2.as<float>());
      const auto y2b = run_conv_prefill(be, rows(T1, T), T - T1, C, wb, t, t2.as<float>());
      y2.insert(y2.end(), y2b.begin(), y2b.end());
      CHECK(close(y2, y1, {0, 0}, "conv split " + dname(t)));
      run_conv_prefill(be, rows(0, T - Td), T - Td, C, wb, t, t3.as<float>());
      for (int i = T - Td; i < T; ++i) {
        const std::vector<float> want(y1.begin() + std::size_t(i) * C, y1.begin() + std::size_t(i + 1) * C);
        CHECK(close(run_conv_decode(be, rows(i, i + 1), {0}, C, wb, t, t3.as<float>()), want, {0, 0},
                    "conv decode-after-prefill " + dname(t)));
      }
      const auto tl1 = download(be, t1, 2 * C, DType::F32);
      CHECK(close(download(be, t2, 2 * C, DType::F32), tl1, {0, 0}, "conv split tail " + dname(t)));
      CHECK(close(download(be, t3, 2 * C, DType::F32), tl1, {0, 0}, "conv decode tail " + dname(t)));
    }
}

// ------------------------------------------------------------------------------------------
TEST_CASE("graph capture records a decode step that replays like direct calls") {
  NEED_GPU();
  std::mt19937 g(14);
  const int H = 2, hd = 64, B = 4;
  const DType t = DType::BF16;
  const std::size_t nS = std::size_t(B) * H * kD * hd, nz = std::size_t(B) * H * kD, ny = std::size_t(B) * H * hd;
  const LaSeq now = la_seq(g, H, hd, B, t);
  Buf q = upload(be, now.q, t), k = upload(be, now.k, t), v = upload(be, now.v, t);
  Buf sl = upload_i32(be, {3, 0, 2, 1});
  Buf S1(be, nS * 4), z1(be, nz * 4), S2(be, nS * 4), z2(be, nz * 4), y1(be, ny * 2), y2(be, ny * 2);
  for (Buf* b : {&S1, &S2}) be->fill_zero(b->p, nS * 4);
  for (Buf* b : {&z1, &z2}) be->fill_zero(b->p, nz * 4);
  auto step = [&](const Buf& y, const Buf& S, const Buf& z) {
    ops::LaDecodeParams p;
    p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd;
    p.q = q.p, p.k = k.p, p.v = v.p, p.y = y.p, p.ld_q = p.ld_k = H * kF, p.ld_v = p.ld_y = H * hd;
    p.dtype = t, p.n_tokens = B, p.slots = sl.as<int32_t>(), p.state_s = S.as<float>(), p.state_z = z.as<float>();
    be->la_decode(p);
  };
  step(y1, S1, z1);
  step(y1, S1, z1);
  void* graph = be->capture_graph([&] { step(y2, S2, z2); });
  REQUIRE(graph != nullptr);
  CHECK(close(download(be, z2, nz, DType::F32), std::vector<float>(nz, 0.f), {0, 0}, "capture does not run"));
  be->replay_graph(graph);
  be->replay_graph(graph);
  be->destroy_graph(graph);
  CHECK(close(download(be, y2, ny, t), download(be, y1, ny, t), {0, 0}, "graph y"));
  CHECK(close(download(be, S2, nS, DType::F32), download(be, S1, nS, DType::F32), {0, 0}, "graph S"));
}
