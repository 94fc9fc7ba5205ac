"""BASED_CORE_GRAPH_INFO=1: the CUDA backend describes each captured decode graph on stderr
(kernel nodes per function, programmatic edges), the evidence for how a step's kernels chain."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

SCRIPT = r"""
import sys
import based_core
from based_core.testing import make_random_model
d = make_random_model(sys.argv[1], n_head=2, head_dim=64, n_layer=3, window_size=64, seed=3)
model = based_core.load(d, device="cuda", dtype="bfloat16")
s = model.session(max_batch=4)
for slot in range(2):
    s.prefill(slot, [5, 6, 7], logits="none")
for t in range(3):
    s.decode([0, 1], [10 + t, 20 + t])
"""


def run(tmp_path, info):
    env = dict(os.environ, BASED_CORE_GRAPH_INFO=info)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_graph_info_lists_kernels_and_pdl_edges(tmp_path):
    r = run(tmp_path, "1")
    assert r.returncode == 0, r.stderr
    heads = re.findall(r"based_core graph: (\d+) nodes \((\d+) kernels\), (\d+) edges, (\d+) programmatic", r.stderr)
    assert len(heads) == 1, r.stderr  # one decode graph: batch 2, logits out, captured once, replayed twice
    nodes, kernels, edges, programmatic = map(int, heads[0])
    assert 0 < kernels <= nodes and edges >= kernels - 1
    # the mixers and the GEMV are launched with PDL: their edges in the graph are programmatic
    assert programmatic > 0, r.stderr
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\S.*)$", r.stderr, re.M)
    assert sum(int(n) for n, _, _ in rows) == kernels
    assert any("rmsnorm" in name for _, _, name in rows), r.stderr
    assert all(int(pdl) <= int(n) for n, pdl, _ in rows)


def test_graph_info_off_prints_nothing(tmp_path):
    r = run(tmp_path, "0")
    assert r.returncode == 0, r.stderr
    assert "based_core graph:" not in r.stderr
