"""`pip wheel .` gives a wheel that installs into a fresh virtual environment
without torch and works there on a machine without a GPU: importing makes no
CUDA call, the build facts are complete, a tiny model generates.

About 15 s after .ci/setup (the wheel build reuses scikit-build-core's
build/<wheel tag> folder, so it only repackages; the venv fetches numpy and
tqdm with pip), so it is not marked slow.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

import based_core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the fresh venv. Prints one JSON object as its last line.
CHECK = textwrap.dedent(r"""
    import importlib.util, json, os, sys, tempfile

    def mapped():
        with open("/proc/self/maps") as f:
            return sorted({l.split()[-1] for l in f if "/" in l})

    import based_core
    after_import = [p for p in mapped() if any(k in os.path.basename(p) for k in
                    ("libcuda", "libcudart", "libcublas", "libnvrtc", "based_core_cuda"))]
    info = based_core.build_info()
    avail = based_core.cuda_available()
    dev = based_core.device_info()
    from based_core.testing import make_random_model
    d = make_random_model(tempfile.mkdtemp(), n_head=2, head_dim=16, n_layer=3, vocab_size=64, seed=0)
    m = based_core.load(d, device="cpu", dtype="float32")
    out = m.generate([[1, 2, 3], [4]], max_new_tokens=4)
    alone = m.generate([[4]], max_new_tokens=4)
    print(json.dumps({
        "file": based_core.__file__, "prefix": sys.prefix,
        "torch_importable": importlib.util.find_spec("torch") is not None,
        "cuda_libs_after_import": after_import, "build_info": info, "cuda_available": avail,
        "device_info": dev, "generated": out, "alone": alone, "version": based_core.__version__,
    }))
""")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheelhouse")
    # Build the same flavour as the installed package, so that the cached build
    # folder is reused instead of compiling the CUDA backend from scratch.
    cuda = "ON" if based_core.build_info()["cuda_backend_built"] else "OFF"
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(out),
         "-C", f"cmake.define.BASED_CORE_CUDA={cuda}", ROOT], cwd=ROOT, timeout=1800)
    wheels = sorted(out.glob("based_core-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel):
    d = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(d)], timeout=300)
    py = d / "bin" / "python"
    # The wheel's dependencies (numpy, tqdm) come from the package index.
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and any(k in r.stdout + r.stderr for k in (
            "No matching distribution found for numpy", "NewConnectionError", "Network is unreachable",
            "Temporary failure in name resolution")):
        pytest.skip("no package index reachable for the wheel's dependencies (an offline machine)")
    assert r.returncode == 0, f"installing the wheel failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return py


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("based_core/__init__.py", "based_core/py.typed", "based_core/_core/__init__.pyi",
                 "based_core/_core/ops.pyi", "based_core/testing.py", "based_core/reference.py"):
        assert want in names, f"{want} missing from {wheel.name}"
    assert any(n.startswith("based_core/_core.") and n.endswith(".so") for n in names), names
    if based_core.build_info()["cuda_backend_built"]:
        assert "based_core/libbased_core_cuda.so" in names
    # no build or test leftovers
    assert not [n for n in names if n.startswith(("tests/", "build/", "cpp/")) or "__pycache__" in n]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: numpy" in meta and "torch" not in [
        line.split()[1] for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line]


def test_wheel_works_in_a_fresh_venv_without_torch_or_gpu(venv):
    r = json.loads(run([str(venv), "-c", CHECK], timeout=600, cwd="/").strip().splitlines()[-1])
    assert r["file"].startswith(r["prefix"]), "imported based_core from outside the venv"
    assert r["torch_importable"] is False
    assert r["cuda_libs_after_import"] == [], "import based_core loaded CUDA libraries"
    info = r["build_info"]
    for key in ("version", "git_sha", "cuda_version", "cuda_archs", "nanobind_version", "cuda_backend_built"):
        assert key in info, key
    assert info["version"] == r["version"] == based_core.__version__
    assert info["nanobind_version"].count(".") == 2
    assert info["git_sha"] and isinstance(info["git_sha"], str)
    here = dict(based_core.build_info(), git_sha=info["git_sha"])  # commits may land between the builds
    assert info == here, "the wheel's build facts differ from the installed build's"
    assert isinstance(r["cuda_available"], bool)
    assert r["device_info"]["cpu"] is True and r["device_info"]["cuda_available"] == r["cuda_available"]
    assert [len(o) for o in r["generated"]] == [4, 4]
    assert r["generated"][1] == r["alone"][0]


def test_import_with_an_empty_library_path(venv):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    env["LD_LIBRARY_PATH"] = ""
    out = run([str(venv), "-c", "import based_core, json; print(json.dumps([based_core.__version__, "
               "based_core.cuda_available(), based_core.device_info()['cpu']]))"], env=env, timeout=300, cwd="/")
    version, avail, cpu = json.loads(out.strip().splitlines()[-1])
    assert version == based_core.__version__ and isinstance(avail, bool) and cpu is True


def test_cli_entry_point_in_the_venv(venv):
    out = run([str(venv.parent / "based-core"), "--help"], timeout=300, cwd="/")
    assert "generate" in out
