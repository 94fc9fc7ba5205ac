"""Shared fixtures; `gpu` tests skip cleanly without a usable CUDA GPU."""

import os
import sys

import pytest

import based_core


def pytest_collection_modifyitems(config, items):
    if based_core.cuda_available():
        return
    why = "no CUDA GPU (or no CUDA backend in this build)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random model in the released layout (safetensors, tied weight only as lm_head)."""
    from based_core.testing import make_random_model

    d = tmp_path_factory.mktemp("tiny")
    make_random_model(str(d), n_head=4, head_dim=16, n_layer=6, window_size=16, vocab_size=1000, seed=1)
    return str(d)
