// test_cuda_attention.cpp: the CUDA backend's linear-attention and sliding-window
// ops against a naive fp64 host implementation of SPEC.md (LA through the explicit quadratic sum with kappa = 1 + s + s^2/2, s = q.k/4), for
// float32, float16 and bfloat16, plus consistency checks (prefill split in two == one prefill,
// prefill then decode == longer prefill). Skips (exit 0) when no GPU is visible.
// Uses only the library's C entry points and the Backend interface (no CUDA headers).

#include "cuda_op_test_util.h"

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

TEST_CASE("la_prefill batched: B sequences in one call (interleaved strides), each from its own state") {
  // q, k, v of sequence b at token t live at row t*B + b of [T][B][H*] buffers (token stride B*H*f,
  // sequence stride H*f); y goes to [B][T][H*hd]; states [B][H][D][hd]. Covers the fp32 path, the
  // tensor-core path and (T = 1501, few rows) its segmented variant.
  NEED_GPU();
  std::mt19937 g(26);
  const int H = 2;
  for (DType t : kDtypes)
    for (int hd : {64, 112})
      for (int B : {1, 3})
        for (int T : {1, 65, 300, 1501}) {
          if (T == 1501 && t == DType::F32) continue;
          const std::string ctx = "la_prefill batched " + dname(t) + " hd" + std::to_string(hd) + " B" +
                                  std::to_string(B) + " T" + std::to_string(T);
          const std::size_t nS = std::size_t(H) * kD * hd, nz = std::size_t(H) * kD;
          std::vector<float> q(std::size_t(T) * B * H * kF), k(q.size()), v(std::size_t(T) * B * H * hd);
          std::vector<float> S0(B * nS), z0(B * nz);
          std::vector<double> yref(std::size_t(B) * T * H * hd), Sref(B * nS), zref(B * nz);
          for (int b = 0; b < B; ++b) {
            const int hist = 7 * b;
            const LaSeq all = la_seq(g, H, hd, hist + T, t);
            std::vector<double> y, S, z, y0, Sh, zh;
            la_ref(la_slice(all, 0, hist), hist, y0, Sh, zh);
            la_ref(all, hist, y, S, z);
            std::copy(Sh.begin(), Sh.end(), S0.begin() + b * nS);
            std::copy(zh.begin(), zh.end(), z0.begin() + b * nz);
            std::copy(y.begin(), y.end(), yref.begin() + std::size_t(b) * T * H * hd);
            std::copy(S.begin(), S.end(), Sref.begin() + b * nS);
            std::copy(z.begin(), z.end(), zref.begin() + b * nz);
            for (int i = 0; i < T; ++i) {
              const std::size_t src = std::size_t(hist + i), row = std::size_t(i) * B + b;
              std::copy_n(&all.q[src * H * kF], H * kF, &q[row * H * kF]);
              std::copy_n(&all.k[src * H * kF], H * kF, &k[row * H * kF]);
              std::copy_n(&all.v[src * H * hd], H * hd, &v[row * H * hd]);
            }
          }
          Buf qb = upload(be, q, t), kb = upload(be, k, t), vb = upload(be, v, t);
          Buf yb(be, yref.size() * dtype_size(t));
          Buf Sb = upload(be, S0, DType::F32), zb = upload(be, z0, DType::F32);
          ops::LaPrefillParams p;
          p.shape.heads = H, p.shape.feature_dim = kF, p.shape.head_dim = hd;
          p.q = qb.p, p.k = kb.p, p.v = vb.p, p.y = yb.p;
          p.ld_q = p.ld_k = int64_t(B) * H * kF, p.ld_v = int64_t(B) * H * hd, p.ld_y = H * hd;
          p.seq_stride_q = p.seq_stride_k = H * kF, p.seq_stride_v = H * hd, p.seq_stride_y = int64_t(T) * H * hd;
          p.dtype = t, p.n_tokens = T, p.n_seqs = B, p.state_s = Sb.as<float>(), p.state_z = zb.as<float>();
          be->la_prefill(p);
          CHECK(close(download(be, yb, yref.size(), t), yref, tol_for(t), ctx + " y"));
          CHECK(close(download(be, Sb, Sref.size(), DType::F32), Sref, kStateTol, ctx + " S"));
          CHECK(close(download(be, zb, zref.size(), DType::F32), zref, kStateTol, ctx + " z"));
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
        be->la_decode(la_decode_params(H, hd, t, B, q, k, v, yb, sl, Sb.as<float>(), zb.as<float>()));
        CHECK(close(download(be, yb, yref.size(), t), yref, tol_for(t), ctx + " y"));
        CHECK(close(download(be, Sb, Sref.size(), DType::F32), Sref, kStateTol, ctx + " S"));
        CHECK(close(download(be, zb, zref.size(), DType::F32), zref, kStateTol, ctx + " z"));
      }
}

