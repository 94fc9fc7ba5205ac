// session.cpp: state slots, workspace, and the forward pass of BASED.
#include "based_core/session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "based_core/backends.h"
#include "based_core/error.h"
#include "prefill_chunk.h"

namespace based_core {

// Device pointers into one layer's share of the slot state (bases of [slot] arrays).
struct Session::LayerState {
  float* s = nullptr;  // LA: [slot][H][D][hd]
  float* z = nullptr;  // LA: [slot][H][D]
  void* ring_k = nullptr;  // SWA: [slot][R][H][hd]
  void* ring_v = nullptr;
  float* tail = nullptr;  // conv: [slot][2][C]
  std::size_t bytes_per_slot[5] = {0, 0, 0, 0, 0};  // s, z, ring_k, ring_v, tail

  // Calls f(base of the [slot] array, bytes per slot) for each buffer present,
  // in a fixed order (the order of save_slot's bytes).
  template <typename F>
  void for_each_buffer(F&& f) const {
    void* bases[5] = {s, z, ring_k, ring_v, tail};
    for (int b = 0; b < 5; ++b)
      if (bases[b]) f(static_cast<uint8_t*>(bases[b]), bytes_per_slot[b]);
  }
};

namespace {

ops::LinearAttentionShape la_shape(const ModelConfig& c, bool symmetric) {
  ops::LinearAttentionShape s;
  s.heads = int(c.la_heads);
  s.feature_dim = int(c.la_feature_dim);
  s.head_dim = int(c.la_head_dim);
  s.eps = c.la_eps;
  s.symmetric = symmetric;
  return s;
}

ops::SlidingWindowShape swa_shape(const ModelConfig& c) {
  ops::SlidingWindowShape s;
  s.heads = int(c.n_head);
  s.head_dim = int(c.head_dim);
  s.window = int(c.swa_window);
  s.rotary_dim = int(c.rotary_dim);
  s.rope_base = c.rope_base;
  s.scale = 1.0f / std::sqrt(float(c.head_dim));
  s.ring_size = int(c.swa_window + 1);
  return s;
}

}  // namespace

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options)
    : model_(std::move(model)), options_(options) {
  if (!model_) throw InvalidArgument("Session: model is null");
  if (options_.max_slots < 1 || options_.max_slots > (1 << 20))
    throw InvalidArgument("max_slots: expected 1..1048576, got " + std::to_string(options_.max_slots));
  if (options_.prefill_chunk < 0 || options_.prefill_chunk > (1 << 20))
    throw InvalidArgument("prefill_chunk: expected 0 (auto) or 1..1048576, got " +
                          std::to_string(options_.prefill_chunk));
  if (options_.max_context < 0) throw InvalidArgument("max_context: expected >= 0 (0 = no limit)");
  be_ = backend_for(model_->device());
  const ModelConfig& c = model_->config();
  const DType act = model_->activation_dtype();
  const std::size_t as = dtype_size(act);
  const std::size_t S = std::size_t(options_.max_slots);
  const int64_t qk = 2 * c.la_heads * c.la_feature_dim;
  big_cols_ = std::max({2 * c.conv_channels, qk + c.d_model, 3 * c.d_model, 2 * c.n_inner});
  mid_cols_ = std::max({c.conv_channels, c.d_model, c.n_inner});
  // Workspace per row: the fp32 residual, the normed input, the widest and the middle
  // projection outputs, six int32 index columns (ids_, slot_ids_, rows_, argmax_out_, iota_, steps_).
  const std::size_t row_bytes =
      std::size_t(c.d_model) * (4 + as) + std::size_t(big_cols_ + mid_cols_) * as + 6 * 4;
  if (options_.prefill_chunk == 0)
    options_.prefill_chunk = default_prefill_chunk(row_bytes, model_->device().is_cuda());
  max_rows_ = std::max<int64_t>(options_.prefill_chunk, options_.max_slots);

  // Work out every size first so an out-of-memory error can state the total.
  states_.resize(std::size_t(c.n_layer));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    LayerState& st = states_[std::size_t(i)];
    switch (c.layers[std::size_t(i)]) {
      case LayerKind::LinearAttention: {
        int64_t D = la_shape(c, options_.symmetric_state).state_rows();
        st.bytes_per_slot[0] = std::size_t(c.la_heads * D * c.la_head_dim) * 4;
        st.bytes_per_slot[1] = std::size_t(c.la_heads * D) * 4;
        break;
      }
      case LayerKind::SlidingWindow:
        st.bytes_per_slot[2] = st.bytes_per_slot[3] = std::size_t((c.swa_window + 1) * c.d_model) * as;
        break;
      case LayerKind::Conv:
        st.bytes_per_slot[4] = std::size_t(2 * c.conv_channels) * 4;
        break;
    }
    for (std::size_t b : st.bytes_per_slot) slot_bytes_ += b;
  }
  const std::size_t R = std::size_t(max_rows_);
  std::size_t work = R * row_bytes + std::size_t(options_.max_slots) * std::size_t(c.vocab_padded) * 4;
  const double total = double(slot_bytes_) * double(S) + double(work);

  auto alloc = [&](std::size_t bytes) -> void* {
    try {
      void* p = be_->allocate(bytes ? bytes : 1);
      buffers_.push_back(p);
      return p;
    } catch (const OutOfMemory& e) {
      for (void* q : buffers_) be_->deallocate(q);
      buffers_.clear();
      throw OutOfMemory("Session: cannot allocate " + std::to_string(size_t(total / 1048576.0)) + " MiB (" +
                        std::to_string(options_.max_slots) + " slots x " + std::to_string(slot_bytes_ / 1024) +
                        " KiB of state + " + std::to_string(work / 1048576) + " MiB workspace) on " +
                        model_->device().str() + ": " + e.what());
    }
  };
  for (LayerState& st : states_) {
    if (st.bytes_per_slot[0]) st.s = static_cast<float*>(alloc(st.bytes_per_slot[0] * S));
    if (st.bytes_per_slot[1]) st.z = static_cast<float*>(alloc(st.bytes_per_slot[1] * S));
    if (st.bytes_per_slot[2]) st.ring_k = alloc(st.bytes_per_slot[2] * S);
    if (st.bytes_per_slot[3]) st.ring_v = alloc(st.bytes_per_slot[3] * S);
    if (st.bytes_per_slot[4]) st.tail = static_cast<float*>(alloc(st.bytes_per_slot[4] * S));
  }
  resid_ = static_cast<float*>(alloc(R * std::size_t(c.d_model) * 4));
  xnorm_ = alloc(R * std::size_t(c.d_model) * as);
  big_ = alloc(R * std::size_t(big_cols_) * as);
  mid_ = alloc(R * std::size_t(mid_cols_) * as);
  ids_ = static_cast<int32_t*>(alloc(R * 4));
  slot_ids_ = static_cast<int32_t*>(alloc(R * 4));
  step_in_ = static_cast<int32_t*>(alloc(S * 3 * 4));
  rows_ = static_cast<int32_t*>(alloc(R * 4));
  argmax_out_ = static_cast<int32_t*>(alloc(R * 4));
  iota_ = static_cast<int32_t*>(alloc(R * 4));
  steps_ = static_cast<int32_t*>(alloc(R * 4));
  std::vector<int32_t> iota(R);
  for (std::size_t i = 0; i < R; ++i) iota[i] = int32_t(i);
  be_->copy(iota_, iota.data(), R * 4, CopyKind::HostToDevice);
  positions_.assign(S, 0);
  reset_all();
}

