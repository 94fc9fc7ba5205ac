// test_cuda_ops.cpp: every op of the CUDA backend against a naive fp64 host implementation of
// SPEC.md (LA through the explicit quadratic sum with kappa = 1 + s + s^2/2, s = q.k/4), for
// float32, float16 and bfloat16, plus consistency checks (prefill split in two == one prefill,
// prefill then decode == longer prefill). Skips (exit 0) when no GPU is visible.
// Uses only the library's C entry points and the Backend interface (no CUDA headers).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "based_core/ops.h"
#include "based_core_cuda.h"
#include "half.h"

using namespace based_core;

namespace {

const DType kDtypes[] = {DType::F32, DType::F16, DType::BF16};
const int kLengths[] = {1, 2, 3, 63, 64, 65, 300};

Backend* gpu() {
  static std::unique_ptr<Backend> backend;
  static bool tried = false;
  if (!tried) {
    tried = true;
    char err[1024] = {0};
    const int n = based_core_cuda_device_count(err, sizeof err);
    if (n <= 0) {
      std::printf("test_cuda_ops: no CUDA device (%s): skipping the CUDA op tests\n",
                  n < 0 ? err : "0 devices");
      return nullptr;
    }
    Backend* b = based_core_cuda_create_backend(0, err, sizeof err);
    if (!b) FAIL("based_core_cuda_create_backend failed: " << err);
    backend.reset(b);
  }
  return backend.get();
}

#define NEED_GPU()          \
  Backend* be = gpu();      \
  if (!be) return

/// Device memory owned by the test.
struct Buf {
  Backend* be = nullptr;
  void* p = nullptr;
  Buf(Backend* b, std::size_t bytes) : be(b), p(b->allocate(bytes ? bytes : 1)) {}
  Buf(Buf&& o) noexcept : be(o.be), p(o.p) { o.p = nullptr; }
  Buf(const Buf&) = delete;
  ~Buf() {
    if (p) be->deallocate(p);
  }
  template <class T> T* as() const { return static_cast<T*>(p); }
};

float round_dt(float x, DType t) {
  if (t == DType::F16) return f16_to_float(float_to_f16(x));
  if (t == DType::BF16) return bf16_to_float(float_to_bf16(x));
  return x;
}

Buf upload(Backend* be, const std::vector<float>& v, DType t) {
  const std::size_t es = dtype_size(t);
  std::vector<uint8_t> raw(v.size() * es);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&raw[i * 4], &v[i], 4);
    } else {
      const uint16_t h = t == DType::F16 ? float_to_f16(v[i]) : float_to_bf16(v[i]);
      std::memcpy(&raw[i * 2], &h, 2);
    }
  }
  Buf b(be, raw.size());
  be->copy(b.p, raw.data(), raw.size(), CopyKind::HostToDevice);
  return b;
}

std::vector<float> download(Backend* be, const Buf& b, std::size_t n, DType t) {
  const std::size_t es = dtype_size(t);
  std::vector<uint8_t> raw(n * es);
  be->copy(raw.data(), b.p, raw.size(), CopyKind::DeviceToHost);
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[i], &raw[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &raw[i * 2], 2);
      out[i] = t == DType::F16 ? f16_to_float(h) : bf16_to_float(h);
    }
  }
  return out;
}

Buf upload_i32(Backend* be, const std::vector<int32_t>& v) {
  Buf b(be, v.size() * 4);
  be->copy(b.p, v.data(), v.size() * 4, CopyKind::HostToDevice);
  return b;
}

std::vector<int32_t> download_i32(Backend* be, const Buf& b, std::size_t n) {
  std::vector<int32_t> out(n);
  be->copy(out.data(), b.p, n * 4, CopyKind::DeviceToHost);
  return out;
}

/// n values uniform in [-a, a], rounded to t (so the host sees exactly what the GPU sees).
std::vector<float> rnd(std::mt19937& g, std::size_t n, float a, DType t) {
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (auto& x : v) x = round_dt(u(g), t);
  return v;
}

struct Tol {
  double atol, rtol;
};

/// Output tolerance for values of magnitude ~1 stored in t (fp32 compute inside).
Tol tol_for(DType t) {
  if (t == DType::F16) return {2e-3, 2e-3};
  if (t == DType::BF16) return {1.6e-2, 1.6e-2};
  return {1e-4, 1e-4};
}

/// Tolerance for two GPU results that may differ by fp32 reordering plus one output rounding.
Tol tol_same(DType t) {
  if (t == DType::F16) return {1e-3, 1e-3};
  if (t == DType::BF16) return {8e-3, 8e-3};
  return {2e-5, 2e-5};
}

/// |got - ref| <= atol + rtol |mag| everywhere (mag = ref unless given: the size of the terms
/// summed, where cancellation is expected); prints the worst element when not.
template <class R>
bool close(const std::vector<float>& got, const std::vector<R>& ref, Tol tol, const std::string& what,
           const std::vector<double>* mag = nullptr) {
  if (got.size() != ref.size()) {
    MESSAGE(what << ": size " << got.size() << " != " << ref.size());
    return false;
  }
  double worst = 0;
  std::size_t wi = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(ref[i]));
    const double lim = tol.atol + tol.rtol * std::fabs(mag ? (*mag)[i] : double(ref[i]));
    double r = e == 0 ? 0 : (lim > 0 ? e / lim : INFINITY);
    if (std::isnan(e)) r = INFINITY;
    if (r > worst) worst = r, wi = i;
  }
  if (worst > 1)
    MESSAGE(what << ": worst at " << wi << " got " << got[wi] << " want " << double(ref[wi])
                 << " (" << worst << "x the tolerance)");
  return worst <= 1;
}

