// safetensors.cpp: see safetensors.h.
#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "based_core/error.h"

namespace based_core {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& msg) {
  throw CheckpointError(file + ": " + msg);
}

// Deeper JSON is refused while parsing: nlohmann's dump() recurses, so a
// header of a few MB of '[' would overflow the stack. Real headers nest 3 levels.
constexpr int kMaxJsonDepth = 32;

// A JSON value for an error message, cut short (headers can be megabytes).
std::string brief(const nlohmann::json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

bool parse_dtype(const std::string& s, DType* out, std::size_t* size) {
  static const struct {
    const char* name;
    DType dt;
    std::size_t size;
  } table[] = {{"F64", DType::F64, 8}, {"F32", DType::F32, 4}, {"F16", DType::F16, 2}, {"BF16", DType::BF16, 2},
               {"I64", DType::I64, 8}, {"I32", DType::I32, 4}, {"U8", DType::U8, 1}};
  for (const auto& e : table)
    if (s == e.name) {
      *out = e.dt;
      *size = e.size;
      return true;
    }
  // Known safetensors dtypes we do not convert: sizes are still needed to validate.
  static const struct {
    const char* name;
    std::size_t size;
  } other[] = {{"I8", 1}, {"BOOL", 1}, {"I16", 2}, {"U16", 2}, {"U32", 4}, {"U64", 8},
               {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& e : other)
    if (s == e.name) {
      *size = e.size;
      return false;
    }
  *size = 0;
  return false;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : name_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  map_size_ = std::size_t(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    fail(path, "truncated: " + std::to_string(map_size_) + " bytes is less than the 8-byte header length");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(path, std::string("mmap failed: ") + std::strerror(errno));
  }
  try {
    parse(static_cast<const uint8_t*>(map_), map_size_);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::SafetensorsFile(const void* data, std::size_t size, std::string name) : name_(std::move(name)) {
  parse(static_cast<const uint8_t*>(data), size);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

void SafetensorsFile::parse(const uint8_t* base, std::size_t size) {
  if (size < 8) fail(name_, "truncated: " + std::to_string(size) + " bytes is less than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > kMaxHeaderBytes)
    fail(name_, "corrupt header: header length " + std::to_string(n) + " exceeds the " +
                    std::to_string(kMaxHeaderBytes) + "-byte limit");
  if (n > size - 8)
    fail(name_, "truncated: header length " + std::to_string(n) + " but only " + std::to_string(size - 8) +
                    " bytes follow");
  const char* hdr = reinterpret_cast<const char*>(base + 8);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(hdr, hdr + n, [this](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > kMaxJsonDepth)
        fail(name_, "corrupt header: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail(name_, std::string("corrupt header: not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(name_, "corrupt header: not a JSON object");
  const uint8_t* data = base + 8 + n;
  data_size_ = std::size_t(size - 8 - n);

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const auto& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name_, "corrupt header: __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const std::string where = "tensor '" + key + "': ";
    if (!v.is_object()) fail(name_, where + "entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(name_, where + "missing 'dtype'");
    if (sh == v.end() || !sh->is_array()) fail(name_, where + "missing 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2) fail(name_, where + "missing 'data_offsets'");
    DType dtype = DType::U8;
    std::size_t esize = 0;
    bool supported = parse_dtype(dt->get<std::string>(), &dtype, &esize);
    if (esize == 0) fail(name_, where + "unknown dtype '" + dt->get<std::string>() + "'");
    if (sh->size() > 8) fail(name_, where + "shape has " + std::to_string(sh->size()) + " dimensions (max 8)");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        fail(name_, where + "shape entry " + brief(d) + " is not a non-negative integer");
      uint64_t x = d.get<uint64_t>();
      if (x > (1ull << 40) || (x && numel > (1ull << 62) / x)) fail(name_, where + "shape is too large");
      numel *= x;
      shape.push_back(int64_t(x));
    }
    const auto& b = (*off)[0];
    const auto& e = (*off)[1];
    if (!b.is_number_unsigned() || !e.is_number_unsigned())
      fail(name_, where + "data_offsets must be non-negative integers");
    uint64_t begin = b.get<uint64_t>(), end = e.get<uint64_t>();
    if (begin > end) fail(name_, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] are reversed");
    if (end > data_size_)
      fail(name_, "truncated: " + where + "data ends at byte " + std::to_string(end) + " of the data section but it has only " +
                      std::to_string(data_size_) + " bytes");
    if (numel > (1ull << 62) / esize || numel * esize != end - begin)
      fail(name_, where + "dtype " + dt->get<std::string>() + " x shape " + shape_str(shape) + " needs " +
                      std::to_string(numel * esize) + " bytes but data_offsets span " + std::to_string(end - begin));
    if (!supported) {
      unsupported_[key] = dt->get<std::string>();
      continue;
    }
    HostTensorView view;
    view.dtype = dtype;
    view.shape = std::move(shape);
    view.data = data + begin;
    view.nbytes = std::size_t(end - begin);
    tensors_[key] = std::move(view);
  }
}

}  // namespace based_core
