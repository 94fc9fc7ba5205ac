"""based_core: fast, faithful inference for BASED language models.

    import based_core
    model = based_core.load("path/to/based-360m", device="cuda", dtype="bfloat16")
    logits = model.logits([[464, 3139, 286]])        # DLPack tensor [B, L, vocab_padded], fp32
    new = model.generate([[464, 3139], [50256]], max_new_tokens=8)   # ragged prompts
    based_core.to_numpy(logits)

Errors (every message names the argument or file, what was expected and what
was received):
    ValueError            bad argument value or shape; option out of range
    based_core.CheckpointError (a ValueError)
                          missing / truncated / corrupt checkpoint or config,
                          missing or misshapen tensor, unknown mixer
    TypeError             wrong dtype or device of an array
    IndexError            token id >= vocab_size, slot id out of range
    MemoryError           an allocation failed (the message states the sizes)
    based_core.CudaError (a RuntimeError)
                          a CUDA call failed (the message names the call)
    RuntimeError          the CUDA backend is not available in this build

Importing makes no CUDA call; the CUDA backend library is loaded on first use.
"""

import os as _os

from . import _core
from ._core import CheckpointError, CudaError, ModelConfig
from .info import build_info, cuda_available, device_info
from .model import Model, Session, load
from .tensors import to_numpy

ops = _core.ops

# The CUDA backend library sits next to the extension (when the build has it).
_core._set_cuda_library_path(_os.path.join(_os.path.dirname(_core.__file__), "libbased_core_cuda.so"))

__version__ = _core._build_info()["version"]

__all__ = [
    "CheckpointError",
    "CudaError",
    "Model",
    "ModelConfig",
    "Session",
    "build_info",
    "cuda_available",
    "device_info",
    "load",
    "ops",
    "to_numpy",
]