std::string dname(DType t) { return dtype_name(t); }

// ------------------------------------------------------------------------------------------
// Linear attention reference (SPEC 2.1), f = 16.
constexpr int kF = 16, kD = 1 + kF + kF * kF;

void phi(const float* x, double* out) {
  out[0] = 1;
  for (int i = 0; i < kF; ++i) out[1 + i] = x[i] / 2.0;
  for (int i = 0; i < kF; ++i)
    for (int j = 0; j < kF; ++j) out[1 + kF + kF * i + j] = double(x[i]) * x[j] / (4 * std::sqrt(2.0));
}

double kappa(const float* q, const float* k) {
  double s = 0;
  for (int i = 0; i < kF; ++i) s += double(q[i]) * k[i];
  s /= 4;
  return 1 + s + s * s / 2;
}

/// One sequence of n tokens (q, k: [n][H*16], v: [n][H*hd]); y for tokens >= first, and the
/// state S = sum phi(k) v^T, z = sum phi(k) over all n tokens.
struct LaSeq {
  int H, hd, n;
  std::vector<float> q, k, v;
};

void la_ref(const LaSeq& s, int first, std::vector<double>& y, std::vector<double>& S,
            std::vector<double>& z) {
  const int H = s.H, hd = s.hd;
  y.assign(std::size_t(s.n - first) * H * hd, 0);
  S.assign(std::size_t(H) * kD * hd, 0);
  z.assign(std::size_t(H) * kD, 0);
  std::vector<double> num(hd), ph(kD);
  for (int h = 0; h < H; ++h) {
    for (int t = first; t < s.n; ++t) {
      std::fill(num.begin(), num.end(), 0);
      double den = 0;
      const float* qt = &s.q[std::size_t(t) * H * kF + h * kF];
      for (int j = 0; j <= t; ++j) {
        const double kap = kappa(qt, &s.k[std::size_t(j) * H * kF + h * kF]);
        den += kap;
        const float* vj = &s.v[std::size_t(j) * H * hd + h * hd];
        for (int d = 0; d < hd; ++d) num[d] += kap * vj[d];
      }
      for (int d = 0; d < hd; ++d) y[(std::size_t(t - first) * H + h) * hd + d] = num[d] / (den + 1e-12);
    }
    for (int j = 0; j < s.n; ++j) {
      phi(&s.k[std::size_t(j) * H * kF + h * kF], ph.data());
      const float* vj = &s.v[std::size_t(j) * H * hd + h * hd];
      for (int r = 0; r < kD; ++r) {
        z[std::size_t(h) * kD + r] += ph[r];
        for (int d = 0; d < hd; ++d) S[(std::size_t(h) * kD + r) * hd + d] += ph[r] * vj[d];
      }
    }
  }
}

LaSeq la_seq(std::mt19937& g, int H, int hd, int n, DType t) {
  return LaSeq{H, hd, n, rnd(g, std::size_t(n) * H * kF, 1.f, t), rnd(g, std::size_t(n) * H * kF, 1.f, t),
               rnd(g, std::size_t(n) * H * hd, 1.f, t)};
}

LaSeq la_slice(const LaSeq& s, int a, int b) {
  auto cut = [&](const std::vector<float>& x, int w) {
    return std::vector<float>(x.begin() + std::size_t(a) * w, x.begin() + std::size_t(b) * w);
  };
  return LaSeq{s.H, s.hd, b - a, cut(s.q, s.H * kF), cut(s.k, s.H * kF), cut(s.v, s.H * s.hd)};
}

std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

ops::LaPrefillParams la_prefill_params(const LaSeq& s, DType t, const Buf& q, const Buf& k,
                                       const Buf& v, const Buf& y, float* S, float* z) {
  ops::LaPrefillParams p;
  p.shape.heads = s.H;
  p.shape.feature_dim = kF;
  p.shape.head_dim = s.hd;
  p.q = q.p, p.k = k.p, p.v = v.p, p.y = y.p;
  p.ld_q = p.ld_k = s.H * kF;
  p.ld_v = p.ld_y = s.H * s.hd;
  p.dtype = t;
  p.n_tokens = s.n;
  p.state_s = S;
  p.state_z = z;
  return p;
}

/// Runs la_prefill on `s` continuing from the state in S/z; returns y.
std::vector<float> run_la_prefill(Backend* be, const LaSeq& s, DType t, float* S, float* z) {
  Buf q = upload(be, s.q, t), k = upload(be, s.k, t), v = upload(be, s.v, t);
  Buf y(be, std::size_t(s.n) * s.H * s.hd * dtype_size(t));
  be->la_prefill(la_prefill_params(s, t, q, k, v, y, S, z));
  return download(be, y, std::size_t(s.n) * s.H * s.hd, t);
}

}  // namespace

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
    for (int dim : {64, 1024, 1792, 33})
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

