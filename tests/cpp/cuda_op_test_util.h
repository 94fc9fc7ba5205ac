// cuda_op_test_util.h: shared pieces of the CUDA op tests: device buffers, the
// backend under test (created through the library's C entry point, no CUDA
// headers), fp64 host references and tolerances by dtype.
#pragma once

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

/// The symmetric state layout of ops.h (kDs rows: pairs i <= j, then k_i, then 1, unscaled)
/// expanded to the full TaylorExp one (kD rows): an exact linear map. `cols` = hd for S, 1 for z.
constexpr int kDs = 1 + kF + kF * (kF + 1) / 2;  // 153
std::vector<double> full_from_symmetric(const std::vector<float>& sym, int H, int cols) {
  std::vector<double> full(std::size_t(H) * kD * cols);
  const double c1 = 0.5, c2 = 1 / (4 * std::sqrt(2.0));  // f^(-1/4), 1/(sqrt2 sqrt f) for f = 16
  for (int h = 0; h < H; ++h) {
    auto src = [&](int r, int c) { return double(sym[(std::size_t(h) * kDs + r) * cols + c]); };
    auto dst = [&](int r, int c) -> double& { return full[(std::size_t(h) * kD + r) * cols + c]; };
    for (int c = 0; c < cols; ++c) {
      int r = 0;
      for (int i = 0; i < kF; ++i)
        for (int j = i; j < kF; ++j, ++r) dst(1 + kF + kF * i + j, c) = dst(1 + kF + kF * j + i, c) = src(r, c) * c2;
      for (int i = 0; i < kF; ++i) dst(1 + i, c) = src(r + i, c) * c1;
      dst(0, c) = src(r + kF, c);
    }
  }
  return full;
}

ops::LaPrefillParams la_prefill_params(const LaSeq& s, DType t, const Buf& q, const Buf& k,
                                       const Buf& v, const Buf& y, float* S, float* z, bool symmetric = false) {
  ops::LaPrefillParams p;
  p.shape.heads = s.H;
  p.shape.feature_dim = kF;
  p.shape.head_dim = s.hd;
  p.shape.symmetric = symmetric;
  p.q = q.p, p.k = k.p, p.v = v.p, p.y = y.p;
  p.ld_q = p.ld_k = s.H * kF;
  p.ld_v = p.ld_y = s.H * s.hd;
  p.dtype = t;
  p.n_tokens = s.n;
  p.state_s = S;
  p.state_z = z;
  return p;
}

/// la_decode of n rows (q, k [n][H*16], v, y [n][H*hd]) into the slots `slots` of the state S/z.
ops::LaDecodeParams la_decode_params(int H, int hd, DType t, int64_t n, const Buf& q, const Buf& k, const Buf& v,
                                     const Buf& y, const Buf& slots, float* S, float* z, bool symmetric = false) {
  ops::LaDecodeParams p;
  p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd, p.shape.symmetric = symmetric;
  p.q = q.p, p.k = k.p, p.v = v.p, p.y = y.p, p.ld_q = p.ld_k = H * kF, p.ld_v = p.ld_y = H * hd;
  p.dtype = t, p.n_tokens = n, p.slots = slots.as<int32_t>(), p.state_s = S, p.state_z = z;
  return p;
}

/// Runs la_prefill on `s` continuing from the state in S/z (full or symmetric layout); returns y.
std::vector<float> run_la_prefill(Backend* be, const LaSeq& s, DType t, float* S, float* z,
                                  bool symmetric = false) {
  Buf q = upload(be, s.q, t), k = upload(be, s.k, t), v = upload(be, s.v, t);
  Buf y(be, std::size_t(s.n) * s.H * s.hd * dtype_size(t));
  be->la_prefill(la_prefill_params(s, t, q, k, v, y, S, z, symmetric));
  return download(be, y, std::size_t(s.n) * s.H * s.hd, t);
}

}  // namespace
