// based_core/session.h: running a Model over sequences held in state slots.
//
// A Session owns, for each of `max_slots` sequences, the recurrent state of
// every layer: the fp32 linear-attention state S [H, D, hd] and normaliser
// z [H, D] (D = 153 in the default symmetric layout, 273 in the TaylorExp
// one: SessionOptions::symmetric_state), a ring buffer of the last window+1 post-RoPE keys and values of
// each sliding-window layer, and the last two conv inputs of each BaseConv
// layer. Its memory does not grow with the sequence length.
//
// Ownership: a Session holds a shared_ptr to its Model, and owns its state
// and workspace (device memory of the model's device, freed by ~Session).
// Tensors it returns are new allocations that stay valid after the Session
// is gone.
//
// Threading: a Session is used by one thread at a time (any thread; it is
// not tied to the one that created it). Several Sessions on one Model may run
// concurrently on different threads: each has its own backend (on the GPU its
// own stream, cuBLASLt handle and workspace), and the Model is only read.
//
// Synchronisation: calls that return results (prefill, decode, logits,
// generate, save_slot) return after the device has finished that work, so
// the results can be read from any thread or stream. reset, copy_slot and
// load_slot may return before the device is done; the Session's later calls
// see their effect.
//
// Errors: a throwing call leaves the Session usable; the slots it was
// writing are in an unspecified (memory-safe) state until reset(). prefill,
// decode, generate and load_slot check their arguments (slot ids, token ids,
// lengths, max_context) before changing any state.
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

/// Options of a Session; fixed for its lifetime.
struct SessionOptions {
  /// Sequences held at once, 1..2^20: the largest decode batch and generate()
  /// batch. Memory: max_slots * state_bytes_per_slot() plus the workspace.
  int max_slots = 1;
  /// Rows (tokens) per forward pass while prefilling, 1..2^20, or 0 for the
  /// device's default: 512 on the CPU; on CUDA the largest of 32768, 16384 and
  /// 8192 rows whose workspace fits in 1 GiB (based-360m: 32768 rows, ~960 MiB;
  /// based-1b: 16384 rows, ~840 MiB). Longer prompts are run in chunks (the
  /// state carries over); prefill_batch packs several prompts into one pass.
  /// The workspace grows linearly with max(prefill_chunk, max_slots) rows
  /// (based-1b on CUDA: ~53 KB per row); set a smaller chunk to save memory.
  int64_t prefill_chunk = 512;
  /// > 0: a call that would grow a sequence past this many tokens (prompt plus
  /// generated) throws InvalidArgument instead. 0: no limit (memory does not
  /// grow with length; quality beyond the training context is the model's).
  int64_t max_context = 0;
  /// Replay decode steps from CUDA graphs captured on first use (one per batch
  /// size and kind of step). Saves launch overhead on the GPU; the results are
  /// the same either way. Ignored by the CPU backend.
  bool use_graphs = true;
  /// Keep each linear-attention layer's state in the exact symmetric layout
  /// (ops.h LinearAttentionShape: 153 rows instead of 273 for feature dim 16).
  /// The outputs are the same up to fp32 rounding; the state is 44% smaller,
  /// so decode moves less memory per step and more sequences fit. false keeps
  /// the authors' TaylorExp row order (e.g. to compare states with theirs).
  bool symmetric_state = true;
};

/// Which logits a prefill returns: none, the last token's, or every token's.
enum class LogitsMode { None, Last, All };

/// Options of Session::generate.
struct GenerateOptions {
  int64_t max_new_tokens = 16;  ///< new tokens per prompt at most (>= 0; 0 returns empty lists)
  SamplingParams sampling;      ///< greedy by default (sampler.h)
  std::vector<int32_t> stop_tokens;  ///< a sequence ends after emitting one of these (it is kept)
  /// Called for each new token (sequence index = prompt index, token) as soon
  /// as it is picked, on the thread that called generate(), in generation
  /// order (each sequence's tokens in order). Return false to stop that
  /// sequence after this token (it is kept). It must not call into this
  /// Session; an exception it throws propagates out of generate(). May be empty.
  std::function<bool(int, int32_t)> on_token;
};

