"""Build and device facts."""

from __future__ import annotations

from . import _core


def build_info() -> dict:
    """Version, git sha, CUDA version and compiled archs ("none" for a CPU-only
    build), nanobind version, and whether the CUDA backend library is present."""
    import os

    info = dict(_core._build_info())
    lib = os.path.join(os.path.dirname(_core.__file__), "libbased_core_cuda.so")
    info["cuda_backend_built"] = os.path.exists(lib)
    return info


def cuda_available() -> bool:
    """True when the CUDA backend loads and at least one GPU is visible. Never raises."""
    return bool(_core.cuda_available())


def device_info() -> dict:
    """What based_core can run on: {'cpu': True, 'cuda_devices': N, 'cuda_available': bool}."""
    n = _core.cuda_device_count() if cuda_available() else 0
    return {"cpu": True, "cuda_available": n > 0, "cuda_devices": int(n)}
