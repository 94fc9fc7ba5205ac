// based-generate: generate from token ids with a BASED model folder, from C++.
//
// The C++ twin of `based-core generate --tokens ...` (python/based_core/cli.py):
// the same options, the same JSON lines on stdout ({"prompt_tokens": [...],
// "tokens": [...]} per prompt) and the same timing line on stderr, so the two
// can be swapped in scripts and compared token for token.
//
// Token ids only: text needs GPT-2's byte-level BPE, which is the Python
// package's job (`based-core generate --tokenizer tokenizer.json --prompt ...`).
//
// Exit status: 0 on success, 2 for bad arguments or a library error (like the
// Python CLI).
#include <based_core/based_core.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char* kUsage =
    "usage: based-generate --model DIR --tokens IDS [--tokens IDS ...] [--device DEV]\n"
    "                      [--dtype {bfloat16,float16,float32}] [--max-new-tokens N]\n"
    "                      [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop IDS]\n"
    "\n"
    "Generates new tokens for each prompt (a batch when --tokens is repeated) and prints one\n"
    "JSON line per prompt: {\"prompt_tokens\": [...], \"tokens\": [...]}.\n"
    "\n"
    "  --model DIR          folder with config.json + model.safetensors\n"
    "  --tokens IDS         prompt token ids, comma- or space-separated (e.g. 464,3139,286)\n"
    "  --device DEV         cpu, cuda or cuda:N (default: cuda when available, else cpu)\n"
    "  --dtype D            weight/activation dtype (default: bfloat16; the CPU computes in fp32)\n"
    "  --max-new-tokens N   new tokens per prompt (default: 32)\n"
    "  --temperature T      0 = greedy (default: 0)\n"
    "  --top-k K            keep the K most likely tokens, 0 = all (default: 0)\n"
    "  --top-p P            nucleus mass in (0, 1] (default: 1)\n"
    "  --seed S             sampling seed (default: random when sampling)\n"
    "  --stop IDS           stop token ids, comma-separated (the stop token is kept)\n"
    "\n"
    "Token ids only: for text in/out use the Python CLI,\n"
    "  based-core generate --model DIR --tokenizer tokenizer.json --prompt TEXT\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string model;
  std::vector<std::vector<int32_t>> prompts;
  std::string device;
  std::string dtype = "bfloat16";
  int64_t max_new_tokens = 32;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  bool has_seed = false;
  uint64_t seed = 0;
  std::vector<int32_t> stop;
};