TEST_CASE("argmax: lowest index on ties") {
  NEED_GPU();
  std::mt19937 g(4);
  for (int vocab : {50264, 1001})
    for (int rows : {1, 64}) {
      auto x = rnd(g, std::size_t(rows) * vocab, 10.f, DType::F32);
      std::vector<int32_t> want(rows);
      for (int r = 0; r < rows; ++r) {
        float* row = &x[std::size_t(r) * vocab];
        const int a = int(g() % vocab), b = int(g() % vocab);
        row[a] = row[b] = 11.f;  // a tie at the maximum
        want[r] = std::min(a, b);
      }
      Buf xb = upload(be, x, DType::F32), ob(be, rows * 4);
      ops::ArgmaxParams p;
      p.logits = xb.as<float>(), p.rows = rows, p.vocab = vocab, p.out = ob.as<int32_t>();
      be->argmax(p);
      CHECK(download_i32(be, ob, rows) == want);
    }
}

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
              const int ldx = s.k + pad, ldy = s.n + pad;
              const auto x = rnd(g, std::size_t(s.m) * ldx, 1.f, t);
              const auto w = rnd(g, std::size_t(s.n) * s.k, 1.f, t);
              const auto b = rnd(g, s.n, 1.f, t);
              const auto y0 = rnd(g, std::size_t(s.m) * ldy, 1.f, out);
              Buf xb = upload(be, x, t), wb = upload(be, w, t), bb = upload(be, b, t), yb = upload(be, y0, out);
              ops::GemmParams p;
              p.x = xb.p, p.ldx = ldx, p.w = wb.p, p.bias = bias ? bb.p : nullptr, p.in_dtype = t;
              p.y = yb.p, p.ldy = ldy, p.out_dtype = out, p.accumulate = acc != 0;
              p.m = s.m, p.n = s.n, p.k = s.k;
              be->gemm(p);
              const auto got = download(be, yb, std::size_t(s.m) * ldy, out);
              std::vector<double> ref(got.begin(), got.end()), mag(got.size(), 0.0);
              for (int i = 0; i < s.m; ++i)
                for (int j = 0; j < s.n; ++j) {
                  double v = 0;
                  for (int c = 0; c < s.k; ++c) v += double(x[std::size_t(i) * ldx + c]) * w[std::size_t(j) * s.k + c];
                  const double y0v = acc ? y0[std::size_t(i) * ldy + j] : 0.0, bv = bias ? b[j] : 0.0;
                  ref[std::size_t(i) * ldy + j] = v + y0v + bv;
                  // 16-bit outputs: cuBLASLt may round the product before adding C and the bias
                  mag[std::size_t(i) * ldy + j] = std::fabs(v) + std::fabs(y0v) + std::fabs(bv);
                }
              const Tol tl = out == DType::F32 ? Tol{2e-5 * std::sqrt(double(s.k)), 1e-5} : Tol{1e-3, tol_for(out).rtol / 2};
              CHECK(close(got, ref, tl,
                          "gemm " + dname(t) + "->" + dname(out) + " m" + std::to_string(s.m) + " n" +
                              std::to_string(s.n) + " k" + std::to_string(s.k) + " bias" +
                              std::to_string(bias) + " acc" + std::to_string(acc) + " pad" +
                              std::to_string(pad),
                          &mag));
            }
}


// ------------------------------------------------------------------------------------------
namespace {
LaSeq la_concat(const LaSeq& a, const LaSeq& b) {
  LaSeq c = a;
  c.n += b.n;
  c.q.insert(c.q.end(), b.q.begin(), b.q.end());
  c.k.insert(c.k.end(), b.k.begin(), b.k.end());
  c.v.insert(c.v.end(), b.v.begin(), b.v.end());
  return c;
}
const Tol kStateTol{2e-4, 1e-5};  // fp32 state sums vs fp64
}  // namespace

TEST_CASE("la_prefill matches the quadratic form and continues from the state") {
  NEED_GPU();
  std::mt19937 g(6);
  const int H = 2;
  for (DType t : kDtypes)
    for (int hd : {64, 112, 128})
      for (int T : kLengths)
        for (int hist : {0, 37}) {
          const std::string ctx = "la_prefill " + dname(t) + " hd" + std::to_string(hd) + " T" +
                                  std::to_string(T) + " hist" + std::to_string(hist);
          const LaSeq all = la_seq(g, H, hd, hist + T, t);
          std::vector<double> y, S, z, y0, S0, z0;
          la_ref(la_slice(all, 0, hist), hist, y0, S0, z0);
          la_ref(all, hist, y, S, z);
          Buf Sb = upload(be, to_f32(S0), DType::F32), zb = upload(be, to_f32(z0), DType::F32);
          const auto got = run_la_prefill(be, la_slice(all, hist, hist + T), t, Sb.as<float>(), zb.as<float>());
          CHECK(close(got, y, tol_for(t), ctx + " y"));
          CHECK(close(download(be, Sb, S.size(), DType::F32), S, kStateTol, ctx + " S"));
          CHECK(close(download(be, zb, z.size(), DType::F32), z, kStateTol, ctx + " z"));
        }
}

TEST_CASE("la_prefill: long sequences (segmented tensor-core path) continue from the state") {
  // Few heads and > 4 chunks: the bf16/fp16 kernel splits the sequence into segments whose
  // states a scan combines (starting from the incoming state); the last one writes S and z.
  NEED_GPU();
  std::mt19937 g(16);
  const int H = 2, hist = 100;
  for (DType t : {DType::BF16, DType::F16})
    for (int hd : {64, 112, 128})
      for (int T : {700, 1501}) {
        const std::string ctx = "la_prefill long " + dname(t) + " hd" + std::to_string(hd) + " T" + std::to_string(T);
        const LaSeq all = la_seq(g, H, hd, hist + T, t);
        std::vector<double> y, S, z, y0, S0, z0;
        la_ref(la_slice(all, 0, hist), hist, y0, S0, z0);
        la_ref(all, hist, y, S, z);
        Buf Sb = upload(be, to_f32(S0), DType::F32), zb = upload(be, to_f32(z0), DType::F32);
        const auto got = run_la_prefill(be, la_slice(all, hist, hist + T), t, Sb.as<float>(), zb.as<float>());
        CHECK(close(got, y, tol_for(t), ctx + " y"));
        CHECK(close(download(be, Sb, S.size(), DType::F32), S, kStateTol, ctx + " S"));
        CHECK(close(download(be, zb, z.size(), DType::F32), z, kStateTol, ctx + " z"));
      }
}

