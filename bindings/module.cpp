// module.cpp: the based_core._core extension: exceptions, build facts,
// ModelConfig, Model, Session. Conversion only; no model logic here.
#include <nanobind/nanobind.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "backends_internal.h"
#include "based_core/based_core.h"
#include "tensors.h"

namespace nb = nanobind;
using namespace nb::literals;
using namespace based_core;
using based_core::py::AnyArray;

void bind_ops(nb::module_& m);  // ops.cpp

namespace {

LogitsMode parse_logits_mode(const std::string& s) {
  if (s == "last") return LogitsMode::Last;
  if (s == "all") return LogitsMode::All;
  if (s == "none") return LogitsMode::None;
  throw InvalidArgument("logits: expected 'last', 'all' or 'none', got '" + s + "'");
}

LoadOptions load_options(const std::string& device, const std::string& dtype, nb::object progress) {
  LoadOptions o;
  o.device = parse_device(device);
  o.dtype = parse_model_dtype(dtype);
  if (!progress.is_none()) {
    o.progress = [progress](size_t done, size_t total) {
      nb::gil_scoped_acquire gil;
      progress(done, total);
    };
  }
  return o;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "based_core native core: BASED models on CPU and CUDA";

  // Error mapping (documented in python/based_core/errors.py).
  static nb::exception<CheckpointError> checkpoint_error(m, "CheckpointError", PyExc_ValueError);
  static nb::exception<CudaError> cuda_error(m, "CudaError", PyExc_RuntimeError);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const TypeMismatch& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const OutOfRange& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    } catch (const OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const Unsupported& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.def("_set_cuda_library_path", &set_cuda_library_path, "path"_a);
  m.def("cuda_available", &cuda_available, "True when the CUDA backend loads and a GPU is visible (never raises).");
  m.def("cuda_device_count", &cuda_device_count);
  m.def("_to_numpy", &py::to_numpy, "t"_a,
        "Copies a DLPack tensor (cpu or cuda; bfloat16 becomes float32) to a new numpy array.");
  m.def("_build_info", []() {
    nb::dict d;
    d["version"] = BASED_CORE_VERSION;
    d["git_sha"] = BASED_CORE_GIT_SHA;
    d["cuda_version"] = BASED_CORE_CUDA_VERSION;
    d["cuda_archs"] = BASED_CORE_CUDA_ARCHS;
    d["nanobind_version"] = std::to_string(NB_VERSION_MAJOR) + "." + std::to_string(NB_VERSION_MINOR) + "." +
                            std::to_string(NB_VERSION_PATCH);
    return d;
  });

  nb::class_<Tensor>(m, "Tensor",
                     "A result tensor on the model's device (shares memory, freed when the last user goes).\n"
                     "Pass it to torch.from_dlpack / np.from_dlpack / cupy.from_dlpack, or based_core.to_numpy.")
      .def_prop_ro("shape", [](const Tensor& t) {
        nb::list l;
        for (int64_t d : t.shape()) l.append(d);
        return nb::tuple(l);
      })
      .def_prop_ro("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); })
      .def_prop_ro("device", [](const Tensor& t) { return t.device().str(); })
      .def_prop_ro("nbytes", &Tensor::nbytes)
      .def_prop_ro("ndim", [](const Tensor& t) { return t.shape().size(); })
      .def("__len__", [](const Tensor& t) { return t.shape().empty() ? 0 : t.shape()[0]; })
      .def(
          "__dlpack__",
          [](const Tensor& t, nb::kwargs kwargs) { return py::as_ndarray(t).attr("__dlpack__")(**kwargs); },
          "kwargs"_a, "DLPack export; the data is complete when the tensor is returned, on any stream.")
      .def("__dlpack_device__", [](const Tensor& t) {
        return nb::make_tuple(t.device().is_cuda() ? 2 : 1, t.device().index);
      })
      .def("numpy", [](const Tensor& t) { return py::to_numpy(nb::cast<AnyArray>(py::as_ndarray(t))); },
           "A host numpy copy (bfloat16 becomes float32).")
      .def(
          "__array__",
          [](const Tensor& t, nb::object dtype, nb::object copy) {
            nb::object a = py::to_numpy(nb::cast<AnyArray>(py::as_ndarray(t)));
            return dtype.is_none() ? a : a.attr("astype")(dtype);
          },
          "dtype"_a = nb::none(), "copy"_a = nb::none())
      .def("__repr__", [](const Tensor& t) {
        return "based_core.Tensor(shape=" + shape_str(t.shape()) + ", dtype=" + dtype_name(t.dtype()) +
               ", device=" + t.device().str() + ")";
      });

  nb::class_<ModelConfig>(m, "ModelConfig", "A parsed config.json (SPEC.md 1.5).")
      .def_static("from_json", &ModelConfig::from_json, "text"_a)
      .def_ro("d_model", &ModelConfig::d_model)
      .def_ro("n_layer", &ModelConfig::n_layer)
      .def_ro("n_head", &ModelConfig::n_head)
      .def_ro("head_dim", &ModelConfig::head_dim)
      .def_ro("n_inner", &ModelConfig::n_inner)
      .def_ro("vocab_size", &ModelConfig::vocab_size)
      .def_ro("vocab_padded", &ModelConfig::vocab_padded)
      .def_ro("norm_eps", &ModelConfig::norm_eps)
      .def_ro("la_heads", &ModelConfig::la_heads)
      .def_ro("la_feature_dim", &ModelConfig::la_feature_dim)
      .def_ro("la_head_dim", &ModelConfig::la_head_dim)
      .def_ro("window_size", &ModelConfig::window_size)
      .def_ro("swa_window", &ModelConfig::swa_window)
      .def_ro("rotary_dim", &ModelConfig::rotary_dim)
      .def_ro("rope_base", &ModelConfig::rope_base)
      .def_ro("conv_channels", &ModelConfig::conv_channels)
      .def_ro("bos_token_id", &ModelConfig::bos_token_id)
      .def_ro("eos_token_id", &ModelConfig::eos_token_id)
      .def_prop_ro("layers", [](const ModelConfig& c) {
        std::vector<std::string> out;
        for (LayerKind k : c.layers) out.push_back(layer_kind_name(k));
        return out;
      })
      .def("summary", &ModelConfig::summary);

  nb::class_<Model>(m, "NativeModel", "Weights on a device; shared by sessions.")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype, nb::object progress) {
            LoadOptions o = load_options(device, dtype, progress);
            nb::gil_scoped_release release;
            return Model::load(folder, o);
          },
          "folder"_a, "device"_a = "cpu", "dtype"_a = "bfloat16", "progress"_a = nb::none())
      .def_static(
          "from_weights",
          [](const ModelConfig& config, const std::map<std::string, AnyArray>& weights, const std::string& device,
             const std::string& dtype, nb::object progress) {
            std::map<std::string, HostTensorView> views;
            for (const auto& kv : weights) {
              const AnyArray& a = kv.second;
              std::string arg = "weights['" + kv.first + "']";
              if (py::device_of(a, arg.c_str()).is_cuda())
                throw TypeMismatch(arg + ": weights must be in host memory");
              py::require_contiguous(a, arg.c_str());
              HostTensorView v;
              v.dtype = py::dtype_of(a, arg.c_str());
              v.shape = py::shape_of(a);
              v.data = a.data();
              v.nbytes = a.nbytes();
              views[kv.first] = v;
            }
            LoadOptions o = load_options(device, dtype, progress);
            nb::gil_scoped_release release;
            return Model::from_weights(config, views, o);
          },
          "config"_a, "weights"_a, "device"_a = "cpu", "dtype"_a = "bfloat16", "progress"_a = nb::none())
      .def_prop_ro("config", &Model::config, nb::rv_policy::reference_internal)
      .def_prop_ro("dtype", [](const Model& m) { return std::string(dtype_name(m.dtype())); })
      .def_prop_ro("device", [](const Model& m) { return m.device().str(); })
      .def_prop_ro("weight_bytes", &Model::weight_bytes);

