"""bench/stream_probe.py's plumbing on the CPU (the measurement itself is for the GPU machine)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
probe = pytest.importorskip("stream_probe")  # needs torch (bench/common.py), which CI installs


def test_weight_sizes_are_the_distinct_decode_weights_largest_first():
    sizes = probe.weight_sizes("based-1b")
    nbytes = [b for _, b in sizes]
    assert nbytes == sorted(set(nbytes), reverse=True)  # conv in_proj and fc1 share a size: listed once
    assert nbytes[0] == 7168 * 1792 * 2 and nbytes[-1] == 256 * 1792 * 2
    assert len(sizes) == 5


def test_cpu_run_prints_a_row_per_buffer(capsys):
    assert probe.main(["--cpu", "--no-weights", "--sizes-mb", "0.25", "0.5", "--iters", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "MB buffer" in line]
    assert [r.split()[0] for r in rows] == ["0.25", "0.5"]
    for r in rows:
        us = [float(tok) for tok in r.replace("(", " ").replace(")", " ").split()[4:]]
        assert len(us) == 4 and all(v > 0 for v in us)
        sum_us, sum_gbs, copy_us, copy_gbs = us
        # the rates are the bytes moved over the time printed beside them (copy moves twice as many)
        assert copy_gbs * copy_us == pytest.approx(2 * sum_gbs * sum_us, rel=0.05)  # the times print to 0.1 us