TEST_CASE("la_decode: rows on their slots, update then read out") {
  NEED_GPU();
  std::mt19937 g(7);
  const int H = 2;
  for (DType t : kDtypes)
    for (int hd : {64, 112, 128})
      for (int B : {1, 64}) {
        const std::string ctx = "la_decode " + dname(t) + " hd" + std::to_string(hd) + " B" + std::to_string(B);
        const int n_slots = B + 3;
        std::vector<int32_t> perm(n_slots);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), g);
        const std::vector<int32_t> slots(perm.begin(), perm.begin() + B);
        const std::size_t sz_s = std::size_t(H) * kD * hd, sz_z = std::size_t(H) * kD;
        std::vector<LaSeq> hist;
        std::vector<double> S0(n_slots * sz_s), z0(n_slots * sz_z), y, S, z;
        for (int s = 0; s < n_slots; ++s) {
          hist.push_back(la_seq(g, H, hd, int(g() % 41), t));
          la_ref(hist.back(), hist.back().n, y, S, z);
          std::copy(S.begin(), S.end(), S0.begin() + s * sz_s);
          std::copy(z.begin(), z.end(), z0.begin() + s * sz_z);
        }
        const LaSeq now = la_seq(g, H, hd, B, t);
        std::vector<double> yref(std::size_t(B) * H * hd), Sref = S0, zref = z0;
        for (int i = 0; i < B; ++i) {
          const LaSeq c = la_concat(hist[slots[i]], la_slice(now, i, i + 1));
          la_ref(c, c.n - 1, y, S, z);
          std::copy(y.begin(), y.end(), yref.begin() + std::size_t(i) * H * hd);
          std::copy(S.begin(), S.end(), Sref.begin() + slots[i] * sz_s);
          std::copy(z.begin(), z.end(), zref.begin() + slots[i] * sz_z);
        }
        Buf q = upload(be, now.q, t), k = upload(be, now.k, t), v = upload(be, now.v, t);
        Buf yb(be, std::size_t(B) * H * hd * dtype_size(t)), sl = upload_i32(be, slots);
        Buf Sb = upload(be, to_f32(S0), DType::F32), zb = upload(be, to_f32(z0), DType::F32);
        ops::LaDecodeParams p;
        p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd;
        p.q = q.p, p.k = k.p, p.v = v.p, p.y = yb.p, p.ld_q = p.ld_k = H * kF, p.ld_v = p.ld_y = H * hd;
        p.dtype = t, p.n_tokens = B, p.slots = sl.as<int32_t>(), p.state_s = Sb.as<float>(), p.state_z = zb.as<float>();
        be->la_decode(p);
        CHECK(close(download(be, yb, yref.size(), t), yref, tol_for(t), ctx + " y"));
        CHECK(close(download(be, Sb, Sref.size(), DType::F32), Sref, kStateTol, ctx + " S"));
        CHECK(close(download(be, zb, zref.size(), DType::F32), zref, kStateTol, ctx + " z"));
      }
}

TEST_CASE("la: prefill split in two == one prefill; prefill then decode == longer prefill") {
  NEED_GPU();
  std::mt19937 g(8);
  const int H = 2, T = 300, T1 = 137, Td = 3;
  for (DType t : kDtypes)
    for (int hd : {64, 112}) {
      const std::string ctx = "la consistency " + dname(t) + " hd" + std::to_string(hd);
      const LaSeq all = la_seq(g, H, hd, T, t);
      const std::size_t nS = std::size_t(H) * kD * hd, nz = std::size_t(H) * kD, row = std::size_t(H) * hd;
      Buf S1(be, nS * 4), z1(be, nz * 4), S2(be, nS * 4), z2(be, nz * 4), S3(be, nS * 4), z3(be, nz * 4);
      for (Buf* b : {&S1, &z1, &S2, &z2, &S3, &z3}) be->fill_zero(b->p, (b == &S1 || b == &S2 || b == &S3 ? nS : nz) * 4);
      const auto y1 = run_la_prefill(be, all, t, S1.as<float>(), z1.as<float>());
      auto y2 = run_la_prefill(be, la_slice(all, 0, T1), t, S2.as<float>(), z2.as<float>());
      const auto y2b = run_la_prefill(be, la_slice(all, T1, T), t, S2.as<float>(), z2.as<float>());
      y2.insert(y2.end(), y2b.begin(), y2b.end());
      CHECK(close(y2, y1, tol_same(t), ctx + " split y"));
      const auto S1h = download(be, S1, nS, DType::F32), z1h = download(be, z1, nz, DType::F32);
      CHECK(close(download(be, S2, nS, DType::F32), S1h, {1e-5, 1e-6}, ctx + " split S"));
      CHECK(close(download(be, z2, nz, DType::F32), z1h, {1e-5, 1e-6}, ctx + " split z"));
      // prefill T - Td tokens, then Td decode steps on slot 0
      run_la_prefill(be, la_slice(all, 0, T - Td), t, S3.as<float>(), z3.as<float>());
      const int32_t zero = 0;
      Buf sl = upload_i32(be, {zero});
      for (int i = T - Td; i < T; ++i) {
        const LaSeq one = la_slice(all, i, i + 1);
        Buf q = upload(be, one.q, t), k = upload(be, one.k, t), v = upload(be, one.v, t), yb(be, row * dtype_size(t));
        ops::LaDecodeParams p;
        p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd;
        p.q = q.p, p.k = k.p, p.v = v.p, p.y = yb.p, p.ld_q = p.ld_k = H * kF, p.ld_v = p.ld_y = H * hd;
        p.dtype = t, p.n_tokens = 1, p.slots = sl.as<int32_t>(), p.state_s = S3.as<float>(), p.state_z = z3.as<float>();
        be->la_decode(p);
        const std::vector<float> want(y1.begin() + i * row, y1.begin() + (i + 1) * row);
        CHECK(close(download(be, yb, row, t), want, tol_same(t), ctx + " decode y at " + std::to_string(i)));
      }
      CHECK(close(download(be, S3, nS, DType::F32), S1h, {1e-5, 1e-6}, ctx + " decode S"));
      CHECK(close(download(be, z3, nz, DType::F32), z1h, {1e-5, 1e-6}, ctx + " decode z"));
    }
}