Session::~Session() {
  for (auto& kv : graphs_) be_->destroy_graph(kv.second);
  for (void* p : buffers_) be_->deallocate(p);
  if (gen_hist_) be_->deallocate(gen_hist_);
}

int32_t* Session::gen_history(std::size_t ints) {
  if (ints <= gen_hist_ints_) return gen_hist_;
  if (gen_hist_) be_->deallocate(gen_hist_);
  gen_hist_ = nullptr;
  gen_hist_ints_ = 0;
  try {
    gen_hist_ = static_cast<int32_t*>(be_->allocate(ints * 4));
    gen_hist_ints_ = ints;
  } catch (const OutOfMemory&) {
  }
  return gen_hist_;
}

float* Session::lazy_buffer(float*& p, std::size_t floats) {
  if (!p) {
    try {
      p = static_cast<float*>(be_->allocate(floats * 4));
    } catch (const OutOfMemory& e) {
      throw OutOfMemory("Session: cannot allocate the " + std::to_string(floats * 4 / 1048576) +
                        " MiB logits buffer: " + e.what());
    }
    buffers_.push_back(p);
  }
  return p;
}

void Session::argmax_rows(const float* logits, int64_t n, int64_t cols, int64_t ld, int32_t* dst) {
  ops::ArgmaxParams a;
  a.logits = logits;
  a.rows = n;
  a.vocab = cols;
  a.ld = ld;
  a.out = dst;
  be_->argmax(a);
}

