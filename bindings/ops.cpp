// ops.cpp: based_core.ops: every backend op on DLPack tensors (torch, numpy,
// cupy, jax). Inputs are checked (dtype, device, shape, contiguity) with
// messages naming the argument; outputs are new tensors on the inputs'
// device. State arguments are updated in place. Each call finishes its work
// before returning, so the result may be used on any stream.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <cmath>
#include <map>
#include <mutex>
#include <optional>

#include "based_core/backends.h"
#include "based_core/error.h"
#include "based_core/sampler.h"
#include "tensors.h"

namespace nb = nanobind;
using namespace nb::literals;
using namespace based_core;
using based_core::py::AnyArray;

namespace {

// Checks one tensor argument and remembers the common device.
struct Checker {
  const char* op;
  std::optional<Device> device;

  void device_of(const AnyArray& a, const char* arg) {
    Device d = py::device_of(a, arg);
    if (device && *device != d)
      throw TypeMismatch(std::string(op) + ": " + arg + " is on " + d.str() + " but earlier arguments are on " +
                         device->str());
    device = d;
  }
  void check(const AnyArray& a, const char* arg, std::vector<int64_t> shape, std::optional<DType> dtype) {
    device_of(a, arg);
    py::require_contiguous(a, arg);
    DType dt = py::dtype_of(a, arg);
    if (dtype && dt != *dtype)
      throw TypeMismatch(std::string(op) + ": " + arg + " must be " + dtype_name(*dtype) + ", got " + dtype_name(dt));
    std::vector<int64_t> got = py::shape_of(a);
    bool ok = got.size() == shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
    if (!ok) {
      std::string want = "[";
      for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
      throw InvalidArgument(std::string(op) + ": " + arg + " must have shape " + want + "], got " + shape_str(got));
    }
  }
  DType act(const AnyArray& a, const char* arg) {
    DType dt = py::dtype_of(a, arg);
    if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
      throw TypeMismatch(std::string(op) + ": " + arg + " must be float32, float16 or bfloat16, got " + dtype_name(dt));
    return dt;
  }
  std::shared_ptr<Backend> backend() { return shared_backend(*device); }
};

int64_t dim(const AnyArray& a, size_t i) { return i < a.ndim() ? int64_t(a.shape(i)) : -1; }

ops::SlidingWindowShape swa_shape(int64_t H, int64_t hd, int window, std::optional<int> rotary_dim, float rope_base,
                                  std::optional<float> scale, int64_t ring) {
  ops::SlidingWindowShape s;
  s.heads = int(H);
  s.head_dim = int(hd);
  s.window = window;
  s.rotary_dim = rotary_dim.value_or(int(hd));
  s.rope_base = rope_base;
  s.scale = scale.value_or(1.0f / std::sqrt(float(hd)));
  s.ring_size = int(ring);
  return s;
}

ops::LinearAttentionShape la_shape(int64_t H, int64_t f, int64_t hd, float eps, bool symmetric) {
  ops::LinearAttentionShape s;
  s.heads = int(H);
  s.feature_dim = int(f);
  s.head_dim = int(hd);
  s.eps = eps;
  s.symmetric = symmetric;
  return s;
}

// Slot ids index state arrays: an id out of range would write outside them.
void check_indices(const std::shared_ptr<Backend>& be, const AnyArray& a, int64_t limit, const char* op,
                   const char* arg) {
  std::vector<int32_t> h(a.shape(0));
  be->copy(h.data(), a.data(), h.size() * 4,
           be->device().is_cuda() ? CopyKind::DeviceToHost : CopyKind::HostToDevice);
  for (int32_t x : h)
    if (x < 0 || x >= limit)
      throw OutOfRange(std::string(op) + ": " + arg + " holds " + std::to_string(x) + ", outside [0, " +
                       std::to_string(limit) + ")");
}

// The `stream` argument of every op: a CUDA stream handle (an int, e.g.
// torch.cuda.current_stream().cuda_stream) or None. The op first waits for the
// work queued on that stream (None: the legacy default stream, where torch,
// cupy and jax put work by default), then runs on based_core's own stream.
// With a stream, the stream is made to wait for the op (no host sync); with
// None, the op returns when its results are complete, usable on any stream.
struct StreamOrder {
  std::shared_ptr<Backend> be;
  CUstream_st* external = nullptr;
  bool given = false;
  StreamOrder(std::shared_ptr<Backend> b, const nb::object& stream) : be(std::move(b)) {
    if (!stream.is_none()) {
      if (!nb::isinstance<nb::int_>(stream))
        throw TypeMismatch("stream: expected an int CUDA stream handle or None, got " +
                           std::string(nb::str(nb::handle(stream.type())).c_str()));
      external = reinterpret_cast<CUstream_st*>(nb::cast<uintptr_t>(stream));
      given = true;
    }
    be->wait_for(external);
  }
  void done() {
    if (given)
      be->signal_to(external);
    else
      be->synchronize();
  }
};

nb::object finish(StreamOrder& so, const Tensor& out) {
  so.done();
  return py::to_python(out);
}

}  // namespace