// ------------------------------------------------------------------------------------------
// Sliding-window attention reference (SPEC 2.2).
namespace {
struct SwaCfg {
  int H, hd, rd, window, R;
  float base = 10000.f;
  float scale() const { return float(1.0 / std::sqrt(double(hd))); }
};

/// x rotated at pos (rotate-half over rd dims); the angle is formed in fp32 as the GPU does.
void rope(const float* x, const SwaCfg& c, int64_t pos, double* out) {
  for (int d = 0; d < c.hd; ++d) out[d] = x[d];
  const int half = c.rd / 2;
  for (int i = 0; i < half; ++i) {
    const float invf = 1.f / std::pow(c.base, float(2 * i) / float(c.rd));
    const double ang = float(pos) * invf;
    const double co = std::cos(ang), si = std::sin(ang);
    out[i] = x[i] * co - x[i + half] * si;
    out[i + half] = x[i + half] * co + x[i] * si;
  }
}

/// Keys/values by absolute position (post-RoPE, rounded to the dtype), [pos][H][hd].
struct KvHist {
  std::vector<float> k, v;
};

/// Adds the post-RoPE k and the v of qkv rows (positions start..) to the history.
void swa_push(const SwaCfg& c, const std::vector<float>& qkv, int n, int64_t start, DType t, KvHist& kv) {
  const int w = c.H * c.hd;
  kv.k.resize(std::size_t(start + n) * w), kv.v.resize(std::size_t(start + n) * w);
  std::vector<double> r(c.hd);
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < c.H; ++h) {
      rope(&qkv[std::size_t(i) * 3 * w + w + h * c.hd], c, start + i, r.data());
      for (int d = 0; d < c.hd; ++d) {
        kv.k[std::size_t(start + i) * w + h * c.hd + d] = round_dt(float(r[d]), t);
        kv.v[std::size_t(start + i) * w + h * c.hd + d] = qkv[std::size_t(i) * 3 * w + 2 * w + h * c.hd + d];
      }
    }
}

/// o for the query in qkv row i at position pos over the history positions [pos-w, pos].
void swa_query(const SwaCfg& c, const float* qkv_row, int64_t pos, const KvHist& kv, double* o) {
  const int w = c.H * c.hd;
  std::vector<double> q(c.hd), s;
  for (int h = 0; h < c.H; ++h) {
    rope(qkv_row + h * c.hd, c, pos, q.data());
    const int64_t j0 = std::max<int64_t>(0, pos - c.window);
    s.assign(std::size_t(pos - j0 + 1), 0);
    double mx = -1e300, sum = 0;
    for (int64_t j = j0; j <= pos; ++j) {
      double d = 0;
      for (int e = 0; e < c.hd; ++e) d += q[e] * kv.k[std::size_t(j) * w + h * c.hd + e];
      s[j - j0] = d * c.scale();
      mx = std::max(mx, s[j - j0]);
    }
    for (auto& x : s) sum += (x = std::exp(x - mx));
    for (int e = 0; e < c.hd; ++e) {
      double acc = 0;
      for (int64_t j = j0; j <= pos; ++j) acc += s[j - j0] * kv.v[std::size_t(j) * w + h * c.hd + e];
      o[h * c.hd + e] = acc / sum;
    }
  }
}

ops::SlidingWindowShape swa_shape(const SwaCfg& c) {
  ops::SlidingWindowShape s;
  s.heads = c.H, s.head_dim = c.hd, s.window = c.window, s.rotary_dim = c.rd, s.rope_base = c.base;
  s.scale = c.scale(), s.ring_size = c.R;
  return s;
}

std::vector<float> run_swa_prefill(Backend* be, const SwaCfg& c, const std::vector<float>& qkv, int n,
                                   int64_t start, DType t, const Buf& rk, const Buf& rv) {
  const int w = c.H * c.hd;
  Buf qb = upload(be, qkv, t), ob(be, std::size_t(n) * w * dtype_size(t));
  ops::SwaPrefillParams p;
  p.shape = swa_shape(c), p.qkv = qb.p, p.ld_qkv = 3 * w, p.out = ob.p, p.ld_out = w, p.dtype = t;
  p.n_tokens = n, p.start_pos = start, p.ring_k = rk.p, p.ring_v = rv.p;
  be->swa_prefill(p);
  return download(be, ob, std::size_t(n) * w, t);
}