/// Runs a Model over up to max_slots sequences, each held in a state slot
/// (see the top of this file for ownership, threading and errors).
class Session {
 public:
  /// Allocates the state slots (zeroed) and the workspace on the model's
  /// device and creates this Session's backend. Throws InvalidArgument for a
  /// null model or bad options, OutOfMemory stating the bytes needed,
  /// Unsupported/CudaError when the model's device cannot be used.
  Session(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  /// Frees the state, workspace and captured graphs; releases the Model.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// The Model this Session runs; valid as long as the Session.
  const Model& model() const { return *model_; }
  int max_slots() const { return options_.max_slots; }
  /// The options in effect (prefill_chunk 0 resolved to its device default).
  const SessionOptions& options() const { return options_; }
  /// Tokens consumed so far by `slot` (the next token's absolute position).
  /// Throws OutOfRange for a bad slot.
  int64_t position(int slot) const;
  /// Bytes of recurrent state per slot (device memory). The Session holds
  /// max_slots() times this, plus a workspace; save_slot() returns a little more.
  std::size_t state_bytes_per_slot() const { return slot_bytes_; }

  /// Empties a slot (zero state, position 0). Throws OutOfRange for a bad slot.
  void reset(int slot);
  /// Empties every slot.
  void reset_all();

  /// Appends `n` >= 1 tokens (host memory, read during the call) to the
  /// sequence in `slot` (a prompt, or more of one) and returns fp32 logits on
  /// the model's device: [1, vocab_padded] for Last, [n, vocab_padded] for
  /// All, an empty tensor for None. Splitting a sequence over several calls
  /// continues it where the last call stopped (the same math as one call).
  /// Throws OutOfRange for a token id outside [0, vocab_size) or a bad slot,
  /// InvalidArgument for n < 1, null tokens or passing max_context.
  Tensor prefill(int slot, const int32_t* tokens, int64_t n, LogitsMode mode = LogitsMode::Last);

  /// prefill() of several sequences in one call: prompts[i] is appended to the
  /// sequence in slots[i]. The prompts are packed into forward passes of up to
  /// prefill_chunk rows (a prompt may span two passes), so the weight GEMMs,
  /// norms and MLP run once over all of them; each mixer (conv, linear
  /// attention, sliding window) still sees each sequence alone, so the result
  /// is what a prefill() per slot gives. Logits: Last -> [P, vocab_padded],
  /// row i for prompts[i]; All -> [sum of lengths, vocab_padded], the prompts'
  /// rows one after another; None -> an empty tensor. Throws InvalidArgument
  /// for no prompts, slots.size() != prompts.size(), an empty prompt, a slot
  /// given twice or passing max_context; OutOfRange for a bad slot or token id
  /// (all checked before any state changes).
  Tensor prefill_batch(const std::vector<int32_t>& slots, const std::vector<std::vector<int32_t>>& prompts,
                       LogitsMode mode = LogitsMode::Last);

  /// Full-sequence logits of equal-length sequences, each run from an empty
  /// state: fp32 [B, L, vocab_padded] on the model's device. Up to max_slots
  /// sequences at a time share prefill passes (as prefill_batch), in slots
  /// 0 .. min(B, max_slots) - 1, which are used as scratch: whatever they held
  /// is lost. Throws InvalidArgument for an empty batch, empty or unequal
  /// lengths or sequences longer than max_context, OutOfRange for bad token ids.
  Tensor logits(const std::vector<std::vector<int32_t>>& batch);

  /// Appends one token to each of `n` distinct slots (host arrays of n
  /// entries, read during the call) in one batched step, and returns their
  /// logits [n, vocab_padded] (fp32, model device), row i for slots[i]. Each
  /// slot's position grows by one; an empty slot takes the token as its first.
  /// Throws InvalidArgument for n < 1, n > max_slots, a repeated slot or
  /// passing max_context; OutOfRange for a bad slot or token id.
  Tensor decode(const int32_t* slots, const int32_t* tokens, int64_t n);

  /// Generates up to max_new_tokens for each prompt, using slots 0..P-1
  /// (P <= max_slots; those slots are reset first, the others are untouched).
  /// Prompts may have different lengths: each is prefilled alone, so no
  /// padding enters any state, and a prompt gives the same tokens alone or in
  /// a batch (also when sampling: sequence i draws from Sampler(sampling, i)).
  /// Padded vocabulary ids are never picked. Returns the new tokens of each
  /// prompt (stop tokens included), also streamed through options.on_token.
  /// Greedy generation with no stop tokens and no on_token runs every decode
  /// step without waiting for the host between steps (the tokens are read back
  /// once, at the end): the fastest form for fixed-length batches.
  /// Throws InvalidArgument for more prompts than slots, an empty prompt, bad
  /// sampling parameters or passing max_context; OutOfRange for bad token ids.
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const GenerateOptions& options);

