// generate.cpp: the generation loop over a Session (prefill each prompt in
// its own slot -- packed into shared prefill passes, or many short prompts
// together as decode steps -- then batched decode steps until every sequence
// stops).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "based_core/error.h"
#include "based_core/session.h"

namespace based_core {

std::vector<std::vector<int32_t>> Session::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                    const GenerateOptions& options) {
  options.sampling.validate();
  const int64_t P = int64_t(prompts.size());
  if (P == 0) return {};
  if (P > options_.max_slots)
    throw InvalidArgument("generate: " + std::to_string(P) + " prompts but the session has " +
                          std::to_string(options_.max_slots) + " slots (max_batch)");
  if (options.max_new_tokens < 0)
    throw InvalidArgument("max_new_tokens: expected >= 0, got " + std::to_string(options.max_new_tokens));
  for (int64_t i = 0; i < P; ++i) {
    if (prompts[std::size_t(i)].empty())
      throw InvalidArgument("prompt " + std::to_string(i) + " is empty (a prompt needs at least one token)");
    check_tokens(prompts[std::size_t(i)].data(), int64_t(prompts[std::size_t(i)].size()));
    if (options_.max_context > 0 &&
        int64_t(prompts[std::size_t(i)].size()) + options.max_new_tokens > options_.max_context)
      throw InvalidArgument("prompt " + std::to_string(i) + " (" + std::to_string(prompts[std::size_t(i)].size()) +
                            " tokens) + max_new_tokens (" + std::to_string(options.max_new_tokens) +
                            ") exceeds max_context=" + std::to_string(options_.max_context));
  }
  std::vector<std::vector<int32_t>> out(static_cast<std::size_t>(P));
  if (options.max_new_tokens == 0) return out;

  const ModelConfig& c = model_->config();
  const int64_t V = c.vocab_size;  // padded columns are never sampled
  const int64_t Vp = c.vocab_padded;  // row stride of the logits (aligned rows: decode_step)
  const bool greedy = options.sampling.greedy();
  float* logits = lazy_buffer(gen_logits_, std::size_t(options_.max_slots) * std::size_t(Vp));
  std::vector<int32_t> picked(static_cast<std::size_t>(P)), steps(static_cast<std::size_t>(P));

  // Picks the tokens of n rows of `logits` on the device: argmax (already done
  // inside the decode graph when `argmax_done`), or a draw seeded by (seed,
  // sequence, step) -- the same draw the host Sampler makes. seqs_dev holds the
  // rows' sequence indices on the device (sequence i lives in slot i).
  auto pick = [&](int64_t n, const int32_t* seqs_host, const int32_t* seqs_dev, bool argmax_done) {
    if (greedy) {
      if (!argmax_done) argmax_rows(logits, n, V, Vp, argmax_out_);
    } else {
      for (int64_t i = 0; i < n; ++i) steps[std::size_t(i)] = int32_t(out[std::size_t(seqs_host[i])].size());
      be_->copy(steps_, steps.data(), std::size_t(n) * 4, CopyKind::HostToDevice);
      ops::SampleParams sp;
      sp.logits = logits;
      sp.rows = n;
      sp.vocab = V;
      sp.ld = Vp;
      sp.temperature = options.sampling.temperature;
      sp.top_k = options.sampling.top_k;
      sp.top_p = options.sampling.top_p;
      sp.seed = options.sampling.seed;
      sp.seqs = seqs_dev;
      sp.steps = steps_;
      sp.out = argmax_out_;
      be_->sample(sp);
    }
    be_->copy(picked.data(), argmax_out_, std::size_t(n) * 4, CopyKind::DeviceToHost);
  };

  std::vector<int32_t> active;
  auto accept = [&](int seq, int32_t tok) {
    out[std::size_t(seq)].push_back(tok);
    bool go = options.on_token ? options.on_token(seq, tok) : true;
    bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), tok) != options.stop_tokens.end();
    if (go && !stop && int64_t(out[std::size_t(seq)].size()) < options.max_new_tokens) active.push_back(seq);
  };

  // Prefill: each prompt in its own slot, so ragged prompts need no padding. The prompts are
  // packed into shared prefill passes (the mixers still run per sequence) -- except many short
  // prompts, which run together as decode steps, position by position: the decode mixers take
  // all slots in one launch, where a packed pass launches the conv and sliding-window kernels
  // once per prompt (128 one-token prompts: one step). Only where that is at least
  // kLockstepGain times fewer passes over the weights than one prefill pass per prompt.
  constexpr int64_t kLockstepMaxLen = 8, kLockstepGain = 4;
  std::vector<int32_t> lock;
  int64_t lock_len = 0;
  for (int64_t i = 0; i < P; ++i)
    if (int64_t(prompts[std::size_t(i)].size()) <= kLockstepMaxLen) {
      lock.push_back(int32_t(i));
      lock_len = std::max(lock_len, int64_t(prompts[std::size_t(i)].size()));
    }
  if (int64_t(lock.size()) < kLockstepGain * lock_len) lock.clear();
  std::vector<char> in_lock(static_cast<std::size_t>(P), 0);
  for (int32_t i : lock) in_lock[std::size_t(i)] = 1;

  // The other prompts: packed into prefill passes together (prefill_into), one logits row each.
  std::vector<int32_t> seqs;
  std::vector<const int32_t*> toks;
  std::vector<int64_t> lens;
  for (int64_t i = 0; i < P; ++i) {
    if (in_lock[std::size_t(i)]) continue;
    reset(int(i));
    seqs.push_back(int32_t(i));
    toks.push_back(prompts[std::size_t(i)].data());
    lens.push_back(int64_t(prompts[std::size_t(i)].size()));
  }
  if (!seqs.empty()) {
    const int64_t n = int64_t(seqs.size());
    prefill_into(seqs.data(), toks.data(), lens.data(), n, LogitsMode::Last, logits, Vp);
    if (!greedy) be_->copy(slot_ids_, seqs.data(), std::size_t(n) * 4, CopyKind::HostToDevice);
    pick(n, seqs.data(), slot_ids_, false);
    for (int64_t r = 0; r < n; ++r) accept(seqs[std::size_t(r)], picked[std::size_t(r)]);
  }

  std::vector<int32_t> slots, tokens;
  // A batched step over (slots, tokens) at the slots' positions; picks the rows' next tokens.
  auto step = [&]() {
    const int64_t n = int64_t(slots.size());
    upload_step(tokens.data(), slots.data(), n);
    decode_step(n, greedy ? StepOut::GenArgmax : StepOut::GenLogits);
    for (int32_t s : slots) positions_[std::size_t(s)] += 1;
    pick(n, slots.data(), step_in_ + n, true);  // the step's slots: its rows' sequences
  };

  for (int32_t i : lock) reset(int(i));
  for (int64_t j = 0; j < lock_len; ++j) {  // the short prompts' tokens at position j
    slots.clear();
    tokens.clear();
    for (int32_t i : lock)
      if (int64_t(prompts[std::size_t(i)].size()) > j) {
        slots.push_back(i);
        tokens.push_back(prompts[std::size_t(i)][std::size_t(j)]);
      }
    step();
    for (std::size_t r = 0; r < slots.size(); ++r)  // a prompt that ended here has its first token
      if (int64_t(prompts[std::size_t(slots[r])].size()) == j + 1) accept(slots[r], picked[r]);
  }

  // Greedy decoding with nothing that can stop a sequence early (no stop tokens, no
  // callback): every running sequence runs to max_new_tokens, so each step's argmax
  // is written straight over its own token ids, where the next step reads them
  // (StepOut::GenFeed), and the host queues all steps without waiting for any; the
  // tokens are kept on the device and read back once at the end.
  // BASED_CORE_QUEUED_DECODE=0 takes the step-by-step loop instead (for A/B timings).
  const char* queued_env = std::getenv("BASED_CORE_QUEUED_DECODE");
  const bool queued = !(queued_env && std::string(queued_env) == "0");
  if (queued && greedy && !options.on_token && options.stop_tokens.empty() && !active.empty()) {
    const int64_t n = int64_t(active.size());
    const int64_t K = options.max_new_tokens - 1;  // steps left: each sequence has its first token
    // [K][n] tokens made, then [K][n] positions; without the memory, the loop below does it
    int32_t* hist = gen_history(std::size_t(2 * K * n));
    if (hist) {
      slots = active;
      active.clear();
      tokens.resize(std::size_t(n));
      std::vector<int32_t> pos(std::size_t(K * n)), made(std::size_t(K * n));
      for (int64_t i = 0; i < n; ++i) {
        tokens[std::size_t(i)] = out[std::size_t(slots[std::size_t(i)])].back();
        for (int64_t k = 0; k < K; ++k)
          pos[std::size_t(k * n + i)] = int32_t(positions_[std::size_t(slots[std::size_t(i)])] + k);
      }
      be_->copy(hist + K * n, pos.data(), pos.size() * 4, CopyKind::HostToDevice);
      upload_step(tokens.data(), slots.data(), n);
      for (int64_t k = 0; k < K; ++k) {
        if (k > 0) be_->copy(step_in_ + 2 * n, hist + (K + k) * n, std::size_t(n) * 4, CopyKind::DeviceToDevice);
        decode_step(n, StepOut::GenFeed);
        be_->copy(hist + k * n, step_in_, std::size_t(n) * 4, CopyKind::DeviceToDevice);
      }
      be_->copy(made.data(), hist, made.size() * 4, CopyKind::DeviceToHost);
      for (int32_t s : slots) positions_[std::size_t(s)] += K;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < n; ++i) out[std::size_t(slots[std::size_t(i)])].push_back(made[std::size_t(k * n + i)]);
    }
  }

  // Decode: one batched step over the sequences still running.
  while (!active.empty()) {
    slots = active;
    active.clear();
    const int64_t n = int64_t(slots.size());
    tokens.resize(std::size_t(n));
    for (int64_t i = 0; i < n; ++i) tokens[std::size_t(i)] = out[std::size_t(slots[std::size_t(i)])].back();
    step();
    for (int64_t i = 0; i < n; ++i) accept(slots[std::size_t(i)], picked[std::size_t(i)]);
  }
  return out;
}

}  // namespace based_core