std::vector<float> run_swa_decode(Backend* be, const SwaCfg& c, const std::vector<float>& qkv,
                                  const std::vector<int32_t>& slots, const std::vector<int32_t>& pos,
                                  DType t, const Buf& rk, const Buf& rv) {
  const int w = c.H * c.hd, B = int(slots.size());
  Buf qb = upload(be, qkv, t), ob(be, std::size_t(B) * w * dtype_size(t));
  Buf sb = upload_i32(be, slots), pb = upload_i32(be, pos);
  ops::SwaDecodeParams p;
  p.shape = swa_shape(c), p.qkv = qb.p, p.ld_qkv = 3 * w, p.out = ob.p, p.ld_out = w, p.dtype = t;
  p.n_tokens = B, p.slots = sb.as<int32_t>(), p.positions = pb.as<int32_t>(), p.ring_k = rk.p, p.ring_v = rv.p;
  be->swa_decode(p);
  return download(be, ob, std::size_t(B) * w, t);
}

/// Post-RoPE keys may differ from the fp64 reference by one rounding of the dtype.
Tol ring_tol(DType t) {
  if (t == DType::F16) return {1e-4, 1.1e-3};
  if (t == DType::BF16) return {1e-4, 8e-3};
  return {1e-4, 1e-5};
}
}  // namespace

TEST_CASE("swa_prefill: banded softmax with RoPE, history from the ring, ring refilled") {
  NEED_GPU();
  std::mt19937 g(9);
  struct Dims {
    int hd, rd;
  };
  for (DType t : kDtypes)
    for (Dims dm : {Dims{64, 64}, Dims{112, 112}, Dims{64, 32}})
      for (int window : {64, 128})
        for (int T : kLengths)
          for (int start : {0, 150}) {
            const SwaCfg c{2, dm.hd, dm.rd, window, window + 1 + (T % 3 == 0 ? 6 : 0)};
            const int w = c.H * c.hd;
            const std::string ctx = "swa_prefill " + dname(t) + " hd" + std::to_string(c.hd) + " rd" +
                                    std::to_string(c.rd) + " w" + std::to_string(window) + " R" +
                                    std::to_string(c.R) + " T" + std::to_string(T) + " start" + std::to_string(start);
            KvHist kv{rnd(g, std::size_t(start) * w, 1.f, t), rnd(g, std::size_t(start) * w, 1.f, t)};
            auto ring_k = rnd(g, std::size_t(c.R) * w, 1.f, t), ring_v = rnd(g, std::size_t(c.R) * w, 1.f, t);
            for (int64_t j = std::max(0, start - c.R); j < start; ++j)
              for (int e = 0; e < w; ++e) {
                ring_k[(j % c.R) * w + e] = kv.k[j * w + e];
                ring_v[(j % c.R) * w + e] = kv.v[j * w + e];
              }
            const auto qkv = rnd(g, std::size_t(T) * 3 * w, 1.f, t);
            swa_push(c, qkv, T, start, t, kv);
            std::vector<double> ref(std::size_t(T) * w);
            for (int i = 0; i < T; ++i) swa_query(c, &qkv[std::size_t(i) * 3 * w], start + i, kv, &ref[std::size_t(i) * w]);
            Buf rk = upload(be, ring_k, t), rv = upload(be, ring_v, t);
            CHECK(close(run_swa_prefill(be, c, qkv, T, start, t, rk, rv), ref, tol_for(t), ctx + " out"));
            for (int64_t j = std::max(0, start + T - c.R); j < start + T; ++j)
              for (int e = 0; e < w; ++e) {
                ring_k[(j % c.R) * w + e] = kv.k[j * w + e];
                ring_v[(j % c.R) * w + e] = kv.v[j * w + e];
              }
            CHECK(close(download(be, rk, ring_k.size(), t), ring_k, ring_tol(t), ctx + " ring k"));
            CHECK(close(download(be, rv, ring_v.size(), t), ring_v, {0, 0}, ctx + " ring v"));
          }
}

TEST_CASE("swa_decode: rows on their slots and positions") {
  NEED_GPU();
  std::mt19937 g(10);
  for (DType t : kDtypes)
    for (int hd : {64, 112})
      for (int window : {64, 128})
        for (int B : {1, 64}) {
          const SwaCfg c{2, hd, hd, window, window + 1 + (B > 1 ? 3 : 0)};
          const int w = c.H * c.hd, n_slots = B + 2;
          const std::string ctx = "swa_decode " + dname(t) + " hd" + std::to_string(hd) + " w" +
                                  std::to_string(window) + " B" + std::to_string(B);
          std::vector<int32_t> perm(n_slots), pos(B);
          std::iota(perm.begin(), perm.end(), 0);
          std::shuffle(perm.begin(), perm.end(), g);
          const std::vector<int32_t> slots(perm.begin(), perm.begin() + B);
          for (int i = 0; i < B; ++i) pos[i] = i < 4 ? (B == 1 ? 200 : i) : int32_t(g() % 400);
          auto ring_k = rnd(g, std::size_t(n_slots) * c.R * w, 1.f, t), ring_v = rnd(g, ring_k.size(), 1.f, t);
          const auto qkv = rnd(g, std::size_t(B) * 3 * w, 1.f, t);
          std::vector<double> ref(std::size_t(B) * w);
          for (int i = 0; i < B; ++i) {
            const std::size_t base = std::size_t(slots[i]) * c.R * w;
            KvHist kv;
            kv.k.assign(std::size_t(pos[i]) * w, 0.f), kv.v.assign(std::size_t(pos[i]) * w, 0.f);
            for (int64_t j = std::max(0, pos[i] - window); j < pos[i]; ++j)
              for (int e = 0; e < w; ++e) {
                kv.k[j * w + e] = ring_k[base + (j % c.R) * w + e];
                kv.v[j * w + e] = ring_v[base + (j % c.R) * w + e];
              }
            const std::vector<float> row(qkv.begin() + std::size_t(i) * 3 * w, qkv.begin() + std::size_t(i + 1) * 3 * w);
            swa_push(c, row, 1, pos[i], t, kv);
            swa_query(c, row.data(), pos[i], kv, &ref[std::size_t(i) * w]);
            for (int e = 0; e < w; ++e) {
              ring_k[base + (pos[i] % c.R) * w + e] = kv.k[std::size_t(pos[i]) * w + e];
              ring_v[base + (pos[i] % c.R) * w + e] = kv.v[std::size_t(pos[i]) * w + e];
            }
          }
          Buf rk = upload(be, ring_k, t), rv = upload(be, ring_v, t);
          CHECK(close(run_swa_decode(be, c, qkv, slots, pos, t, rk, rv), ref, tol_for(t), ctx + " out"));
          CHECK(close(download(be, rk, ring_k.size(), t), ring_k, ring_tol(t), ctx + " ring k"));
          CHECK(close(download(be, rv, ring_v.size(), t), ring_v, {0, 0}, ctx + " ring v"));
        }
}