  /// Copies the state and position of slot `src` into `dst` (on the device;
  /// src == dst does nothing). Continuing both afterwards gives bit-identical
  /// results. Throws OutOfRange for a bad slot.
  void copy_slot(int src, int dst);
  /// Serialises a slot (a header with the position and the state's layout,
  /// then every layer's state) to host bytes: state_bytes_per_slot() plus a
  /// small header. The bytes are for load_slot() in this build of based_core
  /// on this machine (native byte order), not a long-term file format.
  /// Throws OutOfRange for a bad slot.
  std::vector<uint8_t> save_slot(int slot) const;
  /// Restores bytes from save_slot() of any Session (this one or another, on
  /// any slot) of a Model with the same config and dtype; the slot then
  /// continues bit-identically to the saved one. Throws InvalidArgument, and
  /// leaves the slot as it was, when the bytes are not a slot image of this
  /// layout (the check covers the size, layer count, width and activation
  /// dtype); OutOfRange for a bad slot.
  void load_slot(int slot, const std::vector<uint8_t>& bytes);

 private:
  struct LayerState;
  void check_slot(int slot, const char* what) const;
  void check_tokens(const int32_t* tokens, int64_t n) const;
  void check_growth(int slot, int64_t n) const;
  // Rows [row, row + n) of a prefill pass: the tokens at positions start.. of the
  // sequence in `slot`.
  struct Segment {
    int slot;
    int64_t start, row, n;
  };
  // One forward pass over T rows. Prefill: token ids in ids_, `segs` cover the rows
  // in order. Decode (segs null): row i is token step_in_[i] of the sequence in
  // slot step_in_[T + i] at position step_in_[2T + i] (upload_step).
  void forward(int64_t T, const std::vector<Segment>* segs);
  // Uploads one decode step's inputs to step_in_ in one copy: the rows' tokens and
  // slots, and the slots' current positions (positions_).
  void upload_step(const int32_t* tokens, const int32_t* slots, int64_t n);
  // Prefills prompts (tokens[i], lens[i]) into slots[i] (checked by the caller),
  // packing them into passes of up to prefill_chunk rows, and writes their logits
  // (n_cols columns per row) to `out` (device; rows as prefill_batch says).
  void prefill_into(const int32_t* slots, const int32_t* const* tokens, const int64_t* lens, int64_t n_prompts,
                    LogitsMode mode, float* out, int64_t n_cols);
  void logits_rows(int64_t n_rows, const int32_t* rows_host, float* out, int64_t n_cols);
  void logits_device_rows(int64_t n_rows, const int32_t* rows_dev, float* out, int64_t n_cols);
  // One decode step over n rows whose inputs are already in step_in_: forward,
  // logits (into logits_buf_ or, for generate, gen_logits_) and, for greedy
  // generate, argmax -- into argmax_out_ (GenArgmax) or over the step's own token
  // ids (GenFeed: the next step reads them there, so generate's fixed-length loop
  // needs no host round trip between steps). Replayed from a cached graph when the
  // backend has graphs.
  enum class StepOut { Logits = 0, GenLogits = 1, GenArgmax = 2, GenFeed = 3 };
  void decode_step(int64_t n, StepOut what);
  float* lazy_buffer(float*& p, std::size_t floats);
  // generate's device buffer of >= `ints` int32 (grown as needed, kept for the next
  // call), or nullptr when the device has no memory for it.
  int32_t* gen_history(std::size_t ints);
  // Greedy tokens of n rows of `logits` (cols columns each) into `dst` (device).
  void argmax_rows(const float* logits, int64_t n, int64_t cols, int64_t ld, int32_t* dst);

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
  int32_t* slot_ids_ = nullptr;      // sequence index of each row of generate's prefill pick
  int32_t* step_in_ = nullptr;       // a decode step's [tokens | slots | positions] (upload_step)
  int32_t* rows_ = nullptr;
  int32_t* argmax_out_ = nullptr;
  int32_t* steps_ = nullptr;         // per-row draw counters for the sample op
  int32_t* iota_ = nullptr;          // 0, 1, 2, ... (rows of a decode step)
  float* logits_buf_ = nullptr;      // [max_slots, vocab_padded], allocated on first decode()
  float* gen_logits_ = nullptr;      // [max_slots, vocab_padded], allocated on first generate()
  int32_t* gen_hist_ = nullptr;      // gen_history(): tokens and positions of queued decode steps
  std::size_t gen_hist_ints_ = 0;
  std::map<int64_t, void*> graphs_;  // (rows * 4 + StepOut) -> captured decode step
  int64_t big_cols_ = 0, mid_cols_ = 0;
};

}  // namespace based_core
