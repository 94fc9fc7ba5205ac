// backends.cpp: creating backends; loading the CUDA backend library lazily.
//
// The CUDA backend lives in its own shared library so that the core (and the
// Python extension) never links the CUDA runtime or cuBLAS: importing
// based_core on a machine without a GPU touches nothing CUDA. The first CUDA
// request dlopen()s the library; a build that links it statically registers
// its factory instead (register_cuda_backend_factory).
#include "based_core/backends.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "backends_internal.h"
#include "based_core/error.h"

namespace based_core {

namespace {

struct CudaLib {
  std::mutex mu;
  bool tried = false;
  std::string error;
  CudaBackendFactory create = nullptr;
  CudaDeviceCountFn count = nullptr;
  std::string path_hint;
};

CudaLib& cuda_lib() {
  static CudaLib* lib = new CudaLib();  // leaked on purpose: no teardown at exit
  return *lib;
}

// Loads the library once; returns an empty string on success or why it failed.
std::string ensure_cuda_lib() {
  CudaLib& lib = cuda_lib();
  std::lock_guard<std::mutex> lock(lib.mu);
  if (lib.create) return "";
  if (lib.tried) return lib.error;
  lib.tried = true;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("BASED_CORE_CUDA_LIB")) candidates.push_back(env);
  if (!lib.path_hint.empty()) candidates.push_back(lib.path_hint);
  // Installed C++ use: next to the binary holding this code (libbased_core.so,
  // or the program that linked the static library), then the loader's search,
  // then the lib dir this build installs into.
  Dl_info self{};
  if (::dladdr(reinterpret_cast<void*>(&ensure_cuda_lib), &self) && self.dli_fname &&
      std::strchr(self.dli_fname, '/')) {
    std::string path = self.dli_fname;
    path = path.substr(0, path.rfind('/')) + "/libbased_core_cuda.so";
    if (path != lib.path_hint) candidates.push_back(path);
  }
  candidates.push_back("libbased_core_cuda.so");
#ifdef BASED_CORE_INSTALL_LIBDIR
  candidates.push_back(BASED_CORE_INSTALL_LIBDIR "/libbased_core_cuda.so");
#endif
  std::string errors;
  for (const auto& path : candidates) {
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = ::dlerror();
      errors += "\n  " + path + ": " + (e ? e : "unknown error");
      continue;
    }
    auto create = reinterpret_cast<CudaBackendFactory>(::dlsym(h, "based_core_cuda_create_backend"));
    auto count = reinterpret_cast<CudaDeviceCountFn>(::dlsym(h, "based_core_cuda_device_count"));
    if (!create || !count) {
      errors += "\n  " + path + ": missing entry points";
      continue;
    }
    lib.create = create;
    lib.count = count;
    return "";
  }
  lib.error = "the CUDA backend library could not be loaded (is this a CPU-only build, or is "
              "libcublasLt.so.13 missing? `pip install nvidia-cublas` provides it):" + errors;
  return lib.error;
}

}  // namespace

void register_cuda_backend_factory(CudaBackendFactory create, CudaDeviceCountFn count) {
  CudaLib& lib = cuda_lib();
  std::lock_guard<std::mutex> lock(lib.mu);
  lib.create = create;
  lib.count = count;
}

void set_cuda_library_path(const std::string& path) {
  CudaLib& lib = cuda_lib();
  std::lock_guard<std::mutex> lock(lib.mu);
  lib.path_hint = path;
}

std::shared_ptr<Backend> make_cuda_backend(int index) {
  std::string err = ensure_cuda_lib();
  if (!err.empty()) throw Unsupported(err);
  if (index < 0) throw InvalidArgument("device: CUDA device index must be >= 0, got " + std::to_string(index));
  char msg[1024] = {0};
  Backend* b = cuda_lib().create(index, msg, sizeof(msg));
  if (!b) throw CudaError(std::string("cannot create the CUDA backend on cuda:") + std::to_string(index) + ": " + msg);
  return std::shared_ptr<Backend>(b);
}

bool cuda_available() {
  try {
    if (!ensure_cuda_lib().empty()) return false;
    char msg[512] = {0};
    return cuda_lib().count(msg, sizeof(msg)) > 0;
  } catch (...) {
    return false;
  }
}

int cuda_device_count() {
  if (!ensure_cuda_lib().empty()) return 0;
  char msg[512] = {0};
  int n = cuda_lib().count(msg, sizeof(msg));
  return n < 0 ? 0 : n;
}

std::shared_ptr<Backend> backend_for(const Device& device) {
  if (device.kind == DeviceKind::CPU) {
    static std::shared_ptr<Backend>* cpu = new std::shared_ptr<Backend>(make_cpu_backend());
    return *cpu;
  }
  // Each CUDA backend owns a stream, a cuBLASLt handle and a workspace, so
  // every caller (a Model's loader, each Session) gets its own.
  return make_cuda_backend(device.index);
}

std::shared_ptr<Backend> shared_backend(const Device& device) {
  static std::mutex mu;
  static auto* cache = new std::map<std::pair<int, int>, std::shared_ptr<Backend>>();  // never torn down at exit
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[{int(device.kind), device.index}];
  if (!slot) slot = backend_for(device);
  return slot;
}

}  // namespace based_core