void Session::upload_step(const int32_t* tokens, const int32_t* slots, int64_t n) {
  std::vector<int32_t> in(std::size_t(3 * n));
  for (int64_t i = 0; i < n; ++i) {
    in[std::size_t(i)] = tokens[i];
    in[std::size_t(n + i)] = slots[i];
    in[std::size_t(2 * n + i)] = int32_t(positions_[std::size_t(slots[i])]);
  }
  be_->copy(step_in_, in.data(), in.size() * 4, CopyKind::HostToDevice);
}

void Session::decode_step(int64_t n, StepOut what) {
  const ModelConfig& c = model_->config();
  const std::size_t slots = std::size_t(options_.max_slots);
  // Rows of vocab_padded floats either way: 16-byte aligned rows keep the LM-head GEMM on
  // cuBLASLt's fast kernels (vocab_size = 50257 rows fell back to an align-1 kernel at ~0.7
  // TB/s); generation then only looks at the first vocab_size columns.
  float* out = lazy_buffer(what == StepOut::Logits ? logits_buf_ : gen_logits_, slots * std::size_t(c.vocab_padded));
  const int64_t V = c.vocab_size, Vp = c.vocab_padded;
  auto body = [this, n, out, what, V, Vp]() {
    forward(n, nullptr);
    logits_device_rows(n, iota_, out, Vp);
    if (what == StepOut::GenArgmax) argmax_rows(out, n, V, Vp, argmax_out_);
    if (what == StepOut::GenFeed) argmax_rows(out, n, V, Vp, step_in_);
  };
  if (!options_.use_graphs) return body();
  const int64_t key = n * 4 + int64_t(what);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    void* g = be_->capture_graph(body);
    if (!g) return body();  // this backend has no graphs
    it = graphs_.emplace(key, g).first;
  }
  be_->replay_graph(it->second);
}

void Session::check_slot(int slot, const char* what) const {
  if (slot < 0 || slot >= options_.max_slots)
    throw OutOfRange(std::string(what) + ": slot " + std::to_string(slot) + " out of range [0, " +
                     std::to_string(options_.max_slots) + ")");
}

