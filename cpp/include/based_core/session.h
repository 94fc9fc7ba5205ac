// based_core/session.h: running a Model over sequences held in state slots.
//
// A Session owns, for each of `max_slots` sequences, the recurrent state of
// every layer: the fp32 linear-attention state S [H, 273, hd] and normaliser
// z [H, 273], a ring buffer of the last window+1 post-RoPE keys and values of
// each sliding-window layer, and the last two conv inputs of each BaseConv
// layer. Its memory does not grow with the sequence length.
//
// Threading: a Session is used by one thread at a time; several Sessions on
// one Model may run concurrently on different threads (each has its own
// stream and workspace on the GPU).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "based_core/model.h"
#include "based_core/sampler.h"
#include "based_core/tensor.h"

namespace based_core {

struct SessionOptions {
  int max_slots = 1;             ///< sequences held at once (decode batch size limit)
  int64_t prefill_chunk = 512;   ///< tokens per forward pass while prefilling (bounds workspace)
  int64_t max_context = 0;       ///< > 0: refuse to grow a sequence past this many tokens
  bool use_graphs = true;        ///< replay decode steps from CUDA graphs (one per batch size)
};

/// Which logits a prefill returns.
enum class LogitsMode { None, Last, All };

/// Options of Session::generate.
struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;  ///< a sequence ends after emitting one of these (it is kept)
  /// Called for each new token (sequence index, token); return false to stop that sequence.
  std::function<bool(int, int32_t)> on_token;
};

class Session {
 public:
  /// Allocates the state slots and workspace. Throws OutOfMemory stating the
  /// bytes needed, InvalidArgument for bad options.
  Session(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Model& model() const { return *model_; }
  int max_slots() const { return options_.max_slots; }
  /// Tokens consumed so far by `slot` (the next token's absolute position).
  int64_t position(int slot) const;
  /// Bytes of state per slot and of the workspace.
  std::size_t state_bytes_per_slot() const { return slot_bytes_; }

  /// Empties a slot (zero state, position 0).
  void reset(int slot);
  void reset_all();

  /// Appends `n` tokens to the sequence in `slot` (a prompt, or more of one)
  /// and returns fp32 logits on the model's device: [1, vocab_padded] for
  /// Last, [n, vocab_padded] for All, an empty tensor for None.
  /// Throws OutOfRange for a token id >= vocab_size or a bad slot.
  Tensor prefill(int slot, const int32_t* tokens, int64_t n, LogitsMode mode = LogitsMode::Last);

  /// Full-sequence logits of equal-length sequences, each run alone from an
  /// empty state in slot 0 (which is reset): fp32 [B, L, vocab_padded].
  Tensor logits(const std::vector<std::vector<int32_t>>& batch);

  /// Appends one token to each of `n` distinct slots and returns their logits
  /// [n, vocab_padded] (fp32, model device).
  Tensor decode(const int32_t* slots, const int32_t* tokens, int64_t n);

  /// Generates up to max_new_tokens for each prompt, using slots 0..P-1
  /// (P <= max_slots; the slots are reset first). Prompts may have different
  /// lengths: each is prefilled alone, so no padding enters any state, and a
  /// prompt gives the same tokens alone or in a batch. Returns the new tokens.
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const GenerateOptions& options);

  /// Copies the state and position of slot `src` into `dst`.
  void copy_slot(int src, int dst);
  /// Serialises a slot (position and every layer's state) to bytes.
  std::vector<uint8_t> save_slot(int slot) const;
  /// Restores bytes from save_slot of a Session on the same model config and
  /// dtype. Throws InvalidArgument when they do not match.
  void load_slot(int slot, const std::vector<uint8_t>& bytes);

 private:
  struct LayerState;
  void check_slot(int slot, const char* what) const;
  void check_tokens(const int32_t* tokens, int64_t n) const;
  void check_growth(int slot, int64_t n) const;
  // One forward pass over T rows. Prefill: rows are consecutive tokens of
  // `slot` from `start`. Decode: row i is slot slots[i] at its position.
  void forward(int64_t T, bool decode, int slot, int64_t start);
  // prefill writing its logits (n_cols columns per row) to `out` (device; rows as `mode` says).
  void prefill_into(int slot, const int32_t* tokens, int64_t n, LogitsMode mode, float* out, int64_t n_cols);
  void logits_rows(int64_t n_rows, const int32_t* rows_host, float* out, int64_t n_cols);
  void logits_device_rows(int64_t n_rows, const int32_t* rows_dev, float* out, int64_t n_cols);
  // One decode step over n rows whose ids/slots/positions are already on the
  // device: forward, logits (into logits_buf_ or, for generate, gen_logits_)
  // and, for greedy generate, argmax. Replayed from a cached graph when the
  // backend has graphs.
  enum class StepOut { Logits = 0, GenLogits = 1, GenArgmax = 2 };
  void decode_step(int64_t n, StepOut what);
  float* lazy_buffer(float*& p, std::size_t floats);

  std::shared_ptr<const Model> model_;
  std::shared_ptr<Backend> be_;
  SessionOptions options_;
  int64_t max_rows_ = 0;
  std::vector<int64_t> positions_;
  std::vector<LayerState> states_;
  std::vector<void*> buffers_;
  std::size_t slot_bytes_ = 0;
  // workspace
  float* resid_ = nullptr;
  void* xnorm_ = nullptr;
  void* big_ = nullptr;
  void* mid_ = nullptr;
  int32_t* ids_ = nullptr;
  int32_t* slot_ids_ = nullptr;
  int32_t* pos_ids_ = nullptr;
  int32_t* rows_ = nullptr;
  int32_t* argmax_out_ = nullptr;
  int32_t* iota_ = nullptr;          // 0, 1, 2, ... (rows of a decode step)
  float* logits_buf_ = nullptr;      // [max_slots, vocab_padded], allocated on first decode()
  float* gen_logits_ = nullptr;      // [max_slots, vocab_size], allocated on first generate()
  std::map<int64_t, void*> graphs_;  // (rows * 3 + StepOut) -> captured decode step
  int64_t big_cols_ = 0, mid_cols_ = 0;
};

}  // namespace based_core