TEST_CASE("swa: prefill split in two == one prefill; prefill then decode == longer prefill") {
  NEED_GPU();
  std::mt19937 g(11);
  const int T = 300, T1 = 137, Td = 3;
  for (DType t : kDtypes)
    for (int hd : {64, 112})
      for (int window : {64, 128}) {
        const SwaCfg c{2, hd, hd, window, window + 1};
        const int w = c.H * c.hd;
        const std::size_t nr = std::size_t(c.R) * w * dtype_size(t);
        const std::string ctx = "swa consistency " + dname(t) + " hd" + std::to_string(hd) + " w" + std::to_string(window);
        const auto qkv = rnd(g, std::size_t(T) * 3 * w, 1.f, t);
        auto rows = [&](int a, int b) {
          return std::vector<float>(qkv.begin() + std::size_t(a) * 3 * w, qkv.begin() + std::size_t(b) * 3 * w);
        };
        Buf k1(be, nr), v1(be, nr), k2(be, nr), v2(be, nr), k3(be, nr), v3(be, nr);
        for (Buf* b : {&k1, &v1, &k2, &v2, &k3, &v3}) be->fill_zero(b->p, nr);
        const auto o1 = run_swa_prefill(be, c, qkv, T, 0, t, k1, v1);
        auto o2 = run_swa_prefill(be, c, rows(0, T1), T1, 0, t, k2, v2);
        const auto o2b = run_swa_prefill(be, c, rows(T1, T), T - T1, T1, t, k2, v2);
        o2.insert(o2.end(), o2b.begin(), o2b.end());
        CHECK(close(o2, o1, tol_same(t), ctx + " split out"));
        const auto rk1 = download(be, k1, nr / dtype_size(t), t), rv1 = download(be, v1, nr / dtype_size(t), t);
        CHECK(close(download(be, k2, rk1.size(), t), rk1, {0, 0}, ctx + " split ring k"));
        CHECK(close(download(be, v2, rv1.size(), t), rv1, {0, 0}, ctx + " split ring v"));
        run_swa_prefill(be, c, rows(0, T - Td), T - Td, 0, t, k3, v3);
        for (int i = T - Td; i < T; ++i) {
          const auto o = run_swa_decode(be, c, rows(i, i + 1), {0}, {i}, t, k3, v3);
          const std::vector<float> want(o1.begin() + std::size_t(i) * w, o1.begin() + std::size_t(i + 1) * w);
          CHECK(close(o, want, tol_same(t), ctx + " decode out at " + std::to_string(i)));
        }
        CHECK(close(download(be, k3, rk1.size(), t), rk1, {0, 0}, ctx + " decode ring k"));
        CHECK(close(download(be, v3, rv1.size(), t), rv1, {0, 0}, ctx + " decode ring v"));
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

// ------------------------------------------------------------------------------------------
// Informational timings (bf16, H = 16): run with --no-skip -tc="*timings*".
TEST_CASE("cuda op timings" * doctest::skip()) {
  NEED_GPU();
  std::mt19937 g(13);
  const DType t = DType::BF16;
  const int H = 16;
  auto time_us = [&](auto&& fn, int iters) {
    for (int i = 0; i < 3; ++i) fn();
    be->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) fn();
    be->synchronize();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  for (int hd : {64, 112})
    for (int B : {1, 16, 64, 256}) {
      const std::size_t nS = std::size_t(B) * H * kD * hd;
      Buf S(be, nS * 4), z(be, std::size_t(B) * H * kD * 4);
      be->fill_zero(S.p, nS * 4), be->fill_zero(z.p, std::size_t(B) * H * kD * 4);
      Buf q = upload(be, rnd(g, std::size_t(B) * H * kF, 1.f, t), t), k = upload(be, rnd(g, std::size_t(B) * H * kF, 1.f, t), t);
      Buf v = upload(be, rnd(g, std::size_t(B) * H * hd, 1.f, t), t), y(be, std::size_t(B) * H * hd * 2);
      std::vector<int32_t> sl(B);
      std::iota(sl.begin(), sl.end(), 0);
      Buf sb = upload_i32(be, sl);
      ops::LaDecodeParams p;
      p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd;
      p.q = q.p, p.k = k.p, p.v = v.p, p.y = y.p, p.ld_q = p.ld_k = H * kF, p.ld_v = p.ld_y = H * hd;
      p.dtype = t, p.n_tokens = B, p.slots = sb.as<int32_t>(), p.state_s = S.as<float>(), p.state_z = z.as<float>();
      const double us = time_us([&] { be->la_decode(p); }, 100);
      std::printf("la_decode   hd %3d B %3d: %8.2f us  %7.1f GB/s (state read+write)\n", hd, B, us, 2.0 * nS * 4 / us / 1e3);
    }
  // la_prefill (PERFORMANCE.md M1): B sequences of H = 16 heads as one call with B*H heads
  // (heads are independent), bf16 in/out, fp32 state. Bound: max(tensor FLOPs / 790 TFLOP/s,
  // HBM bytes / 3.0 TB/s) with the 273-row state (PERFORMANCE.md 1a).
  auto fast_rnd = [](std::size_t n, uint32_t seed, DType dt) {
    std::vector<float> v(n);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& e : v) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      e = round_dt(float(int32_t(x)) * (1.f / 2147483648.f), dt);
    }
    return v;
  };
  for (int hd : {64, 112})
    for (int B : {1, 16})
      for (int L : {2048, 4096, 8192}) {
        const int Hs = B * H;
        const std::size_t nqk = std::size_t(L) * Hs * kF, nv = std::size_t(L) * Hs * hd;
        Buf q = upload(be, fast_rnd(nqk, 1 + L + hd, t), t), k = upload(be, fast_rnd(nqk, 2 + L + hd, t), t);
        Buf v = upload(be, fast_rnd(nv, 3 + L + hd, t), t), y(be, nv * 2);
        Buf S(be, std::size_t(Hs) * kD * hd * 4), z(be, std::size_t(Hs) * kD * 4);
        be->fill_zero(S.p, std::size_t(Hs) * kD * hd * 4), be->fill_zero(z.p, std::size_t(Hs) * kD * 4);
        const LaSeq shape{Hs, hd, L, {}, {}, {}};
        const auto p = la_prefill_params(shape, t, q, k, v, y, S.as<float>(), z.as<float>());
        const double us = time_us([&] { be->la_prefill(p); }, L * B >= 65536 ? 10 : 30);
        const double tok_heads = double(B) * L * H;
        const double flops = tok_heads * (2.0 * 64 * kF + 2.0 * 64 * hd + 4.0 * kD * hd);
        const double bytes = tok_heads * 2 * (2 * kF + 2 * hd) + double(B) * H * kD * (hd + 1) * 4;
        const double bound_us = std::max(flops / 790e12, bytes / 3.0e12) * 1e6;
        std::printf("la_prefill  hd %3d B %2d L %5d (H %d): %9.1f us  %6.2f ns/token-head  bound %6.1f us (%4.1f%%)\n",
                    hd, B, L, H, us, us * 1e3 / tok_heads, bound_us, 100 * bound_us / us);
      }
  for (int hd : {64, 112})
    for (int L : {2048, 8192}) {
      const SwaCfg c{H, hd, hd, 128, 129};
      const int w = H * hd;
      Buf qkv = upload(be, rnd(g, std::size_t(L) * 3 * w, 1.f, t), t), out(be, std::size_t(L) * w * 2);
      Buf rk(be, std::size_t(c.R) * w * 2), rv(be, std::size_t(c.R) * w * 2);
      ops::SwaPrefillParams p;
      p.shape = swa_shape(c), p.qkv = qkv.p, p.ld_qkv = 3 * w, p.out = out.p, p.ld_out = w, p.dtype = t;
      p.n_tokens = L, p.start_pos = 0, p.ring_k = rk.p, p.ring_v = rv.p;
      const double us = time_us([&] { be->swa_prefill(p); }, 10);
      std::printf("swa_prefill hd %3d L %5d w 128: %9.1f us\n", hd, L, us);
    }
  for (int B : {1, 64, 256}) {
    const SwaCfg c{H, 64, 64, 128, 129};
    const int w = H * 64;
    Buf qkv = upload(be, rnd(g, std::size_t(B) * 3 * w, 1.f, t), t), out(be, std::size_t(B) * w * 2);
    Buf rk(be, std::size_t(B) * c.R * w * 2), rv(be, std::size_t(B) * c.R * w * 2);
    be->fill_zero(rk.p, std::size_t(B) * c.R * w * 2), be->fill_zero(rv.p, std::size_t(B) * c.R * w * 2);
    std::vector<int32_t> sl(B), ps(B, 1000);
    std::iota(sl.begin(), sl.end(), 0);
    Buf sb = upload_i32(be, sl), pb = upload_i32(be, ps);
    ops::SwaDecodeParams p;
    p.shape = swa_shape(c), p.qkv = qkv.p, p.ld_qkv = 3 * w, p.out = out.p, p.ld_out = w, p.dtype = t;
    p.n_tokens = B, p.slots = sb.as<int32_t>(), p.positions = pb.as<int32_t>(), p.ring_k = rk.p, p.ring_v = rv.p;
    const double us = time_us([&] { be->swa_decode(p); }, 100);
    std::printf("swa_decode  hd  64 B %3d w 128: %8.2f us  %7.1f GB/s (window K+V)\n", B, us,
                double(B) * 129 * w * 2 * 2 / us / 1e3);
  }
}