// Whole-string numeric parses; argparse-like messages on failure.
template <typename T, typename F>
T parse_num(const std::string& opt, const std::string& s, const char* kind, F conv) {
  try {
    std::size_t used = 0;
    T v = conv(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw UsageError("argument " + opt + ": invalid " + kind + " value: '" + s + "'");
}

int64_t parse_int(const std::string& opt, const std::string& s) {
  return parse_num<int64_t>(opt, s, "int", [](const std::string& x, std::size_t* u) { return std::stoll(x, u); });
}

float parse_float(const std::string& opt, const std::string& s) {
  return parse_num<float>(opt, s, "float", [](const std::string& x, std::size_t* u) { return std::stof(x, u); });
}

// "1,2,3" or "1 2 3" -> ids; ids outside int32 are errors (range vs the vocab
// is checked by the library, which names the offending token).
std::vector<int32_t> parse_ids(const std::string& opt, const std::string& s) {
  std::string t = s;
  for (char& ch : t)
    if (ch == ',') ch = ' ';
  std::istringstream in(t);
  std::vector<int32_t> out;
  for (std::string w; in >> w;) {
    int64_t v = parse_int(opt, w);
    if (v < INT32_MIN || v > INT32_MAX) throw UsageError("argument " + opt + ": token id " + w + " out of range");
    out.push_back(int32_t(v));
  }
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string opt = argv[i], val;
    if (opt == "-h" || opt == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    const std::size_t eq = opt.find('=');
    if (opt.rfind("--", 0) == 0 && eq != std::string::npos) {  // --opt=value
      val = opt.substr(eq + 1);
      opt = opt.substr(0, eq);
    } else {
      if (opt.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + opt + "'");
      if (i + 1 >= argc) throw UsageError("argument " + opt + ": expected one argument");
      val = argv[++i];
    }
    if (opt == "--model") a.model = val;
    else if (opt == "--tokens") a.prompts.push_back(parse_ids(opt, val));
    else if (opt == "--device") a.device = val;
    else if (opt == "--dtype") a.dtype = val;
    else if (opt == "--max-new-tokens") a.max_new_tokens = parse_int(opt, val);
    else if (opt == "--temperature") a.temperature = parse_float(opt, val);
    else if (opt == "--top-k") a.top_k = int(parse_int(opt, val));
    else if (opt == "--top-p") a.top_p = parse_float(opt, val);
    else if (opt == "--seed") {
      // Python masks the seed to 64 bits; two's complement does the same here.
      a.seed = val.rfind('-', 0) == 0 ? uint64_t(parse_int(opt, val))
                                      : parse_num<uint64_t>(opt, val, "int", [](const std::string& x, std::size_t* u) {
                                          return uint64_t(std::stoull(x, u));
                                        });
      a.has_seed = true;
    } else if (opt == "--stop") a.stop = parse_ids(opt, val);
    else if (opt == "--prompt" || opt == "--tokenizer")
      throw UsageError(opt + " is not supported: based-generate takes token ids (--tokens); for text use "
                             "`based-core generate --tokenizer tokenizer.json --prompt TEXT`");
    else throw UsageError("unrecognized argument '" + opt + "'");
  }
  if (a.model.empty()) throw UsageError("the following argument is required: --model");
  if (a.prompts.empty()) throw UsageError("give --tokens IDS (repeat it for a batch)");
  if (a.dtype != "bfloat16" && a.dtype != "float16" && a.dtype != "float32")
    throw UsageError("argument --dtype: invalid choice: '" + a.dtype + "' (choose from bfloat16, float16, float32)");
  return a;
}

// The library's exception class, for the error line (the Python CLI prints its type too).
const char* error_kind(const std::exception& e) {
  using namespace based_core;
  if (dynamic_cast<const CheckpointError*>(&e)) return "CheckpointError";
  if (dynamic_cast<const OutOfRange*>(&e)) return "OutOfRange";
  if (dynamic_cast<const InvalidArgument*>(&e)) return "InvalidArgument";
  if (dynamic_cast<const TypeMismatch*>(&e)) return "TypeMismatch";
  if (dynamic_cast<const OutOfMemory*>(&e)) return "OutOfMemory";
  if (dynamic_cast<const CudaError*>(&e)) return "CudaError";
  if (dynamic_cast<const Unsupported*>(&e)) return "Unsupported";
  if (dynamic_cast<const Error*>(&e)) return "Error";
  return "error";
}

std::string json_list(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

int run(const Args& a) {
  using clock = std::chrono::steady_clock;
  namespace bc = based_core;
  const bc::Device device = bc::parse_device(a.device.empty() ? (bc::cuda_available() ? "cuda" : "cpu") : a.device);
  bc::LoadOptions load;
  load.device = device;
  load.dtype = bc::parse_model_dtype(a.dtype);

  const auto t0 = clock::now();
  std::shared_ptr<const bc::Model> model = bc::Model::load(a.model, load);
  const double t_load = std::chrono::duration<double>(clock::now() - t0).count();

  bc::SessionOptions so;
  so.max_slots = int(a.prompts.size());
  bc::Session session(model, so);
  bc::GenerateOptions opt;
  opt.max_new_tokens = a.max_new_tokens;
  opt.sampling.temperature = a.temperature;
  opt.sampling.top_k = a.top_k;
  opt.sampling.top_p = a.top_p;
  // Like the Python CLI: no seed means a fresh one when sampling, 0 when greedy.
  opt.sampling.seed = a.has_seed ? a.seed : (a.temperature > 0.f ? (uint64_t(std::random_device{}()) << 32) ^
                                                                      std::random_device{}()
                                                                 : 0);
  opt.stop_tokens = a.stop;

  const auto t1 = clock::now();
  const std::vector<std::vector<int32_t>> outs = session.generate(a.prompts, opt);
  const double dt = std::chrono::duration<double>(clock::now() - t1).count();

  std::size_t n = 0;
  for (std::size_t i = 0; i < outs.size(); ++i) {
    std::cout << "{\"prompt_tokens\": " << json_list(a.prompts[i]) << ", \"tokens\": " << json_list(outs[i]) << "}\n";
    n += outs[i].size();
  }
  std::cout.flush();
  std::fprintf(stderr, "# %s %s: loaded in %.2f s; %zu prompt(s), %zu new tokens in %.3f s (%.1f tok/s incl. prefill)\n",
               device.str().c_str(), bc::dtype_name(model->dtype()), t_load, a.prompts.size(), n, dt,
               double(n) / (dt > 1e-9 ? dt : 1e-9));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%sbased-generate: error: %s\n", "usage: based-generate --model DIR --tokens IDS [options] (-h for help)\n",
                 e.what());
    return 2;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "based-generate: %s: %s\n", error_kind(e), e.what());
    return 2;
  }
}
