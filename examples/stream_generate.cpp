// stream_generate: a minimal C++ program embedding based_core.
//
// Loads a model folder (config.json + model.safetensors), prefills a prompt of
// token ids into a Session's state slot, then decodes one token at a time,
// picking each with a based_core::Sampler and handing it to a callback as soon
// as it exists. The callback here prints it; yours might detokenize it or send
// it over a socket, and can stop the generation by returning false.
//
//   stream_generate MODEL_DIR TOKEN [TOKEN ...] [--device cpu|cuda|cuda:N]
//                   [--dtype bfloat16|float16|float32] [--max-new-tokens N]
//                   [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop ID]
//
// stdout: the new token ids, space-separated, streamed as they are generated.
// stderr: what was loaded and how fast it ran.
#include <based_core/based_core.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace bc = based_core;

// Generates up to `max_new` tokens after `prompt`, using slot 0 of `session`.
// Calls on_token(token) for each new token; stops after a token in `stop`
// (which is kept), when on_token returns false, or after max_new tokens.
// Tokens are the same as Session::generate's for one prompt with the same
// sampling parameters: both use Sampler(params, /*sequence=*/0).
std::vector<int32_t> generate_streaming(bc::Session& session, const std::vector<int32_t>& prompt,
                                        const bc::SamplingParams& params, int64_t max_new,
                                        const std::vector<int32_t>& stop,
                                        const std::function<bool(int32_t)>& on_token) {
  const bc::ModelConfig& config = session.model().config();
  // Logits have vocab_padded columns; only the first vocab_size are real tokens.
  std::vector<float> host(static_cast<std::size_t>(config.vocab_padded));
  bc::Sampler sampler(params, /*sequence=*/0);
  std::vector<int32_t> out;
  if (max_new <= 0) return out;

  session.reset(0);
  // Logits come back on the model's device (host memory for the CPU backend,
  // GPU memory for CUDA) and are complete when the call returns.
  bc::Tensor logits = session.prefill(0, prompt.data(), int64_t(prompt.size()), bc::LogitsMode::Last);
  for (;;) {
    logits.copy_to_host(host.data());
    const int32_t token = sampler.sample(host.data(), config.vocab_size);
    out.push_back(token);
    bool go = on_token(token);
    for (int32_t s : stop) go = go && token != s;
    if (!go || int64_t(out.size()) >= max_new) break;
    const int32_t slot = 0;
    logits = session.decode(&slot, &token, 1);  // feeds the token back, returns the next logits
  }
  return out;
}

int main(int argc, char** argv) {
  std::string model_dir, device, dtype = "bfloat16";
  std::vector<int32_t> prompt, stop;
  bc::SamplingParams params;  // greedy unless --temperature > 0
  int64_t max_new = 32;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        if (i + 1 >= argc) throw bc::InvalidArgument(a + " needs a value");
        const std::string v = argv[++i];
        if (a == "--device") device = v;
        else if (a == "--dtype") dtype = v;
        else if (a == "--max-new-tokens") max_new = std::stoll(v);
        else if (a == "--temperature") params.temperature = std::stof(v);
        else if (a == "--top-k") params.top_k = std::stoi(v);
        else if (a == "--top-p") params.top_p = std::stof(v);
        else if (a == "--seed") params.seed = std::stoull(v);
        else if (a == "--stop") stop.push_back(std::stoi(v));
        else throw bc::InvalidArgument("unknown option " + a);
      } else if (model_dir.empty()) {
        model_dir = a;
      } else {
        prompt.push_back(std::stoi(a));
      }
    }
    if (model_dir.empty() || prompt.empty())
      throw bc::InvalidArgument("usage: stream_generate MODEL_DIR TOKEN [TOKEN ...] [--device D] [--dtype T] "
                                "[--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop ID]");

    bc::LoadOptions load;
    load.device = bc::parse_device(device.empty() ? (bc::cuda_available() ? "cuda" : "cpu") : device);
    load.dtype = bc::parse_model_dtype(dtype);
    // The Model is immutable and may be shared by several Sessions (one per thread).
    std::shared_ptr<const bc::Model> model = bc::Model::load(model_dir, load);
    std::fprintf(stderr, "based_core %s: %s on %s as %s\n", BASED_CORE_VERSION, model->config().summary().c_str(),
                 model->device().str().c_str(), bc::dtype_name(model->dtype()));

    bc::Session session(model);  // one state slot is enough for one sequence
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> tokens = generate_streaming(session, prompt, params, max_new, stop, [](int32_t token) {
      std::printf("%d ", token);
      std::fflush(stdout);  // show each token as soon as it exists
      return true;
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("\n");
    std::fprintf(stderr, "%zu prompt tokens, %zu new tokens in %.3f s (%.1f tok/s incl. prefill)\n", prompt.size(),
                 tokens.size(), dt, double(tokens.size()) / (dt > 1e-9 ? dt : 1e-9));
    return 0;
  } catch (const bc::Error& e) {  // every library error derives from based_core::Error
    std::fprintf(stderr, "stream_generate: %s\n", e.what());
  } catch (const std::exception& e) {  // std::stoi and friends on malformed numbers
    std::fprintf(stderr, "stream_generate: bad argument: %s\n", e.what());
  }
  return 1;
}
