"""How fast can one kernel stream a buffer of a decode weight's size from HBM?

    python3 bench/stream_probe.py [--model based-1b] [--sizes-mb 64 1024] [--iters 30]

A decode step is a chain of short weight-streaming kernels (bench/BOUNDS.md): at
B <= 16 the weight GEMMs reach ~1.7-1.9 TB/s, the PERFORMANCE.md ceiling assumes
3.0 TB/s for the whole step. This probe times plain reads of the same sizes: a
read-only reduction (torch.sum in fp32 over the bf16 buffer) and a copy (read +
write, both counted), with the L2 flushed before each call; the summed time of
torch's kernels for the call from CUPTI. If a plain read of a 25.7 MB buffer is itself far
from 3.0 TB/s, the per-kernel ramp and drain bound the step, not the GEMM's
inner loop, and only streaming across kernel boundaries (PDL prefetch, a
persistent decode kernel) can close the gap.
A diagnostic for the bounds notes, not a RESULTS.md row; runs on the CPU too
(wall time) so its plumbing is tested without a GPU.
"""

import argparse
from typing import Dict, List, Tuple

import torch

import common
from gemm_decode import SHAPES


def weight_sizes(model: str) -> List[Tuple[str, int]]:
    """(name, bytes) of each distinct bf16 decode weight of the model, largest first."""
    seen: Dict[int, str] = {}
    for name, (n, k, _bias, _acc) in SHAPES[model].items():
        seen.setdefault(n * k * 2, name)
    return sorted(((name, b) for b, name in seen.items()), key=lambda t: -t[1])


def probe(nbytes: int, device: str, iters: int) -> Dict[str, float]:
    """us per call and GB/s moved for a read-only sum and a copy of nbytes."""
    x = torch.ones(nbytes // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    cuda = device == "cuda"
    flush = common.flush_l2 if cuda else None
    skip = ("FillFunctor",)  # the L2 flush's zero_(); keep torch's reduce and copy kernels
    out = {}
    for what, fn, moved in (("sum", lambda: x.sum(dtype=torch.float32), nbytes),
                            ("copy", lambda: y.copy_(x), 2 * nbytes)):
        if cuda:
            t, _ = common.time_kernels(fn, True, 5, iters, flush, skip_names=skip)
        else:
            t = common.time_wall(fn, False, 2, iters)
        us = common.summarize(t)["median"] * 1e3
        out[what + "_us"] = us
        out[what + "_gbs"] = moved / us / 1e3
    if abs(float(x.sum(dtype=torch.float32)) - x.numel()) > 1e-3 * x.numel() or not torch.equal(y, x):
        raise RuntimeError(f"stream probe: wrong result for {nbytes} bytes")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="based-1b", choices=sorted(SHAPES))
    ap.add_argument("--sizes-mb", type=float, nargs="*", default=[64, 1024],
                    help="extra buffer sizes (MB) after the model's weight sizes")
    ap.add_argument("--no-weights", action="store_true", help="only the --sizes-mb buffers")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (wall time; for tests)")
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    sizes = [] if a.no_weights else weight_sizes(a.model)
    sizes += [(f"{mb:g} MB buffer", int(mb * (1 << 20)) // 16 * 16) for mb in a.sizes_mb]
    how = f"{torch.cuda.get_device_name()}: L2 flushed before each call" if device == "cuda" else "CPU: wall time"
    print(f"{how}; us per call (GB/s moved)")
    print(f"{'buffer':>24} {'MB':>8} {'sum (read)':>20} {'copy (read+write)':>20}")
    for label, nbytes in sizes:
        r = probe(nbytes, device, a.iters)
        # .4g, not .0f: a slow CPU run moves well under 1 GB/s and must not print as 0
        print(f"{label:>24} {nbytes / 1e6:8.1f} {r['sum_us']:9.1f} ({r['sum_gbs']:7.4g}) "
              f"{r['copy_us']:9.1f} ({r['copy_gbs']:7.4g})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