TEST_CASE("la symmetric state: same y as the full layout, state equal once expanded; then decode") {
  // Every prefill path (fp32 CUDA-core kernel; the tensor-core kernel, segmented for T = 1501;
  // BASED_CORE_LA_PREFILL=mma selects the mma.sync one on Hopper) and the decode kernel, with the
  // 153-row state vs the 273-row one: identical math, so y agrees to rounding.
  NEED_GPU();
  std::mt19937 g(18);
  const int H = 2, hist = 37, Td = 2;
  for (DType t : kDtypes)
    for (int hd : {64, 112, 128})
      for (int T : {1, 65, 300, 1501}) {
        if (T == 1501 && t == DType::F32) continue;
        const std::string ctx = "la symmetric " + dname(t) + " hd" + std::to_string(hd) + " T" + std::to_string(T);
        const LaSeq all = la_seq(g, H, hd, hist + T + Td, t);
        const std::size_t nS = std::size_t(H) * kD * hd, nz = std::size_t(H) * kD;
        const std::size_t nSs = std::size_t(H) * kDs * hd, nzs = std::size_t(H) * kDs, row = std::size_t(H) * hd;
        Buf Sf(be, nS * 4), zf(be, nz * 4), Ss(be, nSs * 4), zs(be, nzs * 4);
        be->fill_zero(Sf.p, nS * 4), be->fill_zero(zf.p, nz * 4), be->fill_zero(Ss.p, nSs * 4), be->fill_zero(zs.p, nzs * 4);
        for (auto [a, b] : {std::pair<int, int>{0, hist}, {hist, hist + T}}) {
          const LaSeq part = la_slice(all, a, b);
          const auto yf = run_la_prefill(be, part, t, Sf.as<float>(), zf.as<float>(), false);
          const auto ys = run_la_prefill(be, part, t, Ss.as<float>(), zs.as<float>(), true);
          CHECK(close(ys, yf, tol_same(t), ctx + " prefill y [" + std::to_string(a) + ", " + std::to_string(b) + ")"));
        }
        if (T <= 300) {  // and against the fp64 quadratic form
          std::vector<double> y, S, z;
          la_ref(la_slice(all, 0, hist + T), hist, y, S, z);
          Buf Sc(be, nSs * 4), zc(be, nzs * 4);
          be->fill_zero(Sc.p, nSs * 4), be->fill_zero(zc.p, nzs * 4);
          run_la_prefill(be, la_slice(all, 0, hist), t, Sc.as<float>(), zc.as<float>(), true);
          CHECK(close(run_la_prefill(be, la_slice(all, hist, hist + T), t, Sc.as<float>(), zc.as<float>(), true), y,
                      tol_for(t), ctx + " y vs fp64"));
          CHECK(close(to_f32(full_from_symmetric(download(be, Sc, nSs, DType::F32), H, hd)), S, kStateTol,
                      ctx + " S vs fp64"));
          CHECK(close(to_f32(full_from_symmetric(download(be, zc, nzs, DType::F32), H, 1)), z, kStateTol,
                      ctx + " z vs fp64"));
        }
        const auto Sfh = download(be, Sf, nS, DType::F32), zfh = download(be, zf, nz, DType::F32);
        CHECK(close(to_f32(full_from_symmetric(download(be, Ss, nSs, DType::F32), H, hd)), Sfh, kStateTol,
                    ctx + " S expanded"));
        CHECK(close(to_f32(full_from_symmetric(download(be, zs, nzs, DType::F32), H, 1)), zfh, kStateTol,
                    ctx + " z expanded"));
        Buf sl = upload_i32(be, {0});
        for (int i = hist + T; i < hist + T + Td; ++i) {
          const LaSeq one = la_slice(all, i, i + 1);
          Buf q = upload(be, one.q, t), k = upload(be, one.k, t), v = upload(be, one.v, t);
          std::vector<float> y[2];
          for (int sym = 0; sym < 2; ++sym) {
            Buf yb(be, row * dtype_size(t));
            be->la_decode(la_decode_params(H, hd, t, 1, q, k, v, yb, sl, (sym ? Ss : Sf).as<float>(),
                                           (sym ? zs : zf).as<float>(), sym == 1));
            y[sym] = download(be, yb, row, t);
          }
          CHECK(close(y[1], y[0], tol_same(t), ctx + " decode y at " + std::to_string(i)));
        }
        CHECK(close(to_f32(full_from_symmetric(download(be, Ss, nSs, DType::F32), H, hd)),
                    download(be, Sf, nS, DType::F32), kStateTol, ctx + " S after decode"));
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
        be->la_decode(la_decode_params(H, hd, t, 1, q, k, v, yb, sl, S3.as<float>(), z3.as<float>()));
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

namespace {
/// One swa_prefill call of T tokens at start (history: random post-RoPE rows in the ring, the
/// other ring rows random too) against the fp64 reference, output and ring after the call.
void check_swa_prefill_case(Backend* be, std::mt19937& g, DType t, const SwaCfg& c, int T, int start) {
  const int w = c.H * c.hd;
  const std::string ctx = "swa_prefill " + dname(t) + " hd" + std::to_string(c.hd) + " rd" + std::to_string(c.rd) +
                          " w" + std::to_string(c.window) + " R" + std::to_string(c.R) + " T" + std::to_string(T) +
                          " start" + std::to_string(start);
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
}  // namespace

// bf16/fp16 at hd 64/112/128 run the tensor-core kernel (hd 64 rd 32, hd 128 rd 64: partial
// rotary); fp32 the CUDA-core one. Ring sizes R > W + 1 for T % 3 == 0. The ring is written by
// the attention kernel itself when start == 0 or T + min(start, W) <= R, else by a second one.
TEST_CASE("swa_prefill: banded softmax with RoPE, history from the ring, ring refilled") {
  NEED_GPU();
  std::mt19937 g(9);
  struct Dims {
    int hd, rd;
  };
  for (DType t : kDtypes)
    for (Dims dm : {Dims{64, 64}, Dims{112, 112}, Dims{128, 128}, Dims{64, 32}, Dims{128, 64}})
      for (int window : {64, 128})
        for (int T : {1, 2, 3, 63, 64, 65, 300, 4100})
          for (int start : {0, 150}) {
            if (T == 4100 && dm.rd != dm.hd) continue;
            const SwaCfg c{2, dm.hd, dm.rd, window, window + 1 + (T % 3 == 0 ? 6 : 0)};
            check_swa_prefill_case(be, g, t, c, T, start);
          }
}

// 16 heads x 4100 tokens (more CTAs than fit on the GPU at once, as in the M3 bench).
TEST_CASE("swa_prefill: 16 heads, long sequence") {
  NEED_GPU();
  std::mt19937 g(29);
  for (DType t : {DType::BF16, DType::F16})
    for (int hd : {64, 112})
      for (int window : {64, 128})
        for (int start : {0, 150}) {
          const SwaCfg c{16, hd, hd, window, window + 1};
          check_swa_prefill_case(be, g, t, c, 4100, start);
        }
}

// Windows that are not multiples of 16 and windows whose keys do not fit in one shared-memory
// stage (W 1000: 67 chunks of 16 rows, in stages of 24 at hd 64 and 12 at hd 112/128).
TEST_CASE("swa_prefill: any window, multi-stage key tiles, history shorter than the window") {
  NEED_GPU();
  std::mt19937 g(19);
  for (DType t : kDtypes)
    for (int hd : {64, 112, 128})
      for (int window : {0, 1, 37, 100, 1000})
        for (int T : {65, 700})
          for (int start : {0, 5, 1234}) {
            const SwaCfg c{2, hd, hd, window, window + 1 + (T % 5 == 0 ? 3 : 0)};
            check_swa_prefill_case(be, g, t, c, T, start);
          }
}

TEST_CASE("swa_decode: rows on their slots and positions") {
  NEED_GPU();
  std::mt19937 g(10);
  for (DType t : kDtypes)
    for (int hd : {64, 112})
      for (int window : {64, 128, 1000})  // 1000: the partial sums exceed 40 KB, the row-per-thread scores
        for (int B : {1, 64}) {
          if (window > 128 && B > 1) continue;
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
    for (int hd : {64, 112, 128})
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
      const ops::LaDecodeParams p = la_decode_params(H, hd, t, B, q, k, v, y, sb, S.as<float>(), z.as<float>());
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

// Informational: PERFORMANCE.md M3 prefill shape, one sequence of L 4096, H 16 per call (the
// bench sums 4 such calls). Run with --no-skip -tc="*swa_prefill timings*".
TEST_CASE("swa_prefill timings" * doctest::skip()) {
  NEED_GPU();
  std::mt19937 g(14);
  auto time_us = [&](auto&& fn, int iters) {
    for (int i = 0; i < 5; ++i) fn();
    be->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) fn();
    be->synchronize();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  const int H = 16, L = 4096;
  for (DType t : {DType::BF16, DType::F16})
    for (int hd : {64, 112, 128})
      for (int window : {64, 128}) {
        const SwaCfg c{H, hd, hd, window, window + 1};
        const int w = H * hd;
        Buf qkv = upload(be, rnd(g, std::size_t(L) * 3 * w, 1.f, t), t), out(be, std::size_t(L) * w * 2);
        Buf rk(be, std::size_t(c.R) * w * 2), rv(be, std::size_t(c.R) * w * 2);
        ops::SwaPrefillParams p;
        p.shape = swa_shape(c), p.qkv = qkv.p, p.ld_qkv = 3 * w, p.out = out.p, p.ld_out = w, p.dtype = t;
        p.n_tokens = L, p.start_pos = 0, p.ring_k = rk.p, p.ring_v = rv.p;
        const double us = time_us([&] { be->swa_prefill(p); }, 50);
        const double bytes = double(L) * w * 2 * 4;  // qkv read + out write
        std::printf("swa_prefill %s hd %3d L %d H %d w %3d: %8.2f us  %6.1f GB/s (qkv + out)\n", dname(t).c_str(), hd, L,
                    H, window, us, bytes / us / 1e3);
      }
}
