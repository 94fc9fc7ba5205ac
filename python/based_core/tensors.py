"""Host copies of tensors."""

from __future__ import annotations

import numpy as np

from . import _core


def to_numpy(t) -> np.ndarray:
    """Copies any tensor to a new host numpy array.

    Accepts based_core results, torch / cupy / jax arrays (anything with
    ``__dlpack__``), numpy arrays and nested lists. bfloat16 becomes float32,
    since numpy has no bfloat16.
    """
    if isinstance(t, np.ndarray):
        return t.copy()
    if hasattr(t, "__dlpack__"):
        mod = type(t).__module__.split(".")[0]
        if mod == "torch":
            t = t.detach().contiguous()
        return _core._to_numpy(t)
    return np.array(t)