void bind_ops(nb::module_& m) {
  m.def(
      "embedding",
      [](const AnyArray& ids, const AnyArray& table, nb::object stream) {
        Checker c{"embedding"};
        c.check(table, "table", {-1, -1}, std::nullopt);
        DType dt = c.act(table, "table");
        c.check(ids, "ids", {-1}, DType::I32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, DType::F32, {dim(ids, 0), dim(table, 1)});
        check_indices(be, ids, dim(table, 0), "embedding", "ids");  // kernels read table rows unchecked
        ops::EmbeddingParams p;
        p.ids = static_cast<const int32_t*>(ids.data());
        p.n_tokens = dim(ids, 0);
        p.table = table.data();
        p.dtype = dt;
        p.vocab = dim(table, 0);
        p.dim = dim(table, 1);
        p.out = static_cast<float*>(out.data());
        be->embedding(p);
        return finish(so, out);
      },
      "ids"_a, "table"_a, "stream"_a = nb::none(), "computes: out[t] = float(table[ids[t]]) (fp32 [T, d]).");

  m.def(
      "rmsnorm",
      [](const AnyArray& x, const AnyArray& weight, float eps, nb::object stream) {
        Checker c{"rmsnorm"};
        c.check(x, "x", {-1, -1}, DType::F32);
        c.check(weight, "weight", {dim(x, 1)}, std::nullopt);
        DType dt = c.act(weight, "weight");
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, dt, {dim(x, 0), dim(x, 1)});
        ops::RmsNormParams p;
        p.x = static_cast<const float*>(x.data());
        p.weight = weight.data();
        p.y = out.data();
        p.dtype = dt;
        p.n_rows = dim(x, 0);
        p.dim = dim(x, 1);
        p.eps = eps;
        be->rmsnorm(p);
        return finish(so, out);
      },
      "x"_a, "weight"_a, "eps"_a = 1e-5f, "stream"_a = nb::none(), "computes: x * rsqrt(mean(x^2) + eps) * weight (x fp32, out in weight's dtype).");

  m.def(
      "gemm",
      [](const AnyArray& x, const AnyArray& w, std::optional<AnyArray> bias, std::optional<AnyArray> out, bool fp32_out,
         nb::object stream) {
        Checker c{"gemm"};
        c.check(x, "x", {-1, -1}, std::nullopt);
        DType dt = c.act(x, "x");
        c.check(w, "w", {-1, dim(x, 1)}, dt);
        // The bias is in x's dtype, or float32 when the output is float32 (GemmParams::bias_f32).
        const bool bias_f32 = bias && dt != DType::F32 && py::dtype_of(*bias, "bias") == DType::F32;
        if (bias) c.check(*bias, "bias", {dim(w, 0)}, bias_f32 ? DType::F32 : dt);
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor y;
        void* yp;
        DType odt = fp32_out ? DType::F32 : dt;
        if (out) {
          c.check(*out, "out", {dim(x, 0), dim(w, 0)}, std::nullopt);
          odt = py::dtype_of(*out, "out");
          yp = out->data();
        } else {
          y = Tensor::empty(be, odt, {dim(x, 0), dim(w, 0)});
          yp = y.data();
        }
        ops::GemmParams p;
        p.x = x.data();
        p.ldx = dim(x, 1);
        p.w = w.data();
        p.bias = bias ? bias->data() : nullptr;
        p.bias_f32 = bias_f32;
        p.in_dtype = dt;
        p.y = yp;
        p.ldy = dim(w, 0);
        p.out_dtype = odt;
        p.accumulate = bool(out);
        p.m = dim(x, 0);
        p.n = dim(w, 0);
        p.k = dim(x, 1);
        be->gemm(p);
        so.done();
        return out ? nb::none() : py::to_python(y);
      },
      "x"_a, "w"_a, "bias"_a = nb::none(), "out"_a = nb::none(), "fp32_out"_a = false, "stream"_a = nb::none(),
      "computes: x @ w.T + bias; with out=, accumulates into out in place and returns None. The bias is in x's dtype, "
      "or float32 when the output is float32.");

  m.def(
      "swiglu",
      [](const AnyArray& u, nb::object stream) {
        Checker c{"swiglu"};
        c.check(u, "u", {-1, -1}, std::nullopt);
        DType dt = c.act(u, "u");
        if (dim(u, 1) % 2) throw InvalidArgument("swiglu: u's last dimension must be even");
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, dt, {dim(u, 0), dim(u, 1) / 2});
        ops::SwigluParams p;
        p.u = u.data();
        p.ld_u = dim(u, 1);
        p.y = out.data();
        p.ld_y = dim(u, 1) / 2;
        p.dtype = dt;
        p.n = dim(u, 1) / 2;
        p.n_tokens = dim(u, 0);
        be->swiglu(p);
        return finish(so, out);
      },
      "u"_a, "stream"_a = nb::none(), "computes: u[:, :n] * silu(u[:, n:]).");

  m.def(
      "argmax",
      [](const AnyArray& logits, nb::object stream) {
        Checker c{"argmax"};
        c.check(logits, "logits", {-1, -1}, DType::F32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, DType::I32, {dim(logits, 0)});
        ops::ArgmaxParams p;
        p.logits = static_cast<const float*>(logits.data());
        p.rows = dim(logits, 0);
        p.vocab = dim(logits, 1);
        p.out = static_cast<int32_t*>(out.data());
        be->argmax(p);
        return finish(so, out);
      },
      "logits"_a, "stream"_a = nb::none(), "computes: the index of each row's maximum (lowest on ties).");

  m.def(
      "sample",
      [](const AnyArray& logits, const AnyArray& seqs, const AnyArray& steps, float temperature, int top_k,
         float top_p, uint64_t seed, nb::object stream) {
        Checker c{"sample"};
        c.check(logits, "logits", {-1, -1}, DType::F32);
        c.check(seqs, "seqs", {dim(logits, 0)}, DType::I32);
        c.check(steps, "steps", {dim(logits, 0)}, DType::I32);
        SamplingParams sp;
        sp.temperature = temperature;
        sp.top_k = top_k;
        sp.top_p = top_p;
        sp.validate();
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, DType::I32, {dim(logits, 0)});
        ops::SampleParams p;
        p.logits = static_cast<const float*>(logits.data());
        p.rows = dim(logits, 0);
        p.vocab = dim(logits, 1);
        p.temperature = temperature;
        p.top_k = top_k;
        p.top_p = top_p;
        p.seed = seed;
        p.seqs = static_cast<const int32_t*>(seqs.data());
        p.steps = static_cast<const int32_t*>(steps.data());
        p.out = static_cast<int32_t*>(out.data());
        be->sample(p);  // greedy settings give the argmax on every backend
        return finish(so, out);
      },
      "logits"_a, "seqs"_a, "steps"_a, "temperature"_a, "top_k"_a = 0, "top_p"_a = 1.f, "seed"_a = 0,
      "stream"_a = nb::none(),
      "computes: one token per row: softmax(logits/temperature) within top_k and top_p, drawn with the\n"
      "counter-based uniform (seed, seqs[i], steps[i]) walking kept ids in ascending order.");

  m.def(
      "la_prefill",
      [](const AnyArray& q, const AnyArray& k, const AnyArray& v, const AnyArray& state_s, const AnyArray& state_z,
         float eps, bool symmetric, nb::object stream) {
        Checker c{"la_prefill"};
        c.device_of(q, "q");
        DType dt = c.act(q, "q");
        const size_t nd = q.ndim();
        if (nd != 3 && nd != 4)
          throw InvalidArgument("la_prefill: q must have shape [T, H, f] or [B, T, H, f], got " + shape_str(py::shape_of(q)));
        const bool batched = nd == 4;
        const int64_t B = batched ? dim(q, 0) : 1, T = dim(q, nd - 3), H = dim(q, nd - 2), f = dim(q, nd - 1);
        // q, k, v: each token's [H, *] block contiguous; the token (and batch) dims may be strided
        // (zero-copy views, e.g. FLA's [B, T, H, *] or slices of a fused projection).
        struct Rows { int64_t ld, ss; };
        auto rows = [&](const AnyArray& a, const char* arg, int64_t width_last, std::optional<DType> want) {
          std::vector<int64_t> shape = {T, H, width_last};
          if (batched) shape.insert(shape.begin(), B);
          c.device_of(a, arg);
          DType adt = py::dtype_of(a, arg);
          if (want && adt != *want)
            throw TypeMismatch(std::string("la_prefill: ") + arg + " must be " + dtype_name(*want) + ", got " + dtype_name(adt));
          std::vector<int64_t> got = py::shape_of(a);
          bool ok = got.size() == shape.size();
          for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
          if (!ok) {
            std::string want_s = "[";
            for (size_t i = 0; i < shape.size(); ++i)
              want_s += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
            throw InvalidArgument(std::string("la_prefill: ") + arg + " must have shape " + want_s + "], got " + shape_str(got));
          }
          const size_t n = a.ndim();
          const int64_t w = got[n - 1];
          if ((got[n - 1] != 1 && a.stride(n - 1) != 1) || (got[n - 2] != 1 && a.stride(n - 2) != w))
            throw InvalidArgument(std::string(arg) + ": must be C-contiguous in its last two dims [H, " + std::to_string(w) +
                                  "] (the token and batch dims may be strided; call .contiguous())");
          Rows r{H * w, 0};
          if (T > 1) r.ld = a.stride(n - 3);
          if (batched && B > 1) r.ss = a.stride(0);
          if (r.ld < H * w || r.ss < 0)
            throw InvalidArgument(std::string(arg) + ": token rows must not overlap (stride " + std::to_string(r.ld) +
                                  " < " + std::to_string(H * w) + ") and strides must be >= 0; call .contiguous()");
          return r;
        };
        const Rows rq = rows(q, "q", f, std::nullopt), rk = rows(k, "k", f, dt);
        const int64_t hd = dim(v, nd - 1), D = la_shape(H, f, hd, eps, symmetric).state_rows();
        const Rows rv = rows(v, "v", -1, dt);
        std::vector<int64_t> s_shape = {H, D, hd}, z_shape = {H, D};
        if (batched) s_shape.insert(s_shape.begin(), B), z_shape.insert(z_shape.begin(), B);
        c.check(state_s, "state_s", s_shape, DType::F32);
        c.check(state_z, "state_z", z_shape, DType::F32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        std::vector<int64_t> y_shape = {T, H, hd};
        if (batched) y_shape.insert(y_shape.begin(), B);
        Tensor y = Tensor::empty(be, dt, y_shape);
        ops::LaPrefillParams p;
        p.shape = la_shape(H, f, hd, eps, symmetric);
        p.q = q.data(); p.k = k.data(); p.v = v.data();
        p.ld_q = rq.ld; p.ld_k = rk.ld; p.ld_v = rv.ld;
        p.y = y.data(); p.ld_y = H * hd; p.dtype = dt; p.n_tokens = T;
        p.state_s = static_cast<float*>(state_s.data());
        p.state_z = static_cast<float*>(state_z.data());
        p.n_seqs = B;
        p.seq_stride_q = rq.ss; p.seq_stride_k = rk.ss; p.seq_stride_v = rv.ss; p.seq_stride_y = T * H * hd;
        if (B > 0) be->la_prefill(p);
        return finish(so, y);
      },
      "q"_a, "k"_a, "v"_a, "state_s"_a, "state_z"_a, "eps"_a = 1e-12f, "symmetric"_a = false, "stream"_a = nb::none(),
      "computes: causal Taylor linear attention of q, k [T, H, f], v [T, H, hd], continuing from and updating\n"
      "the fp32 state S [H, D, hd] and z [H, D] in place; returns y [T, H, hd]. D = 1+f+f^2 (the TaylorExp\n"
      "feature order) or, with symmetric=True, D = 1+f+f(f+1)/2 (the exact symmetric layout of ops.h: same y).\n"
      "Batched: q, k [B, T, H, f], v [B, T, H, hd] (FLA's layout) with states S [B, H, D, hd], z [B, H, D]:\n"
      "B independent sequences in one call; returns y [B, T, H, hd]. q, k, v may be strided views in\n"
      "their token and batch dims (each token's [H, *] block contiguous): no copies are made.");

  m.def(
      "la_decode",
      [](const AnyArray& q, const AnyArray& k, const AnyArray& v, const AnyArray& state_s, const AnyArray& state_z,
         const AnyArray& slots, float eps, bool symmetric, nb::object stream) {
        Checker c{"la_decode"};
        c.check(q, "q", {-1, -1, -1}, std::nullopt);
        DType dt = c.act(q, "q");
        const int64_t B = dim(q, 0), H = dim(q, 1), f = dim(q, 2);
        c.check(k, "k", {B, H, f}, dt);
        c.check(v, "v", {B, H, -1}, dt);
        const int64_t hd = dim(v, 2), D = la_shape(H, f, hd, eps, symmetric).state_rows();
        c.check(state_s, "state_s", {-1, H, D, hd}, DType::F32);
        c.check(state_z, "state_z", {dim(state_s, 0), H, D}, DType::F32);
        c.check(slots, "slots", {B}, DType::I32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        check_indices(be, slots, dim(state_s, 0), "la_decode", "slots");
        Tensor y = Tensor::empty(be, dt, {B, H, hd});
        ops::LaDecodeParams p;
        p.shape = la_shape(H, f, hd, eps, symmetric);
        p.q = q.data(); p.k = k.data(); p.v = v.data();
        p.ld_q = p.ld_k = H * f; p.ld_v = H * hd;
        p.y = y.data(); p.ld_y = H * hd; p.dtype = dt; p.n_tokens = B;
        p.slots = static_cast<const int32_t*>(slots.data());
        p.state_s = static_cast<float*>(state_s.data());
        p.state_z = static_cast<float*>(state_z.data());
        be->la_decode(p);
        return finish(so, y);
      },
      "q"_a, "k"_a, "v"_a, "state_s"_a, "state_z"_a, "slots"_a, "eps"_a = 1e-12f, "symmetric"_a = false,
      "stream"_a = nb::none(),
      "computes: one linear-attention step per row i into state slot slots[i] (update, then read out).\n"
      "States S [slots, H, D, hd], z [slots, H, D] with D as for la_prefill (symmetric=True: 1+f+f(f+1)/2).");

  m.def(
      "swa_prefill",
      [](const AnyArray& qkv, const AnyArray& ring_k, const AnyArray& ring_v, int window, int64_t start_pos,
         float rope_base, std::optional<int> rotary_dim, std::optional<float> scale, nb::object stream) {
        Checker c{"swa_prefill"};
        c.check(qkv, "qkv", {-1, 3, -1, -1}, std::nullopt);
        DType dt = c.act(qkv, "qkv");
        const int64_t T = dim(qkv, 0), H = dim(qkv, 2), hd = dim(qkv, 3);
        c.check(ring_k, "ring_k", {-1, H, hd}, dt);
        c.check(ring_v, "ring_v", {dim(ring_k, 0), H, hd}, dt);
        if (window < 0 || dim(ring_k, 0) < window + 1)
          throw InvalidArgument("swa_prefill: the ring needs at least window+1 rows");
        if (start_pos < 0) throw InvalidArgument("swa_prefill: start_pos must be >= 0");
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor out = Tensor::empty(be, dt, {T, H, hd});
        ops::SwaPrefillParams p;
        p.shape = swa_shape(H, hd, window, rotary_dim, rope_base, scale, dim(ring_k, 0));
        p.qkv = qkv.data(); p.ld_qkv = 3 * H * hd; p.out = out.data(); p.ld_out = H * hd; p.dtype = dt;
        p.n_tokens = T; p.start_pos = start_pos; p.ring_k = ring_k.data(); p.ring_v = ring_v.data();
        be->swa_prefill(p);
        return finish(so, out);
      },
      "qkv"_a, "ring_k"_a, "ring_v"_a, "window"_a, "start_pos"_a = 0, "rope_base"_a = 10000.f,
      "rotary_dim"_a = nb::none(), "scale"_a = nb::none(), "stream"_a = nb::none(),
      "computes: sliding-window attention with rotate-half RoPE of qkv [T, 3, H, hd] at positions start_pos..,\n"
      "band [p-window, p]; history from and final keys/values into ring_k/ring_v [R, H, hd].");

  m.def(
      "swa_decode",
      [](const AnyArray& qkv, const AnyArray& ring_k, const AnyArray& ring_v, const AnyArray& slots,
         const AnyArray& positions, int window, float rope_base, std::optional<int> rotary_dim,
         std::optional<float> scale, nb::object stream) {
        Checker c{"swa_decode"};
        c.check(qkv, "qkv", {-1, 3, -1, -1}, std::nullopt);
        DType dt = c.act(qkv, "qkv");
        const int64_t B = dim(qkv, 0), H = dim(qkv, 2), hd = dim(qkv, 3);
        c.check(ring_k, "ring_k", {-1, -1, H, hd}, dt);
        c.check(ring_v, "ring_v", {dim(ring_k, 0), dim(ring_k, 1), H, hd}, dt);
        c.check(slots, "slots", {B}, DType::I32);
        c.check(positions, "positions", {B}, DType::I32);
        if (window < 0 || dim(ring_k, 1) < window + 1)
          throw InvalidArgument("swa_decode: the ring needs at least window+1 rows");
        auto be = c.backend();
        StreamOrder so(be, stream);
        check_indices(be, slots, dim(ring_k, 0), "swa_decode", "slots");
        check_indices(be, positions, int64_t(1) << 31, "swa_decode", "positions");
        Tensor out = Tensor::empty(be, dt, {B, H, hd});
        ops::SwaDecodeParams p;
        p.shape = swa_shape(H, hd, window, rotary_dim, rope_base, scale, dim(ring_k, 1));
        p.qkv = qkv.data(); p.ld_qkv = 3 * H * hd; p.out = out.data(); p.ld_out = H * hd; p.dtype = dt;
        p.n_tokens = B; p.slots = static_cast<const int32_t*>(slots.data());
        p.positions = static_cast<const int32_t*>(positions.data());
        p.ring_k = ring_k.data(); p.ring_v = ring_v.data();
        be->swa_decode(p);
        return finish(so, out);
      },
      "qkv"_a, "ring_k"_a, "ring_v"_a, "slots"_a, "positions"_a, "window"_a, "rope_base"_a = 10000.f,
      "rotary_dim"_a = nb::none(), "scale"_a = nb::none(), "stream"_a = nb::none(),
      "computes: one sliding-window attention step per row into ring slot slots[i] at positions[i].");

  m.def(
      "conv_prefill",
      [](const AnyArray& u, const AnyArray& weight, const AnyArray& tail, nb::object stream) {
        Checker c{"conv_prefill"};
        c.check(u, "u", {-1, -1}, std::nullopt);
        DType dt = c.act(u, "u");
        const int64_t T = dim(u, 0), C = dim(u, 1) / 2;
        if (dim(u, 1) % 2) throw InvalidArgument("conv_prefill: u's last dimension must be even (a | g)");
        c.check(weight, "weight", {C, 3}, dt);
        c.check(tail, "tail", {2, C}, DType::F32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        Tensor y = Tensor::empty(be, dt, {T, C});
        ops::ConvPrefillParams p;
        p.u = u.data(); p.ld_u = 2 * C; p.weight = weight.data(); p.y = y.data(); p.ld_y = C; p.dtype = dt;
        p.channels = C; p.n_tokens = T; p.tail = static_cast<float*>(tail.data());
        be->conv_prefill(p);
        return finish(so, y);
      },
      "u"_a, "weight"_a, "tail"_a, "stream"_a = nb::none(),
      "computes: silu(causal 3-tap conv of u[:, :C]) * u[:, C:], continuing from and updating tail [2, C].");

  m.def(
      "conv_decode",
      [](const AnyArray& u, const AnyArray& weight, const AnyArray& tail, const AnyArray& slots, nb::object stream) {
        Checker c{"conv_decode"};
        c.check(u, "u", {-1, -1}, std::nullopt);
        DType dt = c.act(u, "u");
        const int64_t B = dim(u, 0), C = dim(u, 1) / 2;
        if (dim(u, 1) % 2) throw InvalidArgument("conv_decode: u's last dimension must be even (a | g)");
        c.check(weight, "weight", {C, 3}, dt);
        c.check(tail, "tail", {-1, 2, C}, DType::F32);
        c.check(slots, "slots", {B}, DType::I32);
        auto be = c.backend();
        StreamOrder so(be, stream);
        check_indices(be, slots, dim(tail, 0), "conv_decode", "slots");
        Tensor y = Tensor::empty(be, dt, {B, C});
        ops::ConvDecodeParams p;
        p.u = u.data(); p.ld_u = 2 * C; p.weight = weight.data(); p.y = y.data(); p.ld_y = C; p.dtype = dt;
        p.channels = C; p.n_tokens = B; p.slots = static_cast<const int32_t*>(slots.data());
        p.tail = static_cast<float*>(tail.data());
        be->conv_decode(p);
        return finish(so, y);
      },
      "u"_a, "weight"_a, "tail"_a, "slots"_a, "stream"_a = nb::none(), "computes: one BaseConv step per row into tail slot slots[i].");
}