void Session::check_tokens(const int32_t* tokens, int64_t n) const {
  const int64_t V = model_->config().vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw OutOfRange("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                       " is out of range [0, " + std::to_string(V) + ") (the model's vocab_size)");
}

void Session::check_growth(int slot, int64_t n) const {
  if (options_.max_context > 0 && positions_[std::size_t(slot)] + n > options_.max_context)
    throw InvalidArgument("slot " + std::to_string(slot) + " would reach " +
                          std::to_string(positions_[std::size_t(slot)] + n) + " tokens, past max_context=" +
                          std::to_string(options_.max_context));
}

int64_t Session::position(int slot) const {
  check_slot(slot, "position");
  return positions_[std::size_t(slot)];
}

void Session::reset(int slot) {
  check_slot(slot, "reset");
  for (const LayerState& st : states_)
    st.for_each_buffer([&](uint8_t* base, std::size_t n) { be_->fill_zero(base + n * std::size_t(slot), n); });
  positions_[std::size_t(slot)] = 0;
}

void Session::reset_all() {
  for (const LayerState& st : states_)
    st.for_each_buffer([&](uint8_t* base, std::size_t n) { be_->fill_zero(base, n * std::size_t(options_.max_slots)); });
  std::fill(positions_.begin(), positions_.end(), 0);
}

void Session::forward(int64_t T, const std::vector<Segment>* segs) {
  const Model& m = *model_;
  const ModelConfig& c = m.config();
  const DType act = m.activation_dtype();
  const DType wt = m.weight_dtype();
  const int64_t d = c.d_model;
  const std::size_t as = dtype_size(act);
  const bool decode = segs == nullptr;
  // Row `row` of a workspace matrix with `ld` elements per row.
  auto at = [as](void* base, int64_t ld, int64_t row) { return static_cast<uint8_t*>(base) + std::size_t(row * ld) * as; };

  ops::EmbeddingParams ep;
  ep.ids = decode ? step_in_ : ids_;
  ep.n_tokens = T;
  ep.table = m.embedding();
  ep.dtype = wt;
  ep.vocab = c.vocab_padded;
  ep.dim = d;
  ep.out = resid_;
  be_->embedding(ep);

  auto norm = [&](const void* w) {
    ops::RmsNormParams p;
    p.x = resid_;
    p.weight = w;
    p.y = xnorm_;
    p.dtype = act;
    p.n_rows = T;
    p.dim = d;
    p.eps = c.norm_eps;
    return p;
  };
  auto gemm_params = [&](const void* x, int64_t ldx, const void* w, const void* bias, void* y, int64_t ldy,
                         DType out, bool acc, int64_t n, int64_t k) {
    ops::GemmParams g;
    g.x = x;
    g.ldx = ldx;
    g.w = w;
    g.bias = bias;
    g.bias_f32 = bias && out == DType::F32;  // the only such bias, LayerWeights::mix_out_bias, is fp32
    g.in_dtype = act;
    g.y = y;
    g.ldy = ldy;
    g.out_dtype = out;
    g.accumulate = acc;
    g.m = T;
    g.n = n;
    g.k = k;
    return g;
  };

  for (int64_t li = 0; li < c.n_layer; ++li) {
    const LayerWeights& L = m.layer(li);
    LayerState& st = states_[std::size_t(li)];
    // Each norm feeds one GEMM (and the SwiGLU only fc2): the backend may fuse the pairs.
    be_->rmsnorm_gemm(norm(L.norm1),
                      gemm_params(xnorm_, d, L.mix_in, L.mix_in_bias, big_, big_cols_, act, false, L.mix_in_rows, d));
    switch (L.kind) {
      case LayerKind::Conv: {
        const int64_t C = c.conv_channels;
        if (decode) {
          ops::ConvDecodeParams p;
          p.u = big_; p.ld_u = big_cols_; p.weight = L.conv; p.y = mid_; p.ld_y = mid_cols_;
          p.dtype = act; p.channels = C; p.n_tokens = T; p.slots = step_in_ + T; p.tail = st.tail;
          be_->conv_decode(p);
          break;
        }
        for (const Segment& g : *segs) {
          ops::ConvPrefillParams p;
          p.u = at(big_, big_cols_, g.row); p.ld_u = big_cols_; p.weight = L.conv;
          p.y = at(mid_, mid_cols_, g.row); p.ld_y = mid_cols_;
          p.dtype = act; p.channels = C; p.n_tokens = g.n; p.tail = st.tail + std::size_t(g.slot) * std::size_t(2 * C);
          be_->conv_prefill(p);
        }
        break;
      }
      case LayerKind::LinearAttention: {
        const int64_t qk = c.la_heads * c.la_feature_dim;
        const std::size_t s_floats = st.bytes_per_slot[0] / 4, z_floats = st.bytes_per_slot[1] / 4;
        if (decode) {
          const uint8_t* base = static_cast<const uint8_t*>(big_);
          ops::LaDecodeParams p;
          p.shape = la_shape(c, options_.symmetric_state);
          p.q = base; p.k = base + std::size_t(qk) * as; p.v = base + std::size_t(2 * qk) * as;
          p.ld_q = p.ld_k = p.ld_v = big_cols_;
          p.y = mid_; p.ld_y = mid_cols_; p.dtype = act; p.n_tokens = T; p.slots = step_in_ + T;
          p.state_s = st.s; p.state_z = st.z;
          be_->la_decode(p);
          break;
        }
        // Segments of equal length in consecutive slots run as one batched call (the op's
        // n_seqs: one sequence per state slot, rows one sequence after another).
        for (std::size_t i = 0; i < segs->size();) {
          const Segment& g = (*segs)[i];
          std::size_t j = i + 1;
          while (j < segs->size() && j - i < 65535 && (*segs)[j].n == g.n && (*segs)[j].slot == (*segs)[j - 1].slot + 1 &&
                 (*segs)[j].row == (*segs)[j - 1].row + g.n)
            ++j;
          const uint8_t* base = at(big_, big_cols_, g.row);
          ops::LaPrefillParams p;
          p.shape = la_shape(c, options_.symmetric_state);
          p.q = base; p.k = base + std::size_t(qk) * as; p.v = base + std::size_t(2 * qk) * as;
          p.ld_q = p.ld_k = p.ld_v = big_cols_;
          p.y = at(mid_, mid_cols_, g.row); p.ld_y = mid_cols_; p.dtype = act; p.n_tokens = g.n;
          p.state_s = st.s + std::size_t(g.slot) * s_floats;
          p.state_z = st.z + std::size_t(g.slot) * z_floats;
          p.n_seqs = int64_t(j - i);
          p.seq_stride_q = p.seq_stride_k = p.seq_stride_v = g.n * big_cols_;
          p.seq_stride_y = g.n * mid_cols_;
          be_->la_prefill(p);
          i = j;
        }
        break;
      }
      case LayerKind::SlidingWindow: {
        if (decode) {
          ops::SwaDecodeParams p;
          p.shape = swa_shape(c);
          p.qkv = big_; p.ld_qkv = big_cols_; p.out = mid_; p.ld_out = mid_cols_; p.dtype = act;
          p.n_tokens = T; p.slots = step_in_ + T; p.positions = step_in_ + 2 * T;
          p.ring_k = st.ring_k; p.ring_v = st.ring_v;
          be_->swa_decode(p);
          break;
        }
        for (const Segment& g : *segs) {
          ops::SwaPrefillParams p;
          p.shape = swa_shape(c);
          p.qkv = at(big_, big_cols_, g.row); p.ld_qkv = big_cols_;
          p.out = at(mid_, mid_cols_, g.row); p.ld_out = mid_cols_; p.dtype = act;
          p.n_tokens = g.n; p.start_pos = g.start;
          p.ring_k = static_cast<uint8_t*>(st.ring_k) + std::size_t(g.slot) * st.bytes_per_slot[2];
          p.ring_v = static_cast<uint8_t*>(st.ring_v) + std::size_t(g.slot) * st.bytes_per_slot[3];
          be_->swa_prefill(p);
        }
        break;
      }
    }
    // The residual stream stays fp32: out_proj accumulates straight into it.
    be_->gemm(gemm_params(mid_, mid_cols_, L.mix_out, L.mix_out_bias, resid_, d, DType::F32, true, d, L.mix_out_cols));
    be_->rmsnorm_gemm(norm(L.norm2), gemm_params(xnorm_, d, L.fc1, nullptr, big_, big_cols_, act, false, 2 * c.n_inner, d));
    ops::SwigluParams sp;
    sp.u = big_; sp.ld_u = big_cols_; sp.y = mid_; sp.ld_y = mid_cols_; sp.dtype = act; sp.n = c.n_inner; sp.n_tokens = T;
    be_->swiglu_gemm(sp, gemm_params(mid_, mid_cols_, L.fc2, nullptr, resid_, d, DType::F32, true, d, c.n_inner));
  }
}

// Final norm of the chosen residual rows and the tied LM head into `out` (fp32, device).
void Session::logits_rows(int64_t n_rows, const int32_t* rows_host, float* out, int64_t n_cols) {
  be_->copy(rows_, rows_host, std::size_t(n_rows) * 4, CopyKind::HostToDevice);
  logits_device_rows(n_rows, rows_, out, n_cols);
}

void Session::logits_device_rows(int64_t n_rows, const int32_t* rows_dev, float* out, int64_t n_cols) {
  const Model& m = *model_;
  const ModelConfig& c = m.config();
  ops::RmsNormParams p;
  p.x = resid_;
  p.rows = rows_dev;
  p.weight = m.final_norm();
  p.y = xnorm_;
  p.dtype = m.activation_dtype();
  p.n_rows = n_rows;
  p.dim = c.d_model;
  p.eps = c.norm_eps;
  ops::GemmParams g;
  g.x = xnorm_;
  g.ldx = c.d_model;
  g.w = m.embedding();
  g.in_dtype = m.activation_dtype();
  g.y = out;
  g.ldy = n_cols;
  g.out_dtype = DType::F32;
  g.m = n_rows;
  g.n = n_cols;
  g.k = c.d_model;
  be_->rmsnorm_gemm(p, g);
}

void Session::prefill_into(const int32_t* slots, const int32_t* const* tokens, const int64_t* lens,
                           int64_t n_prompts, LogitsMode mode, float* out, int64_t V) {
  const int64_t chunk = options_.prefill_chunk;
  std::vector<Segment> segs;
  std::vector<int32_t> ids, last_rows;
  int64_t done_rows = 0;  // rows of all prompts passed so far (the row of `out` for All)
  int64_t b = 0, off = 0;  // the next token: prompt b, index off
  while (b < n_prompts) {
    // Pack the next pass: the rest of prompt b, then the following prompts, up to `chunk` rows.
    segs.clear();
    ids.clear();
    last_rows.clear();
    const int64_t first_ending = b;  // the prompts ending in this pass: first_ending .. b - 1 after packing
    int64_t T = 0;
    while (b < n_prompts && T < chunk) {
      const int slot = slots[b];
      const int64_t n = std::min(chunk - T, lens[b] - off);
      segs.push_back(Segment{slot, positions_[std::size_t(slot)], T, n});
      ids.insert(ids.end(), tokens[b] + off, tokens[b] + off + n);
      positions_[std::size_t(slot)] += n;
      T += n;
      off += n;
      if (off == lens[b]) {
        last_rows.push_back(int32_t(T - 1));
        ++b;
        off = 0;
      }
    }
    be_->copy(ids_, ids.data(), std::size_t(T) * 4, CopyKind::HostToDevice);
    forward(T, &segs);
    const int64_t n_ending = int64_t(last_rows.size());
    if (mode == LogitsMode::All) {
      logits_device_rows(T, iota_, out + done_rows * V, V);
    } else if (mode == LogitsMode::Last && n_ending > 0) {
      // A pass that ends no prompt (the head of a long one) needs no logits.
      logits_rows(n_ending, last_rows.data(), out + first_ending * V, V);
    }
    done_rows += T;
  }
}

Tensor Session::prefill(int slot, const int32_t* tokens, int64_t n, LogitsMode mode) {
  check_slot(slot, "prefill");
  if (n < 1) throw InvalidArgument("prefill: empty token list (a prompt needs at least one token)");
  if (!tokens) throw InvalidArgument("prefill: tokens is null");
  check_tokens(tokens, n);
  check_growth(slot, n);
  const int64_t V = model_->config().vocab_padded;
  Tensor out;
  if (mode == LogitsMode::All) out = Tensor::empty(be_, DType::F32, {n, V});
  if (mode == LogitsMode::Last) out = Tensor::empty(be_, DType::F32, {1, V});
  const int32_t s = slot;
  prefill_into(&s, &tokens, &n, 1, mode, static_cast<float*>(out.data()), V);
  be_->synchronize();  // results are complete when returned, usable on any stream
  return out;
}

Tensor Session::prefill_batch(const std::vector<int32_t>& slots, const std::vector<std::vector<int32_t>>& prompts,
                              LogitsMode mode) {
  if (prompts.empty()) throw InvalidArgument("prefill_batch: no prompts");
  if (slots.size() != prompts.size())
    throw InvalidArgument("prefill_batch: " + std::to_string(slots.size()) + " slots but " +
                          std::to_string(prompts.size()) + " prompts");
  std::set<int> seen;
  const int64_t P = int64_t(prompts.size());
  std::vector<const int32_t*> toks(static_cast<std::size_t>(P));
  std::vector<int64_t> lens(static_cast<std::size_t>(P));
  int64_t rows = 0;
  for (int64_t i = 0; i < P; ++i) {
    const int slot = slots[std::size_t(i)];
    const auto& pr = prompts[std::size_t(i)];
    check_slot(slot, "prefill_batch");
    if (!seen.insert(slot).second)
      throw InvalidArgument("prefill_batch: slot " + std::to_string(slot) + " appears twice");
    if (pr.empty())
      throw InvalidArgument("prefill_batch: prompt " + std::to_string(i) + " is empty (a prompt needs at least one token)");
    try {
      check_tokens(pr.data(), int64_t(pr.size()));
    } catch (const OutOfRange& e) {
      throw OutOfRange("prefill_batch: prompt " + std::to_string(i) + ": " + e.what());
    }
    check_growth(slot, int64_t(pr.size()));
    toks[std::size_t(i)] = pr.data();
    lens[std::size_t(i)] = int64_t(pr.size());
    rows += lens[std::size_t(i)];
  }
  const int64_t V = model_->config().vocab_padded;
  Tensor out;
  if (mode == LogitsMode::All) out = Tensor::empty(be_, DType::F32, {rows, V});
  if (mode == LogitsMode::Last) out = Tensor::empty(be_, DType::F32, {P, V});
  prefill_into(slots.data(), toks.data(), lens.data(), P, mode, static_cast<float*>(out.data()), V);
  be_->synchronize();
  return out;
}

Tensor Session::logits(const std::vector<std::vector<int32_t>>& batch) {
  if (batch.empty()) throw InvalidArgument("logits: empty batch");
  const int64_t L = int64_t(batch[0].size());
  if (L < 1) throw InvalidArgument("logits: sequences must have at least one token");
  for (std::size_t b = 0; b < batch.size(); ++b) {
    if (int64_t(batch[b].size()) != L)
      throw InvalidArgument("logits: sequence " + std::to_string(b) + " has " + std::to_string(batch[b].size()) +
                            " tokens but sequence 0 has " + std::to_string(L) + " (use generate() for ragged prompts)");
    check_tokens(batch[b].data(), L);
  }
  if (options_.max_context > 0 && L > options_.max_context)
    throw InvalidArgument("logits: sequences of " + std::to_string(L) + " tokens pass max_context=" +
                          std::to_string(options_.max_context));
  const int64_t B = int64_t(batch.size()), V = model_->config().vocab_padded;
  Tensor out = Tensor::empty(be_, DType::F32, {B, L, V});
  // Groups of up to max_slots sequences in slots 0, 1, ... share prefill passes; their
  // All-mode rows are consecutive rows of `out`.
  const int64_t G = std::min<int64_t>(B, options_.max_slots);
  std::vector<int32_t> slots(static_cast<std::size_t>(G));
  std::vector<const int32_t*> toks(static_cast<std::size_t>(G));
  std::vector<int64_t> lens(static_cast<std::size_t>(G), L);
  for (int64_t b0 = 0; b0 < B; b0 += G) {
    const int64_t n = std::min(G, B - b0);
    for (int64_t i = 0; i < n; ++i) {
      reset(int(i));
      slots[std::size_t(i)] = int32_t(i);
      toks[std::size_t(i)] = batch[std::size_t(b0 + i)].data();
    }
    prefill_into(slots.data(), toks.data(), lens.data(), n, LogitsMode::All,
                 static_cast<float*>(out.data()) + b0 * L * V, V);
  }
  be_->synchronize();
  return out;
}

Tensor Session::decode(const int32_t* slots, const int32_t* tokens, int64_t n) {
  if (n < 1) throw InvalidArgument("decode: no rows");
  if (n > options_.max_slots)
    throw InvalidArgument("decode: " + std::to_string(n) + " rows but the session has " +
                          std::to_string(options_.max_slots) + " slots");
  std::set<int> seen;
  for (int64_t i = 0; i < n; ++i) {
    check_slot(slots[i], "decode");
    if (!seen.insert(slots[i]).second)
      throw InvalidArgument("decode: slot " + std::to_string(slots[i]) + " appears twice in one step");
    check_growth(slots[i], 1);
    if (positions_[std::size_t(slots[i])] >= (int64_t(1) << 31) - 1)
      throw InvalidArgument("decode: slot " + std::to_string(slots[i]) + " reached the 2^31 position limit");
  }
  check_tokens(tokens, n);
  upload_step(tokens, slots, n);
  decode_step(n, StepOut::Logits);
  for (int64_t i = 0; i < n; ++i) positions_[std::size_t(slots[i])] += 1;
  const int64_t V = model_->config().vocab_padded;
  Tensor out = Tensor::empty(be_, DType::F32, {n, V});
  be_->copy(out.data(), logits_buf_, std::size_t(n * V) * 4, CopyKind::DeviceToDevice);
  be_->synchronize();
  return out;
}

void Session::copy_slot(int src, int dst) {
  check_slot(src, "copy_slot");
  check_slot(dst, "copy_slot");
  if (src == dst) return;
  for (const LayerState& st : states_)
    st.for_each_buffer([&](uint8_t* base, std::size_t n) {
      be_->copy(base + n * std::size_t(dst), base + n * std::size_t(src), n, CopyKind::DeviceToDevice);
    });
  positions_[std::size_t(dst)] = positions_[std::size_t(src)];
}

namespace {
const char kSlotMagic[8] = {'B', 'C', 'S', 'L', 'O', 'T', '0', '2'};
struct SlotHeader {
  char magic[8];
  uint64_t slot_bytes;
  int64_t n_layer, d_model;
  int32_t act_dtype, pad;
  int64_t position;
  uint64_t layout;  // slot_layout(): which state sits where
};

// FNV-1a over everything that fixes the meaning of a slot's bytes: configs
// with equal sizes but another layer order or head split (or LA state layout)
// must not match.
uint64_t slot_layout(const ModelConfig& c, bool symmetric_state) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ uint64_t((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  for (LayerKind k : c.layers) mix(int64_t(k));
  for (int64_t v : {c.d_model, c.n_head, c.la_heads, c.la_feature_dim, c.swa_window, c.conv_channels}) mix(v);
  const bool has_la = std::find(c.layers.begin(), c.layers.end(), LayerKind::LinearAttention) != c.layers.end();
  if (symmetric_state && has_la) mix(0x53594d);  // only then: blobs of the full layout keep their hash
  return h;
}
}  // namespace

std::vector<uint8_t> Session::save_slot(int slot) const {
  check_slot(slot, "save_slot");
  SlotHeader h{};
  std::memcpy(h.magic, kSlotMagic, 8);
  h.slot_bytes = slot_bytes_;
  h.n_layer = model_->config().n_layer;
  h.d_model = model_->config().d_model;
  h.act_dtype = int32_t(model_->activation_dtype());
  h.position = positions_[std::size_t(slot)];
  h.layout = slot_layout(model_->config(), options_.symmetric_state);
  std::vector<uint8_t> out(sizeof(h) + slot_bytes_);
  std::memcpy(out.data(), &h, sizeof(h));
  std::size_t off = sizeof(h);
  for (const LayerState& st : states_)
    st.for_each_buffer([&](uint8_t* base, std::size_t n) {
      be_->copy(out.data() + off, base + n * std::size_t(slot), n, CopyKind::DeviceToHost);
      off += n;
    });
  return out;
}

void Session::load_slot(int slot, const std::vector<uint8_t>& bytes) {
  check_slot(slot, "load_slot");
  SlotHeader h{};
  const std::string other_model = "load_slot: the bytes were not saved from a session of this model config and dtype";
  if (bytes.size() >= sizeof(h)) {  // the header first: it names a state-layout mismatch precisely
    std::memcpy(&h, bytes.data(), sizeof(h));
    const uint64_t mine = slot_layout(model_->config(), options_.symmetric_state);
    if (std::memcmp(h.magic, kSlotMagic, 8) == 0 && h.layout != mine &&  // (equal without LA layers)
        h.layout == slot_layout(model_->config(), !options_.symmetric_state))
      throw InvalidArgument(std::string("load_slot: the bytes hold the ") +
                            (options_.symmetric_state ? "full (TaylorExp)" : "symmetric") +
                            " linear-attention state layout, this session the " +
                            (options_.symmetric_state ? "symmetric" : "full") +
                            " one (SessionOptions::symmetric_state)");
  }
  if (bytes.size() != sizeof(h) + slot_bytes_)
    throw InvalidArgument("load_slot: expected " + std::to_string(sizeof(h) + slot_bytes_) + " bytes, got " +
                          std::to_string(bytes.size()) + " (saved from a different model, dtype or version?)");
  if (std::memcmp(h.magic, kSlotMagic, 8) != 0 || h.slot_bytes != slot_bytes_ ||
      h.n_layer != model_->config().n_layer || h.d_model != model_->config().d_model ||
      h.act_dtype != int32_t(model_->activation_dtype()) ||
      h.layout != slot_layout(model_->config(), options_.symmetric_state) || h.position < 0)
    throw InvalidArgument(other_model);
  std::size_t off = sizeof(h);
  for (const LayerState& st : states_)
    st.for_each_buffer([&](uint8_t* base, std::size_t n) {
      be_->copy(base + n * std::size_t(slot), bytes.data() + off, n, CopyKind::HostToDevice);
      off += n;
    });
  positions_[std::size_t(slot)] = h.position;
}

}  // namespace based_core
