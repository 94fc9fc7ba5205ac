"""The based-core command line."""

import json
import os
import subprocess
import sys

import pytest

from based_core import cli
from based_core.testing import make_random_model


def run(*args):
    return subprocess.run([sys.executable, "-m", "based_core.cli", *args], capture_output=True, text=True, timeout=300)


def test_demo_runs_end_to_end():
    r = run("demo", "--device", "cpu", "--d-model", "128", "--layers", "3", "--new-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert "throughput:" in r.stdout and "tok/s" in r.stdout
    assert "same tokens as in the batch: True" in r.stdout


def test_generate_with_token_ids(tiny_model_dir):
    r = run("generate", "--model", tiny_model_dir, "--device", "cpu", "--dtype", "float32",
            "--tokens", "1,2,3", "--tokens", "4 5", "--max-new-tokens", "5")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["prompt_tokens"] for l in lines] == [[1, 2, 3], [4, 5]]
    assert all(len(l["tokens"]) == 5 for l in lines)
    assert "tok/s" in r.stderr


def test_generate_reports_bad_input(tiny_model_dir):
    r = run("generate", "--model", tiny_model_dir, "--device", "cpu", "--tokens", "1,99999")
    assert r.returncode == 2 and "IndexError" in r.stderr and "99999" in r.stderr
    r = run("generate", "--model", tiny_model_dir, "--device", "cpu", "--prompt", "hello")
    assert r.returncode != 0 and "tokenizer" in r.stderr


def test_info(tiny_model_dir):
    r = run("info", tiny_model_dir)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"]["layers"][:3] == ["conv", "linear_attention", "sliding_window"]
    assert info["build"]["version"]


def test_convert_bin_to_safetensors(tmp_path):
    pytest.importorskip("torch")
    import numpy as np

    import based_core

    d = str(tmp_path / "m")
    os.mkdir(d)
    make_random_model(d, fmt="bin", prefix=True, metrics_key=True, seed=4)
    before = based_core.to_numpy(based_core.load(d, device="cpu", dtype="float32").logits([[1, 2, 3]]))
    assert cli.main(["convert", d]) == 0
    os.remove(os.path.join(d, "pytorch_model.bin"))
    after = based_core.to_numpy(based_core.load(d, device="cpu", dtype="float32").logits([[1, 2, 3]]))
    np.testing.assert_array_equal(before, after)
