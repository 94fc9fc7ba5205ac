"""The type stubs shipped with the package (generated at build time by
nanobind's stubgen, bindings/CMakeLists.txt) match the installed module."""

import ast
import importlib.util
import inspect
import os
import subprocess
import sys

import pytest

import based_core
from based_core import _core

PKG = os.path.dirname(based_core.__file__)
STUBS = {"based_core._core": os.path.join(PKG, "_core", "__init__.pyi"),
         "based_core._core.ops": os.path.join(PKG, "_core", "ops.pyi")}


def _stub_tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _defined(body):
    """Names a stub body defines: classes, functions, assignments, re-exports."""
    out = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                out[a.asname or a.name] = node
    return out


def _public(names):
    return sorted(n for n in names if not n.startswith("_"))


def test_stubs_and_marker_are_installed():
    assert os.path.isfile(os.path.join(PKG, "py.typed"))
    for path in STUBS.values():
        assert os.path.isfile(path), path
    # no stale single-file stub beside the package stub (it would shadow the ops stub)
    assert not os.path.exists(os.path.join(PKG, "_core.pyi"))


@pytest.mark.parametrize("modname", sorted(STUBS))
def test_every_public_name_is_in_the_stub(modname):
    mod = _core if modname == "based_core._core" else _core.ops
    stub = _defined(_stub_tree(STUBS[modname]).body)
    missing = [n for n in _public(dir(mod)) if n not in stub and not inspect.ismodule(getattr(mod, n))]
    assert not missing, f"{modname}: not in the stub: {missing}"
    # submodules are re-exported so that `based_core._core.ops` type-checks
    for n in _public(dir(mod)):
        if inspect.ismodule(getattr(mod, n)):
            assert n in stub, f"{modname}: submodule {n} is not imported in the stub"
    extra = [n for n in stub if not n.startswith("_") and not hasattr(mod, n)
             and isinstance(stub[n], (ast.ClassDef, ast.FunctionDef))]
    assert not extra, f"{modname}: the stub declares names the module lacks: {extra}"
    # and the members of each class
    for name, node in stub.items():
        if isinstance(node, ast.ClassDef) and hasattr(mod, name):
            cls = getattr(mod, name)
            members = _defined(node.body)
            own = [m for m in _public(vars(cls)) if m not in members]
            assert not own, f"{modname}.{name}: members missing from the stub: {own}"


def test_stubs_match_a_fresh_stubgen_run(tmp_path):
    """Regenerates the stubs from the installed module and compares the text."""
    if importlib.util.find_spec("nanobind") is None:
        pytest.skip("nanobind is not installed")
    import nanobind

    built_with = based_core.build_info()["nanobind_version"]
    if nanobind.__version__ != built_with:
        pytest.skip(f"stubgen output may differ across nanobind versions ({nanobind.__version__} here, "
                    f"the module was built with {built_with})")
    r = subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-r", "-m", "based_core._core",
                        "-O", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for modname, shipped in STUBS.items():
        fresh = tmp_path / os.path.relpath(shipped, PKG)
        assert fresh.is_file(), f"stubgen wrote no {fresh.name} for {modname}"
        with open(shipped, encoding="utf-8") as f:
            assert fresh.read_text(encoding="utf-8") == f.read(), (
                f"{shipped} is stale: rebuild the package (pip install --no-build-isolation .)")


def test_stub_signatures_name_the_arguments():
    """The docstring-less signatures a user sees in an IDE carry the argument names."""
    ops = {n.name: n for n in _stub_tree(STUBS["based_core._core.ops"]).body if isinstance(n, ast.FunctionDef)}
    assert [a.arg for a in ops["la_decode"].args.args][:6] == ["q", "k", "v", "state_s", "state_z", "slots"]
    core = _defined(_stub_tree(STUBS["based_core._core"]).body)
    session = _defined(core["NativeSession"].body)
    assert "max_new_tokens" in [a.arg for a in session["generate"].args.args]