  nb::class_<Session>(m, "NativeSession", "State slots and the forward pass; one thread at a time.")
      .def(
          "__init__",
          [](Session* self, std::shared_ptr<Model> model, int max_slots, int64_t prefill_chunk, int64_t max_context,
             bool symmetric_state) {
            SessionOptions o;
            o.max_slots = max_slots;
            o.prefill_chunk = prefill_chunk;
            o.max_context = max_context;
            o.symmetric_state = symmetric_state;
            nb::gil_scoped_release release;
            new (self) Session(model, o);
          },
          "model"_a, "max_slots"_a = 1, "prefill_chunk"_a = 0, "max_context"_a = 0, "symmetric_state"_a = true)
      .def_prop_ro("symmetric_state", [](const Session& s) { return s.options().symmetric_state; })
      .def_prop_ro("max_slots", &Session::max_slots)
      .def_prop_ro("state_bytes_per_slot", &Session::state_bytes_per_slot)
      .def("position", &Session::position, "slot"_a)
      .def("reset", &Session::reset, "slot"_a)
      .def("reset_all", &Session::reset_all)
      .def(
          "prefill",
          [](Session& s, int slot, const AnyArray& tokens, const std::string& logits) {
            auto rows = py::int_rows(tokens, "tokens");
            if (rows.size() != 1) throw InvalidArgument("tokens: prefill takes one sequence (a 1-D array)");
            LogitsMode mode = parse_logits_mode(logits);
            Tensor t;
            {
              nb::gil_scoped_release release;
              t = s.prefill(slot, rows[0].data(), int64_t(rows[0].size()), mode);
            }
            return t.defined() ? py::to_python(t) : nb::none();
          },
          "slot"_a, "tokens"_a, "logits"_a = "last")
      .def(
          "prefill_batch",
          [](Session& s, const std::vector<int32_t>& slots, const std::vector<AnyArray>& prompts,
             const std::string& logits) {
            // Arrays, not lists of ints: converting 2 x 4096 Python ints costs milliseconds.
            std::vector<std::vector<int32_t>> rows(prompts.size());
            for (std::size_t i = 0; i < prompts.size(); ++i) {
              const std::string arg = "prompts[" + std::to_string(i) + "]";
              if (prompts[i].ndim() != 1)
                throw InvalidArgument(arg + ": expected a 1-D array of token ids, got " +
                                      std::to_string(prompts[i].ndim()) + " dimensions");
              rows[i] = std::move(py::int_rows(prompts[i], arg.c_str())[0]);
            }
            LogitsMode mode = parse_logits_mode(logits);
            Tensor t;
            {
              nb::gil_scoped_release release;
              t = s.prefill_batch(slots, rows, mode);
            }
            return t.defined() ? py::to_python(t) : nb::none();
          },
          "slots"_a, "prompts"_a, "logits"_a = "last")
      .def(
          "logits",
          [](Session& s, const AnyArray& tokens) {
            auto rows = py::int_rows(tokens, "tokens");
            Tensor t;
            {
              nb::gil_scoped_release release;
              t = s.logits(rows);
            }
            if (tokens.ndim() == 1) t = t.reshape({t.shape()[1], t.shape()[2]});
            return py::to_python(t);
          },
          "tokens"_a)
      .def(
          "decode",
          [](Session& s, const std::vector<int32_t>& slots, const std::vector<int32_t>& tokens) {
            if (slots.size() != tokens.size())
              throw InvalidArgument("decode: " + std::to_string(slots.size()) + " slots but " +
                                    std::to_string(tokens.size()) + " tokens");
            Tensor t;
            {
              nb::gil_scoped_release release;
              t = s.decode(slots.data(), tokens.data(), int64_t(slots.size()));
            }
            return py::to_python(t);
          },
          "slots"_a, "tokens"_a)
      .def(
          "generate",
          [](Session& s, const std::vector<std::vector<int32_t>>& prompts, int64_t max_new_tokens, float temperature,
             int top_k, float top_p, uint64_t seed, const std::vector<int32_t>& stop_tokens, nb::object on_token) {
            GenerateOptions o;
            o.max_new_tokens = max_new_tokens;
            o.sampling.temperature = temperature;
            o.sampling.top_k = top_k;
            o.sampling.top_p = top_p;
            o.sampling.seed = seed;
            o.stop_tokens = stop_tokens;
            if (!on_token.is_none()) {
              o.on_token = [on_token](int seq, int32_t tok) {
                nb::gil_scoped_acquire gil;
                nb::object r = on_token(seq, tok);
                return r.is_none() ? true : nb::cast<bool>(r);
              };
            }
            nb::gil_scoped_release release;
            return s.generate(prompts, o);
          },
          "prompts"_a, "max_new_tokens"_a = 16, "temperature"_a = 0.f, "top_k"_a = 0, "top_p"_a = 1.f,
          "seed"_a = 0, "stop_tokens"_a = std::vector<int32_t>(), "on_token"_a = nb::none())
      .def("copy_slot", &Session::copy_slot, "src"_a, "dst"_a)
      .def(
          "save_slot",
          [](const Session& s, int slot) {
            std::vector<uint8_t> b = s.save_slot(slot);
            return nb::bytes(reinterpret_cast<const char*>(b.data()), b.size());
          },
          "slot"_a)
      .def(
          "load_slot",
          [](Session& s, int slot, nb::bytes data) {
            std::vector<uint8_t> b(static_cast<const uint8_t*>(data.data()),
                                   static_cast<const uint8_t*>(data.data()) + data.size());
            s.load_slot(slot, b);
          },
          "slot"_a, "data"_a);

  nb::module_ ops = m.def_submodule("ops", "Each kernel on DLPack tensors.");
  bind_ops(ops);
}
