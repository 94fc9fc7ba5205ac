"""Every BASED_CORE_* environment variable the code reads is in the README's table."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def variables_read():
    names = set()
    for sub in ("cpp", "cuda", "bindings", "python"):
        for f in (ROOT / sub).rglob("*"):
            if f.suffix in (".cpp", ".cu", ".cuh", ".h", ".py") and f.is_file():
                text = f.read_text(errors="replace")
                names |= set(re.findall(r'getenv\("(BASED_CORE_[A-Z0-9_]+)"', text))
                names |= set(re.findall(r'environ(?:\.get\(|\[)"(BASED_CORE_[A-Z0-9_]+)"', text))
    return names


def test_every_environment_variable_is_documented():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(BASED_CORE_[A-Z0-9_]+)[=`]", section))
    read = variables_read()
    assert read, "no getenv found: the scan is broken"
    assert "BASED_CORE_PDL" in read and "BASED_CORE_CUDA_LIB" in read
    assert sorted(read - documented) == [], "read but not in README's table"
    assert sorted(documented - read) == [], "in README's table but read nowhere"
