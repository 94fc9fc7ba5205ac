"""The installed C++ package, used as a C++ project would use it.

Configures, builds and installs based_core (CPU only) into a temporary prefix,
builds examples/ against the install tree through find_package(based_core),
and checks that the example (Session prefill/decode + Sampler, streamed) and
the based-generate app give the same tokens as based_core.load(...).generate.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import based_core
from based_core.testing import make_random_model

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """(prefix, example build dir) of a fresh CPU-only install."""
    base = tmp_path_factory.mktemp("cpp_package")
    build, prefix, example = base / "build", base / "prefix", base / "example"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 2)
    _run(["cmake", "-S", ROOT, "-B", build, *gen, "-DCMAKE_BUILD_TYPE=Release", "-DBASED_CORE_CUDA=OFF",
          "-DBASED_CORE_PYTHON=OFF", "-DBASED_CORE_TESTS=OFF", f"-DCMAKE_INSTALL_PREFIX={prefix}"])
    _run(["cmake", "--build", build, "-j", jobs])
    _run(["cmake", "--install", build])
    # The consumer sees only the install tree: nothing points back at the source or build tree.
    _run(["cmake", "-S", ROOT / "examples", "-B", example, *gen, "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run(["cmake", "--build", example, "-j", jobs])
    return prefix, example


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cpp_model")
    make_random_model(str(d), n_head=4, head_dim=16, n_layer=6, window_size=8, vocab_size=1000, seed=3)
    return str(d)


def _python_generate(model_dir, prompts, dtype, **kw):
    model = based_core.load(model_dir, device="cpu", dtype=dtype, progress=False)
    return model.generate(prompts, **kw)


def test_install_tree_is_a_cmake_package(install):
    prefix, _ = install
    inc = prefix / "include" / "based_core"
    for h in ["based_core.h", "model.h", "session.h", "sampler.h", "config.h", "tensor.h", "backends.h",
              "error.h", "dtype.h", "ops.h", "version.h"]:
        assert (inc / h).is_file(), h
    for h in inc.iterdir():  # the public API needs no CUDA headers
        assert "#include <cuda" not in h.read_text(), h.name
    lib = prefix / "lib"
    assert (lib / "libbased_core.a").is_file()
    cmake_dir = lib / "cmake" / "based_core"
    version = (cmake_dir / "based_coreConfigVersion.cmake").read_text()
    assert f'set(PACKAGE_VERSION "{based_core.build_info()["version"]}")' in version
    targets = (cmake_dir / "based_coreTargets.cmake").read_text()
    assert "based_core::based_core" in targets
    assert "nlohmann" not in targets  # a private, header-only dependency: consumers need not have it
    assert (prefix / "bin" / "based-generate").is_file()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_example_streams_the_same_tokens_as_python(install, model_dir, dtype):
    _, example = install
    prompt = [5, 17, 300, 42, 9, 999, 0, 1, 2, 3, 4, 5]  # longer than the sliding window ring
    r = _run([example / "stream_generate", model_dir, *prompt, "--device", "cpu", "--dtype", dtype,
              "--max-new-tokens", "16"])
    tokens = [int(t) for t in r.stdout.split()]
    assert tokens == _python_generate(model_dir, [prompt], dtype, max_new_tokens=16)[0]
    assert "new tokens" in r.stderr


def test_example_samples_and_stops_like_python(install, model_dir):
    _, example = install
    prompt = [7, 8, 9]
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=50, top_p=0.9, seed=1234)
    want = _python_generate(model_dir, [prompt], "float32", **kw)[0]
    stop = want[5]
    r = _run([example / "stream_generate", model_dir, *prompt, "--device", "cpu", "--dtype", "float32",
              "--max-new-tokens", "20", "--temperature", "0.9", "--top-k", "50", "--top-p", "0.9",
              "--seed", "1234", "--stop", stop])
    assert [int(t) for t in r.stdout.split()] == want[:want.index(stop) + 1]


def test_based_generate_matches_python_generate(install, model_dir):
    prefix, _ = install
    prompts = [[1, 2, 3], [4, 5], [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]]
    args = [prefix / "bin" / "based-generate", "--model", model_dir, "--device", "cpu", "--dtype", "float32",
            "--max-new-tokens", "12"]
    for p in prompts:
        args += ["--tokens", ",".join(map(str, p))]
    r = _run(args)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    want = _python_generate(model_dir, prompts, "float32", max_new_tokens=12)
    assert lines == [{"prompt_tokens": p, "tokens": w} for p, w in zip(prompts, want)]
    assert "tok/s" in r.stderr

    # Sampling with a seed and a stop token: the same draws as Python's.
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=40, top_p=0.95, seed=7)
    stop = _python_generate(model_dir, prompts, "bfloat16", **kw)[0][3]
    want = _python_generate(model_dir, prompts, "bfloat16", stop_tokens=[stop], **kw)
    args = [prefix / "bin" / "based-generate", "--model", model_dir, "--device", "cpu", "--dtype=bfloat16",
            "--max-new-tokens", "12", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.95", "--seed", "7",
            "--stop", str(stop)]
    for p in prompts:
        args += ["--tokens", " ".join(map(str, p))]
    r = _run(args)
    assert [json.loads(line)["tokens"] for line in r.stdout.splitlines()] == want
    assert want[0][-1] == stop


def test_based_generate_reports_errors(install, model_dir):
    prefix, _ = install
    exe = str(prefix / "bin" / "based-generate")
    r = subprocess.run([exe, "--model", model_dir, "--device", "cpu", "--tokens", "1,99999"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "OutOfRange" in r.stderr and "99999" in r.stderr
    r = subprocess.run([exe, "--model", model_dir, "--prompt", "hello"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--tokens" in r.stderr
    r = subprocess.run([exe, "--model", str(Path(model_dir) / "missing"), "--tokens", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "config.json" in r.stderr
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--max-new-tokens" in r.stdout
